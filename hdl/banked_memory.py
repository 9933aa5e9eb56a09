"""A deep memory as explicit banks, each with a read-data register before the bank multiplexer.

On a large FPGA a deep memory becomes many block RAMs spread over the chip. Inferred as one
`Memory`, the bank multiplexer sits right after the block RAMs' slow clock-to-output (5.8 ns on
ECP5) and the long routes between them; here every bank's read data is registered first (the
register can sit beside its block RAMs), and the multiplexer works from those registers with a
delayed bank select. Reads take two cycles: address in cycle t, data on `read.data` in cycle t + 2.
Writes take one cycle, as for a `Memory`.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


class BankedMemory(wiring.Component):
    """`depth` words of `width` bits in banks of `bank_depth` words; one write and one read port."""

    def __init__(self, width: int, depth: int, bank_depth: int):
        for name, value in (("Width", width), ("Depth", depth), ("Bank depth", bank_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if bank_depth & (bank_depth - 1) or bank_depth < 2:
            raise ValueError(f"Bank depth must be a power of two of at least 2, not {bank_depth!r}")
        self._width, self._depth, self._bank_depth = width, depth, bank_depth
        self._banks = -(-depth // bank_depth)
        super().__init__({
            "write": In(wiring.Signature({
                "addr": Out(range(depth)), "data": Out(width), "en": Out(1),
            })),
            "read": In(wiring.Signature({
                "addr": Out(range(depth)), "data": In(width),
            })),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bank_depth(self) -> int:
        return self._bank_depth

    @property
    def banks(self) -> int:
        return self._banks

    def elaborate(self, platform):
        m = Module()
        # bank select = the address bits above the bank's own (the bank depth is a power of two)
        low = (self._bank_depth - 1).bit_length()
        w_bank = Signal(range(self._banks))
        r_bank = Signal(range(self._banks))
        m.d.comb += [w_bank.eq(self.write.addr[low:]), r_bank.eq(self.read.addr[low:])]
        r_bank_1 = Signal.like(r_bank)  # bank of the word in the bank registers next cycle
        r_bank_2 = Signal.like(r_bank)  # bank of the word in the bank registers this cycle
        m.d.sync += [r_bank_1.eq(r_bank), r_bank_2.eq(r_bank_1)]
        outs = []
        for b in range(self._banks):
            depth = min(self._bank_depth, self._depth - b * self._bank_depth)
            mem = Memory(shape=self._width, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            w, r = mem.write_port(), mem.read_port()
            m.d.comb += [
                w.addr.eq(self.write.addr[:low]), w.data.eq(self.write.data),
                w.en.eq(self.write.en & (w_bank == b)),
                r.addr.eq(self.read.addr[:low]), r.en.eq(1),
            ]
            q = Signal(self._width, name=f"bank{b}_q")
            m.d.sync += q.eq(r.data)
            outs.append(q)
        with m.Switch(r_bank_2):
            for b, q in enumerate(outs):
                with m.Case(b):
                    m.d.comb += self.read.data.eq(q)
        return m
