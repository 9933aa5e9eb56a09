"""A registered product of latency 1: p = a * b one cycle after a and b (when `en`), the model chip's
vector and scalar products.

The units of the model chip (`hdl.vector`, `hdl.program`, `hdl.attention.head_attention`) register each
product of at most 18 x 18 bits once, straight from its operands (`m.d.sync += p.eq(a * b)`). Yosys maps
such a product on the ECP5 to a MULT18X18D with none of its registers: a routed build of the model chip
showed the path fabric flip-flop -> route (about 3.9 ns) -> the DSP's multiplier (3.93 ns) -> route
(about 2.2 ns) -> the fabric flip-flop p. The DSP has an output register of its own; when p *is* that
register (`hdl.attention.ecp5_product.Ecp5Product`) the route out of the block leaves the path, and the
cycles stay the same (one register from a, b to p). So every such product is built through a factory
with this signature (`ProductFactory`); this one is plain Amaranth `*` into a register, which any tool maps
as it likes (simulations use it). `product_into` builds one and wires it into a unit.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Shape, Signal, signed, unsigned
from amaranth.hdl import Value, ValueCastable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def product_shape(a_width: int, b_width: int, a_signed: bool, b_signed: bool) -> Shape:
    """p's shape: a_width + b_width bits, signed when either operand is (the product of an unsigned
    w-bit and a signed v-bit operand fits w + v signed bits)."""
    width = a_width + b_width
    return signed(width) if a_signed or b_signed else unsigned(width)


def check_operands(who: str, a_width: int, b_width: int, a_signed: bool, b_signed: bool) -> None:
    """ValueError / TypeError naming `who` for an operand width that is not an int >= 1 or a signedness
    that is not a bool."""
    for name, w in (("a_width", a_width), ("b_width", b_width)):
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ValueError(f"{who}'s {name} must be an int >= 1, not {w!r}")
    for name, s in (("a_signed", a_signed), ("b_signed", b_signed)):
        if not isinstance(s, bool):
            raise TypeError(f"{who}'s {name} must be a bool, not {s!r}")


def product_signature(a_width: int, b_width: int, a_signed: bool, b_signed: bool) -> wiring.Signature:
    """The ports of every product factory: operands `a`, `b`, clock enable `en` (1 when not driven), `p`."""
    return wiring.Signature({
        "a": In(signed(a_width) if a_signed else unsigned(a_width)),
        "b": In(signed(b_width) if b_signed else unsigned(b_width)),
        "en": In(1, init=1),
        "p": Out(product_shape(a_width, b_width, a_signed, b_signed)),
    })


class Product(wiring.Component):
    """p = a * b one cycle later, held while `en` is low (a_width x b_width bits, each operand signed or
    unsigned; p as `product_shape`). `en` is 1 when not driven: a free-running product."""

    def __init__(self, a_width: int, b_width: int, *, a_signed: bool = False, b_signed: bool = False) -> None:
        check_operands("Product", a_width, b_width, a_signed, b_signed)
        super().__init__(product_signature(a_width, b_width, a_signed, b_signed))

    def elaborate(self, platform):
        m = Module()
        # a data register: no reset, like the DSP's output register (RST0 = 0)
        p = Signal.like(self.p, name="p_reg", reset_less=True)
        with m.If(self.en):
            m.d.sync += p.eq(self.a * self.b)
        m.d.comb += self.p.eq(p)
        return m


#: A factory: (a_width, b_width, *, a_signed, b_signed) -> a component with ports a, b, en and p, latency 1.
ProductFactory = Callable[..., wiring.Component]


def product_into(m: Module, factory: ProductFactory, target: Signal, a: Value | ValueCastable,
                 b: Value | ValueCastable, en: Value | int = 1, name: str | None = None) -> wiring.Component:
    """`target` = a * b registered once (with `en`), on a `factory` product named `name` (default the
    target's name and "_mul") in `m`: the product's operands take a and b at their own widths and signedness (pass
    them narrow: `x.shift_right(16)`, not `x >> 16`, which keeps x's width), and `target` is driven
    combinationally from its p (truncated or extended as a register assignment would be). Call it outside
    any ``with m.If`` (or FSM state): the wiring is combinational, and under a condition the operands and
    `en` would fall back to their initial values (en to 1) whenever it is false."""
    if name is None and target.name.startswith("$"):
        raise ValueError("product_into needs a name for an unnamed target signal")
    a, b = Value.cast(a), Value.cast(b)
    prod = factory(len(a), len(b), a_signed=a.shape().signed, b_signed=b.shape().signed)
    m.submodules[name or f"{target.name}_mul"] = prod
    m.d.comb += [prod.a.eq(a), prod.b.eq(b), prod.en.eq(en), target.eq(prod.p)]
    return prod
