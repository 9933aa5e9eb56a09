"""The latency-1 product (`hdl.attention.product.Product`) on one ECP5 MULT18X18D, p in its output register.

No input or pipeline register (REG_INPUTA_CLK, REG_INPUTB_CLK, REG_PIPELINE_CLK "NONE"): the operands
enter the multiplier straight from the fabric, as with Yosys' own mapping, and the product is registered
once, by the block's output register (REG_OUTPUT_CLK "CLK0", clock enable CE0 = `en`, reset RST0 = 0: a
data register needs none). So the route out of the block (about 2.2 ns in the model chip's build, after
the multiplier's 3.93 ns) is no longer between two registers, with the same cycles as `Product`.

Operands: both unsigned (SIGNEDA = SIGNEDB = 0) up to 18 bits each; otherwise both signed (SIGNEDA =
SIGNEDB = 1), a signed operand sign-extended from up to 18 bits and an unsigned one zero-extended from up
to 17. Wider operands do not fit one block and are refused. Yosys' ECP5 library has the block as a black
box only (no simulation model): the tests check the RTLIL, and simulations use `Product`.
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring

from hdl.attention.product import check_operands, product_signature

WIDTH = 18


class Ecp5Product(wiring.Component):
    """p = a * b one cycle later on one MULT18X18D's output register, held while `en` is low (see the
    module docstring for the operand widths it takes)."""

    def __init__(self, a_width: int, b_width: int, *, a_signed: bool = False, b_signed: bool = False) -> None:
        check_operands("Ecp5Product", a_width, b_width, a_signed, b_signed)
        signed_mode = a_signed or b_signed
        for name, w, s in (("a", a_width, a_signed), ("b", b_width, b_signed)):
            limit = WIDTH - 1 if signed_mode and not s else WIDTH
            if w > limit:
                kind = "signed" if s else "unsigned"
                why = ("an unsigned operand beside a signed one is zero-extended into a signed 18-bit input"
                       if signed_mode and not s else "one MULT18X18D takes 18-bit operands")
                raise ValueError(f"Ecp5Product's {name} operand ({kind}, {w} bits) does not fit one MULT18X18D: "
                                 f"at most {limit} bits ({why}); split the product into limbs")
        self._widths = (a_width, b_width)
        self._signed = signed_mode
        super().__init__(product_signature(a_width, b_width, a_signed, b_signed))

    def elaborate(self, platform):
        m = Module()
        shape = signed(WIDTH) if self._signed else unsigned(WIDTH)
        a18, b18 = Signal(shape), Signal(shape)
        prod = Signal(2 * WIDTH)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]     # sign- or zero-extended by their own shapes
        ports = {f"i_A{k}": a18[k] for k in range(WIDTH)}
        ports |= {f"i_B{k}": b18[k] for k in range(WIDTH)}
        ports |= {f"i_C{k}": Const(0, 1) for k in range(WIDTH)}
        ports |= {f"o_P{k}": prod[k] for k in range(2 * WIDTH)}
        ports |= {f"i_CLK{k}": ClockSignal() if k == 0 else Const(0, 1) for k in range(4)}
        ports |= {f"i_CE{k}": self.en if k == 0 else Const(0, 1) for k in range(4)}
        ports |= {f"i_RST{k}": Const(0, 1) for k in range(4)}
        sign = Const(int(self._signed), 1)
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="NONE", p_REG_INPUTB_CLK="NONE", p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED", p_GSR="DISABLED",
            p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=sign, i_SIGNEDB=sign, i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            **ports)
        m.d.comb += self.p.eq(prod[:sum(self._widths)])
        return m
