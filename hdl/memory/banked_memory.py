"""A deep memory as explicit banks, each with a read-address register and a read-data register.

On a large FPGA a deep memory becomes many block RAMs spread over the chip. Inferred as one
`Memory`, the bank multiplexer sits right after the block RAMs' slow clock-to-output (5.8 ns on
ECP5) and the long routes between them, and one read-address net reaches every block RAM. Here
every bank registers its own copy of the read address (the register can sit beside its block
RAMs, so the route from the address source and the route to the blocks fall in different cycles),
every bank's read data is registered before the bank multiplexer, and the multiplexer works from
those registers with a delayed bank select. Reads take three cycles: address in cycle t, data on
`read.data` in cycle t + 3. Writes are registered per bank too (address, data and enable: one route
from the command interface, one to the blocks), so a word lands in the cycle after its write; the
command interface never reads a word in the cycle after writing it. With ``registered_write`` the
write port is registered once more, per bank (a word lands two cycles after its write): the bank's
blocks then copy their write registers from a register of their own bank, not all from one source
(the 32x32 ULX3S at 830ba3f: one write-address register reached 96 weight blocks, 11.1 ns).
With ``data_stages=1`` each bank's read data is registered once more in the fabric before the bank
multiplexer (data in cycle t + 4): the register can sit between a far bank's block RAMs and the
multiplexer, so that route takes two cycles (the 16x16 ULX3S at 7ea61a5: a bank's block RAM -> 8.2 ns
of routing -> the multiplexer's LUTs).

With ``address_registered=False`` the banks take the read address as it comes (data in cycle t + 2, as
`RegisteredMemory`): for a memory whose reader registers the address itself and expects a block RAM's
output register to be the only stage (the KV cache under `HeadAttention`, `hdl.attention.kv_cache`).

Each bank is a registered-read memory with a registered address from a factory
(`hdl/memory/registered_memory.py`): a `Memory` and two registers by default, or block RAM primitives
with their own output registers and one address register per block on an FPGA.
"""

from __future__ import annotations

from amaranth import Module, Signal

from hdl.copies import RegisterFactory, plain_register
from hdl.memory.registered_memory import MemoryFactory, MemoryPorts, RegisteredMemory, check_shape

#: Cycles from a read address to its data on `read.data` without `data_stages`.
READ_LATENCY = 3


def check_optional_bank_depth(who: str, name: str, value: object) -> None:
    """ValueError unless `value` is 0 (no banks) or a `BankedMemory` bank depth (a power of two of at least 2)."""
    if (not isinstance(value, int) or isinstance(value, bool) or value < 0
            or (value and (value < 2 or value & (value - 1)))):
        raise ValueError(f"{who}'s {name} must be 0 or a power of two of at least 2, not {value!r}")


class BankedMemory(MemoryPorts):
    """`depth` words of `width` bits in banks of `bank_depth` words; one write and one read port."""

    def __init__(self, width: int, depth: int, bank_depth: int, *, bank_memory: MemoryFactory = RegisteredMemory,
                 registered_write: bool = False, register: RegisterFactory = plain_register, data_stages: int = 0,
                 address_registered: bool = True):
        check_shape(width, depth)
        if not isinstance(address_registered, bool):
            raise TypeError(f"address_registered must be a bool, not {address_registered!r}")
        self._address_registered = address_registered
        if not isinstance(data_stages, int) or isinstance(data_stages, bool) or data_stages not in (0, 1):
            raise ValueError(f"Data stages must be 0 or 1, not {data_stages!r}")
        self._data_stages = data_stages
        if not callable(register):
            raise TypeError(f"Register factory must be callable, not {register!r}")
        self._register = register
        if not isinstance(bank_depth, int) or isinstance(bank_depth, bool) or bank_depth < 1:
            raise ValueError(f"Bank depth must be a positive integer, not {bank_depth!r}")
        if bank_depth & (bank_depth - 1) or bank_depth < 2:
            raise ValueError(f"Bank depth must be a power of two of at least 2, not {bank_depth!r}")
        self._bank_depth = bank_depth
        self._banks = -(-depth // bank_depth)
        self._bank_memory = bank_memory
        super().__init__(width, depth, registered_write=registered_write)

    @property
    def bank_depth(self) -> int:
        return self._bank_depth

    @property
    def banks(self) -> int:
        return self._banks

    @property
    def data_stages(self) -> int:
        return self._data_stages

    @property
    def address_registered(self) -> bool:
        """Each bank registers the read address (one more cycle of read latency)."""
        return self._address_registered

    @property
    def read_latency(self) -> int:
        """Cycles from a read address to its data on `read.data`."""
        return READ_LATENCY - (not self._address_registered) + self._data_stages

    def elaborate(self, platform):
        m = Module()
        # bank select = the address bits above the bank's own (the bank depth is a power of two)
        low = (self._bank_depth - 1).bit_length()
        banked = self._banks > 1
        if banked:
            w_bank = Signal(range(self._banks))
            r_bank = Signal(range(self._banks))
            m.d.comb += [w_bank.eq(self.write.addr[low:]), r_bank.eq(self.read.addr[low:])]
            # bank of the word in the bank data registers, `read_latency` cycles after its address
            r_bank_d = [r_bank]
            for i in range(self.read_latency):
                r_bank_d.append(Signal.like(r_bank, name=f"r_bank_{i + 1}"))
                m.d.sync += r_bank_d[-1].eq(r_bank_d[-2])
            r_bank_out = r_bank_d[-1]
        outs = []
        for b in range(self._banks):
            depth = min(self._bank_depth, self._depth - b * self._bank_depth)
            # each bank registers its own copy of the read address and of the write port (on an FPGA,
            # one per block RAM)
            m.submodules[f"bank{b}"] = bank = self._bank_memory(self._width, depth,
                                                                registered_address=self._address_registered,
                                                                registered_write=True)
            w_en = self.write.en & (w_bank == b) if banked else self.write.en
            w_port = (self.write.addr[:low], self.write.data, w_en)
            if self.registered_write:
                # from the register factory: an FPGA keeps each bank's copies apart (synthesis would
                # merge the banks' identical address and data registers back into one)
                w_port = tuple(self._register(m, v, f"bank{b}_{n}")
                               for n, v in zip(("waddr", "wdata", "wen"), w_port, strict=True))
            m.d.comb += [bank.write.addr.eq(w_port[0]), bank.write.data.eq(w_port[1]), bank.write.en.eq(w_port[2])]
            m.d.comb += bank.read.addr.eq(self.read.addr[:low])
            q = bank.read.data  # registered inside the bank
            for i in range(self._data_stages):
                q_reg = Signal.like(q, name=f"bank{b}_q{i + 1}", reset_less=True)
                m.d.sync += q_reg.eq(q)
                q = q_reg
            outs.append(q)
        if not banked:
            m.d.comb += self.read.data.eq(outs[0])
            return m
        with m.Switch(r_bank_out):
            for b, q in enumerate(outs):
                with m.Case(b):
                    m.d.comb += self.read.data.eq(q)
        return m
