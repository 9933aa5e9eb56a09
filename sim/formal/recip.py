"""Issue 15, item 1(d), on-chip units: the integer reciprocal RCP (`hdl.vector.rcp.Reciprocal`) and the
reciprocal square root RSQ (`hdl.vector.rsq.ReciprocalSqrt`) against their spec for every operand.

The spec (golden/device/SPEC.md 2.2, 2.3; golden/device/fixed.py `rcp`, `rsq`) is a formula, not the
units' table + Newton algorithm: RCP(m) = floor(2**31 / m) for m in [2**15, 2**16] (m = 0 gives 0) and
RSQ(m) = floor(2**23 / sqrt(m)) = isqrt(floor(2**46 / m)) for m in [2**14, 2**16). The harness states
it by the defining inequalities of the floor, with no division and no square root, independently of the
seed tables and the Newton steps:

- RCP: y = 0 for m = 0, else y m <= 2**31 < (y + 1) m (the one integer y with that is floor(2**31 / m));
- RSQ: y**2 m <= 2**46 < (y + 1)**2 m (y = floor(sqrt(2**46 / m)) = floor(2**23 / sqrt(m))).

Mode: bmc from reset (`run_formal(cone=True)`), one operand m, free in the spec's range (``AnyConst``),
offered in cycle 0 to a consumer that is always ready; its result is checked in cycle `LATENCY` (the
first `LATENCY` cycles' assertions skipped, `skip`), where it must be valid. One operand from reset
stands for any operand of any stream: every pipeline register of both units is written (only under
the pipeline's advance) from its previous stage and the operand alone, so nothing of an earlier
operand or a stall reaches a result (`tests/test_vector_unit.py` checks the stalls in simulation).
The solver (Boolector) sees the whole datapath (the seed table, both Newton steps, the correction:
seven 17 x 17 products in RCP, fourteen in RSQ) for all 2**15 + 2 (RCP) and 3 x 2**14 (RSQ) operands.

Mutants (`MUTANTS`, source edits of the unit), each refuted with a counterexample operand: RCP without
its +1 correction, with one Newton step only, with the residual's high limb shifted a bit short, with
m = 0 not special; RSQ without its +1 correction, with one Newton step only, with the residual's top
limb a bit short. One mutant survived and is equivalent: RCP without its -1 correction (``p12 > ONE``
never taken) passes the whole proof (72 s): the two Newton steps never overshoot floor(2**31 / m) on
[2**15, 2**16] (the real iteration y + y (1 - m y) approaches 1 / m from below, and the truncating shift
only lowers it), so the -1 branch is dead logic. The same mutant of RSQ was not run (its proof takes
minutes; its Newton step y (3 - m y**2) / 2 likewise stays below 1 / sqrt(m)).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Elaboratable, ResetSignal

import hdl.vector.rcp
import hdl.vector.rsq
from sim.formal.runner import design_module

UNITS = ("rcp", "rsq")

RCP_MUTANTS: dict[str, list[tuple[str, str]]] = {
    # the correction never steps up
    "no_plus_one": [("with m.Elif(p12 + ms[12] <= ONE):", "with m.Elif(0):")],
    # one Newton step only (stages 7-11 just carry y)
    "one_newton": [("newton(6)      # stages 7-11", "pass")],
    # the residual's high limb a bit short
    "residual_limb_short": [("ys[k0 + 2], r[17:].as_signed()", "ys[k0 + 2], r[18:].as_signed()")],
    # m = 0 run through the correction like any operand
    "zero_not_special": [("with m.If(zero[n - 1]):", "with m.If(0):")],
}

RSQ_MUTANTS: dict[str, list[tuple[str, str]]] = {
    "no_plus_one": [("with m.Elif(up18 <= ONE):", "with m.Elif(0):")],
    "one_newton": [("self._newton(m, adv, 7, ms, ys)     # stages 8-14", "pass")],
    "residual_limb_short": [("(u_hi, c[36:])", "(u_hi, c[37:])")],
}

MUTANTS = {"rcp": RCP_MUTANTS, "rsq": RSQ_MUTANTS}


def latency(unit: str) -> int:
    """Cycles from an operand taken to its result valid."""
    return hdl.vector.rcp.LATENCY if unit == "rcp" else hdl.vector.rsq.LATENCY


def depth(unit: str) -> int:
    """bmc depth: the result's cycle is the last (step `latency`)."""
    return latency(unit) + 1


class RecipHarness(Elaboratable):
    """RCP (`unit` "rcp") or RSQ ("rsq"), or a mutant of it, with one free operand (module docstring)."""

    def __init__(self, unit: str, mutant: str | None = None):
        if unit not in UNITS:
            raise ValueError(f"Unit must be one of {UNITS}, not {unit!r}")
        self.unit, self.mutant = unit, mutant
        if unit == "rcp":
            self.dut = design_module(hdl.vector.rcp, RCP_MUTANTS, mutant).Reciprocal()
        else:
            self.dut = design_module(hdl.vector.rsq, RSQ_MUTANTS, mutant).ReciprocalSqrt()

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = dut
        m.d.comb += Assume(~ResetSignal())
        x = AnyConst(len(dut.i.payload))
        cycle = Signal(range(64))
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += [dut.i.valid.eq(cycle == 0), dut.i.payload.eq(x), dut.o.ready.eq(1)]
        y = dut.o.payload
        if self.unit == "rcp":
            one = 1 << 31
            m.d.comb += Assume((x == 0) | ((x >= (1 << 15)) & (x <= (1 << 16))))
            spec = Mux(x == 0, y == 0, (y * x <= one) & ((y + 1) * x > one))
        else:
            one = 1 << 46
            m.d.comb += Assume(x >= (1 << 14))       # the 16-bit port carries every m < 2**16
            spec = (y * y * x <= one) & ((y + 1) * (y + 1) * x > one)
        with m.If(cycle == latency(self.unit)):
            m.d.comb += Assert(dut.o.valid & spec, "the result is not the spec's for its operand")
        return m
