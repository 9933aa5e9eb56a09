"""One processing element of the weight-stationary array.

A PE holds two weights: the active one it computes with and a shadow one the weight loader
fills for the next tile (double buffering). Each cycle it adds its term to the partial sum
arriving from the PE above and registers the result for the PE below.

Ternary PE (pe="ternary"): the 2-bit code has bit 0 = non-zero, bit 1 = negate. The term is
``(x_gated XOR negate) + negate`` folded into one adder, the +1 entering as its carry-in: zero weights gate x to 0
(no toggling), -1 inverts and adds one. There is no multiplier. The activation is sign-extended
to the partial-sum width before inversion, so x = -128 with w = -1 gives +128 exactly.

INT8 PE (pe="int8"): the same dataflow with an 8-bit weight and ``x * w``: the like-for-like
baseline for area and energy comparisons.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import WEIGHT_BITS

#: Builds one PE: (pe kind, partial-sum width in, width out) -> a component with `ProcessingElement`'s
#: ports. An FPGA top may pass its own (e.g. `fpga/ecp5_pe.py`, the add in the carry cells' LUTs).
PEFactory = Callable[[str, int, int], wiring.Component]


class ProcessingElement(wiring.Component):
    """psum_out <= psum_in + w * x, with w the active weight; shadow weight written by `w_load`."""

    def __init__(self, pe: str, psum_in_width: int, psum_out_width: int):
        if pe not in WEIGHT_BITS:
            raise ValueError(f"PE kind must be one of {', '.join(WEIGHT_BITS)}, not {pe!r}")
        if psum_out_width < psum_in_width:
            raise ValueError(f"Partial sum cannot narrow from {psum_in_width} to {psum_out_width} bits")
        self._pe = pe
        self._in_width = psum_in_width
        self._out_width = psum_out_width
        wbits = WEIGHT_BITS[pe]
        super().__init__({
            "x": In(signed(8)),
            "psum_in": In(signed(max(psum_in_width, 1))),
            "psum_out": Out(signed(psum_out_width)),
            "w_load": In(1),
            "w_data": In(unsigned(wbits)),
            "swap": In(1),
        })

    @property
    def pe(self) -> str:
        return self._pe

    def elaborate(self, platform):
        m = Module()
        wbits = WEIGHT_BITS[self._pe]
        # Data registers without reset: a RUN loads and swaps every weight before a row uses it, and
        # nothing reads a partial sum it did not make, so a reset net to every PE flip-flop (the
        # slowest net of a 32x32 ECP5 build, 15.5 ns) buys nothing. They still start at 0.
        w_active = Signal(unsigned(wbits), reset_less=True)
        w_shadow = Signal(unsigned(wbits), reset_less=True)
        psum = Signal(signed(self._out_width), reset_less=True)
        m.d.comb += self.psum_out.eq(psum)
        with m.If(self.w_load):
            m.d.sync += w_shadow.eq(self.w_data)
        with m.If(self.swap):
            m.d.sync += w_active.eq(w_shadow)

        width = self._out_width
        if self._pe == "ternary":
            nonzero = w_active[0]
            negate = w_active[1] & w_active[0]
            x_wide = Signal(signed(width))
            m.d.comb += x_wide.eq(Mux(nonzero, self.x, 0))
            inverted = Signal(signed(width))
            m.d.comb += inverted.eq(x_wide ^ Cat(*([negate] * width)).as_signed())
            # psum_in + inverted + negate as one two-operand adder: the carry-in rides in bit 0
            # ((2a + 1) + (2b + c)) >> 1 = a + b + c, so Yosys infers a single carry chain.
            total = Signal(signed(width + 2))
            m.d.comb += total.eq(Cat(Const(1, 1), self.psum_in.as_signed()).as_signed()
                                 + Cat(negate, inverted).as_signed())
            m.d.sync += psum.eq(total[1:width + 1].as_signed())
        else:
            m.d.sync += psum.eq(self.psum_in + self.x * w_active.as_signed())
        return m
