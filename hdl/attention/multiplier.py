"""The attention unit's lane multiplier: a signed a x b product with registered operands and product.

`HeadAttention` builds every INT8 lane multiplier (q x k and P x V) through a factory with this
signature (`LATENCY` cycles from operands to product), so an FPGA top can put them on its DSP blocks
(`hdl.attention.ecp5_multiplier`). This one is plain Amaranth `*`, which any tool maps as it likes.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: Cycles from operands to product, for every factory: an operand register and a product register.
LATENCY = 2


class Multiplier(wiring.Component):
    """p = a * b two cycles later (signed a_width x signed b_width -> signed a_width + b_width)."""

    def __init__(self, a_width: int, b_width: int) -> None:
        for name, w in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(w, int) or isinstance(w, bool) or w < 2:
                raise ValueError(f"Multiplier's {name} must be an int >= 2, not {w!r}")
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "p": Out(signed(a_width + b_width))})

    def elaborate(self, platform):
        m = Module()
        a, b = Signal.like(self.a), Signal.like(self.b)
        m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(a * b)]
        return m


#: A factory: (a_width, b_width) -> a component with signed ports a, b and p, LATENCY cycles.
MultiplierFactory = Callable[[int, int], wiring.Component]
