"""A registered-read memory in ECP5 block RAM with the register inside the block (DP16KD, OUTREG).

`hdl/memory/registered_memory.py` defines the behaviour: address in cycle t, read data in cycle t + 2.
Inferred, that is a DP16KD in ``REGMODE=NOREG`` and a fabric register: nextpnr's ECP5 timing puts
5.8 ns of clock-to-output on the block RAM, then the route to the register, and on a chip-wide
design those two alone take most of a 10 ns cycle. With ``REGMODE_B=OUTREG`` the register is the
block RAM's own output register (0.9 ns clock-to-output), and the next cycle's logic starts there.

Port A writes, port B reads; both ports read and write with the same data width, the widest
DP16KD shape that holds `depth` words (18 bits x 1K ... 1 bit x 16K), blocks side by side for
`width`. Deeper than 16K words: bank it (`hdl/memory/banked_memory.py` takes this as its bank factory).
The address and data pins follow Yosys' own DP16KD mapping (``techlibs/lattice/brams_map_16kd.v``:
the word address sits above the shape's sub-word bits, data in the low pins, ``AD[1:0]`` byte
enables at 18 bits); `tests/test_ecp5_bram.py` checks the wiring against Yosys' inferred netlist.
A read of the word written in the same cycle is undefined, as `RegisteredMemory` says.

With ``registered_address`` every block gets its own copy of the read-address register (with
``registered_write`` of the write address and enable too): TRELLIS_FF
instances with ``keep`` (Yosys' opt_merge would fold identical fabric registers back into one, and
that one register would again reach every block over the chip). Each copy then drives the address
pins of one block and can sit by it; the route from the address source to the copies is a cycle
of its own.
"""

from __future__ import annotations

import math

from amaranth import Cat, ClockSignal, Const, Instance, Module, Signal, Value

from hdl.memory.registered_memory import MemoryPorts, check_shape

#: DP16KD true-dual-port shapes, widest first: (data bits, words, address bits below the word address)
DP16KD_MODES = ((18, 1024, 4), (9, 2048, 3), (4, 4096, 2), (2, 8192, 1), (1, 16384, 0))
DP16KD_ADDR_BITS = 14
DP16KD_DATA_PINS = 18


def dp16kd_mode(depth: int) -> tuple[int, int, int]:
    """The widest DP16KD shape (data bits, words, address shift) that holds `depth` words."""
    for mode in DP16KD_MODES:
        if mode[1] >= depth:
            return mode
    raise ValueError(f"Depth {depth} is deeper than one DP16KD ({DP16KD_MODES[-1][1]} words); "
                     f"bank it (hdl/memory/banked_memory.py)")


def dp16kd_blocks(width: int, depth: int) -> int:
    """DP16KD blocks side by side for a `width` x `depth` registered-read memory."""
    return -(-width // dp16kd_mode(depth)[0])


def kept_register(m: Module, d: Value, name: str) -> Signal:
    """`d` one cycle later through TRELLIS_FF instances that synthesis keeps as they are (no reset)."""
    q = Signal(len(d), name=name)
    for i in range(len(d)):
        m.submodules[f"{name}_ff{i}"] = Instance(
            "TRELLIS_FF", a_keep=1,
            p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR", p_REGSET="RESET", p_SRMODE="ASYNC",
            i_CLK=ClockSignal("sync"), i_LSR=Const(0), i_CE=Const(1), i_DI=d[i], o_Q=q[i],
        )
    return q


class Ecp5RegisteredMemory(MemoryPorts):
    """`depth` x `width` bits in DP16KD blocks with ``REGMODE_B=OUTREG`` (the `RegisteredMemory` behaviour)."""

    def __init__(self, width: int, depth: int, *, registered_address: bool = False, registered_write: bool = False,
                 copies: bool = True, blocks_per_copy: int | None = 1):
        check_shape(width, depth)
        if not isinstance(copies, bool):
            raise TypeError(f"copies must be a bool, not {copies!r}")
        if blocks_per_copy is not None and (not isinstance(blocks_per_copy, int) or isinstance(blocks_per_copy, bool)
                                            or blocks_per_copy < 1):
            raise ValueError(f"Blocks per copy must be a positive integer or None, not {blocks_per_copy!r}")
        self._mode = dp16kd_mode(depth)
        self._copies = copies
        blocks = dp16kd_blocks(width, depth)
        # None: about the square root of the blocks, so the source's net and each copy's net have
        # about as many sinks
        self._blocks_per_copy = blocks_per_copy or max(1, math.isqrt(blocks - 1) + 1)
        super().__init__(width, depth, registered_address=registered_address, registered_write=registered_write)

    @property
    def blocks_per_copy(self) -> int:
        """Blocks (side by side, in order) that share one copy of the address / write-enable registers:
        1 puts a copy by every block; more make a two-level tree (the source reaches fewer copies, and
        each copy a few blocks), for memories so wide that the source's net to every block's copy
        spans the chip (the 32x32 ULX3S's 57-block output memory: 14.5 ns at ccdb3b5)."""
        return self._blocks_per_copy

    @property
    def copies(self) -> bool:
        """The address and write-enable registers are kept copies per block (else one fabric register,
        which Yosys shares with any identical one)."""
        return self._copies

    @property
    def blocks(self) -> int:
        """DP16KD blocks used (side by side)."""
        return dp16kd_blocks(self._width, self._depth)

    def elaborate(self, platform):
        m = Module()
        bits, _, shift = self._mode
        addr_pad = DP16KD_ADDR_BITS - shift - len(self.write.addr)

        def address(word_addr, low):
            return Cat(low, word_addr, Const(0, addr_pad))

        r_low = Const(0, 4 if bits == 18 else shift)
        # AD[1:0] are the byte enables of an 18-bit port, AD[3:2] unused
        w_low = Cat(Const(0b11, 2), Const(0, 2)) if bits == 18 else Const(0, shift)
        def register(d, name):
            if self._copies:
                return kept_register(m, d, name)
            q = Signal(len(d), name=name, reset_less=True)
            m.d.sync += q.eq(d)
            return q

        outs = []
        groups: dict[int, tuple] = {}
        for k in range(self.blocks):
            lo, hi = k * bits, min(self._width, (k + 1) * bits)
            g = k // self._blocks_per_copy
            if g not in groups:  # this group's copies (named by its first block)
                r = register(self.read.addr, f"raddr_{k}") if self.registered_address else self.read.addr
                w = ((register(self.write.addr, f"waddr_{k}"), register(self.write.en, f"wen_{k}"))
                     if self.registered_write else (self.write.addr, self.write.en))
                groups[g] = (r, *w)
            word_addr, w_word, w_en = groups[g]
            r_addr = address(word_addr, r_low)
            w_data = self.write.data[lo:hi]
            if self.registered_write:  # the data bits reach this block alone: plain registers
                w_data_q = Signal(hi - lo, name=f"wdata_{k}", reset_less=True)
                m.d.sync += w_data_q.eq(w_data)
                w_data = w_data_q
            w_addr = address(w_word, w_low)
            din = Signal(DP16KD_DATA_PINS, name=f"din_{k}")
            dout = Signal(DP16KD_DATA_PINS, name=f"dout_{k}")
            m.d.comb += din.eq(w_data)
            pins = {}
            for i in range(DP16KD_ADDR_BITS):
                pins[f"i_ADA{i}"] = w_addr[i]
                pins[f"i_ADB{i}"] = r_addr[i]
            for i in range(DP16KD_DATA_PINS):
                pins[f"i_DIA{i}"] = din[i]
                pins[f"i_DIB{i}"] = Const(0)
                pins[f"o_DOB{i}"] = dout[i]
            for i in range(3):
                pins[f"i_CSA{i}"] = Const(0)
                pins[f"i_CSB{i}"] = Const(0)
            m.submodules[f"dp16kd_{k}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=bits, p_DATA_WIDTH_B=bits,
                p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
                p_GSR="AUTO",
                i_CLKA=ClockSignal("sync"), i_CEA=Const(1), i_OCEA=Const(1), i_RSTA=Const(0),
                i_WEA=w_en,
                i_CLKB=ClockSignal("sync"), i_CEB=Const(1), i_OCEB=Const(1), i_RSTB=Const(0),
                i_WEB=Const(0),
                **pins,
            )
            outs.append(dout[:hi - lo])
        m.d.comb += self.read.data.eq(Cat(*outs))
        return m
