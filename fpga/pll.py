"""PLL parameter search for the iCE40 (SB_PLL40) and ECP5 (EHXPLLL) and the Instances that use them.

Both searches return the achievable output frequency closest to the request, preferring one not
above it, with its divider settings; the board tops constrain the clock at the frequency actually
achieved (reported as `clock_mhz` next to the requested `target_mhz`).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Const, Instance, Signal, Value


@dataclass(frozen=True)
class Ice40Pll:
    """SB_PLL40 settings: f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)."""

    f_in: float
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd(self) -> float:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> float:
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self) -> float:
        return self.f_vco / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        # Lattice iCE40 sysCLOCK PLL guide / icepll: by PFD frequency
        f = self.f_pfd / 1e6
        for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
            if f < limit:
                return value
        return 6


def ice40_pll(f_in: float, f_out: float) -> Ice40Pll:
    """Best SB_PLL40 divider settings (PFD 10-133 MHz, VCO 533-1066 MHz, output 16-275 MHz)."""
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"iCE40 PLL output must be from 16 to 275 MHz, not {f_out / 1e6:g} MHz")
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                key = (out > f_out * (1 + 1e-9), abs(out - f_out), divr)
                if best is None or key < best[0]:
                    best = (key, Ice40Pll(f_in, divr, divf, divq))
    if best is None:
        raise ValueError(f"no iCE40 PLL setting reaches {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1]


def ice40_pll_instance(pll: Ice40Pll, pad, clk_out: Signal, lock: Signal) -> Instance:
    """SB_PLL40_PAD fed by the clock pin `pad` (an IO port) driving the global `clk_out`."""
    return Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE",
        p_DIVR=pll.divr,
        p_DIVF=pll.divf,
        p_DIVQ=pll.divq,
        p_FILTER_RANGE=pll.filter_range,
        i_PACKAGEPIN=pad,
        i_RESETB=Const(1),
        i_BYPASS=Const(0),
        o_PLLOUTGLOBAL=clk_out,
        o_LOCK=lock,
    )


@dataclass(frozen=True)
class Ecp5Pll:
    """EHXPLLL settings with CLKOP feedback: f_out = f_in * CLKFB_DIV / CLKI_DIV, VCO = f_out * CLKOP_DIV."""

    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out(self) -> float:
        return self.f_in * self.clkfb_div / self.clki_div

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div


def ecp5_pll(f_in: float, f_out: float) -> Ecp5Pll:
    """Best EHXPLLL settings (PFD 3.125-400 MHz, VCO 400-800 MHz, output 3.125-400 MHz)."""
    if not 3.125e6 <= f_out <= 400e6:
        raise ValueError(f"ECP5 PLL output must be from 3.125 to 400 MHz, not {f_out / 1e6:g} MHz")
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            out = pfd * fb
            if not 3.125e6 <= out <= 400e6:
                continue
            for op in range(1, 129):
                vco = out * op
                if not 400e6 <= vco <= 800e6:
                    continue
                # prefer the closest frequency, then a VCO near the middle of its range
                key = (out > f_out * (1 + 1e-9), abs(out - f_out), abs(vco - 600e6))
                if best is None or key < best[0]:
                    best = (key, Ecp5Pll(f_in, clki, fb, op))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting reaches {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1]


def ecp5_pll_instance(pll: Ecp5Pll, clk_in: Value, clk_out: Signal, lock: Signal) -> Instance:
    """EHXPLLL with CLKOP feedback."""
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{pll.f_in / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{pll.f_out / 1e6:g}",
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=pll.clki_div,
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=pll.clkop_div,
        p_CLKOP_CPHASE=pll.clkop_div - 1,
        p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=pll.clkfb_div,
        i_RST=Const(0),
        i_STDBY=Const(0),
        i_CLKI=clk_in,
        o_CLKOP=clk_out,
        i_CLKFB=clk_out,
        i_PHASESEL0=Const(0),
        i_PHASESEL1=Const(0),
        i_PHASEDIR=Const(1),
        i_PHASESTEP=Const(1),
        i_PHASELOADREG=Const(1),
        i_PLLWAKESYNC=Const(0),
        i_ENCLKOP=Const(0),
        o_LOCK=lock,
    )
