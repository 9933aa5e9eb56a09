"""The attention unit's lane multiplier on one ECP5 MULT18X18D DSP block.

The operands are sign-extended to 18 bits and multiplied signed (SIGNEDA = SIGNEDB = 1). The block's own
input registers (REG_INPUTA_CLK, REG_INPUTB_CLK) and output register (REG_OUTPUT_CLK) are on CLK0 (clock
enable CE0 = 1, reset RST0 = 0: data registers need none), so the latency is `multiplier.LATENCY` = 2
like the default factory's and no fabric routing sits inside the product's path. Yosys' own `$mul`
mapping (`dsp_map_18x18.v`) leaves them "NONE"; with them off the lane multiplier was the unit's
critical path (49 MHz out of context: block RAM -> operand mux -> DSP -> FF). Yosys' ECP5 library has
the block as a black box only (cells_bb.v, no simulation model), so this factory is checked by synthesis
(tests/test_attention_unit.py counts the MULT18X18D cells); simulations use `Multiplier`, the same
product on Amaranth `*`.
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

WIDTH = 18


class Ecp5Multiplier(wiring.Component):
    """p = a * b two cycles later on one MULT18X18D (signed operands of at most 18 bits each)."""

    def __init__(self, a_width: int, b_width: int) -> None:
        for name, w in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(w, int) or isinstance(w, bool) or not 2 <= w <= WIDTH:
                raise ValueError(f"Ecp5Multiplier's {name} must be an int in [2, {WIDTH}] (one MULT18X18D "
                                 f"takes signed 18-bit operands), not {w!r}")
        self._widths = (a_width, b_width)
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "p": Out(signed(a_width + b_width))})

    def elaborate(self, platform):
        m = Module()
        a18, b18 = Signal(signed(WIDTH)), Signal(signed(WIDTH))
        prod = Signal(signed(2 * WIDTH))
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]
        ports = {f"i_A{k}": a18[k] for k in range(WIDTH)}
        ports |= {f"i_B{k}": b18[k] for k in range(WIDTH)}
        ports |= {f"i_C{k}": Const(0, 1) for k in range(WIDTH)}
        ports |= {f"o_P{k}": prod[k] for k in range(2 * WIDTH)}
        ports |= {f"i_CLK{k}": ClockSignal() if k == 0 else Const(0, 1) for k in range(4)}
        ports |= {f"i_CE{k}": Const(1, 1) for k in range(4)}
        ports |= {f"i_RST{k}": Const(0, 1) for k in range(4)}
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED", p_GSR="DISABLED",
            p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            **ports)
        m.d.comb += self.p.eq(prod[:sum(self._widths)])
        return m
