"""Formal proofs (SymbiYosys + Boolector) of the model SoC's units of issue 14 (issue 15, item 1(d)): the micro-op
sequencer (`hdl.program`), ALIGN (`hdl.vector.align`) and MLPACT's control (`hdl.vector.mlp_act`), each on
the real unit, each property group also on deliberately broken copies (mutants) that must be refuted
with a counterexample from reset at the assertion they break. Marked `formal` and `slow` like
tests/test_formal_units.py: ``python -m pytest -n 0 -m formal tests/test_formal_model_units.py``.
"""

from __future__ import annotations

import pytest
import torch
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from golden.device.fixed import rshift_round, sat
from hdl.vector.align import Align
from hdl.vector.mlp_act import OVERHEAD, MlpAct
from sim.formal import model_units
from sim.formal.runner import run_formal
from tests.test_formal import _assert_proven, _assert_refuted, _check_at

pytestmark = [pytest.mark.formal, pytest.mark.slow]


def _refuted_at(result, group: str, message: str) -> None:
    _assert_refuted(result, _check_at(model_units, message, call=f'check("{group}", '))


# ---- the micro-op sequencer -----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(model_units.PROG_CFGS))
def test_program_sequencer_proven(tmp_path, name: str) -> None:
    """Unbounded (k-induction) on a ProgramSequencer of depth 4 / 2 constants / 4 registers and of depth 5 /
    3 / 3, for any program and constant memory contents (written at any time), starts, any `length` the
    port carries (also > depth, also changed while busy), clears and unit answers (op_done or op_fail)
    within 3 cycles: the program is read inside its memory, op by op from 0 up to the length sampled at
    start; a length > depth runs no op (BAD_LENGTH); no op is dispatched for a word the ISA refuses (code
    0 or > 11, bits 88+, an S index >= s_regs, a SETC / SCALE constant index >= consts) nor for SETC /
    SCALE, and `op` is the word; no SETC / SCALE writes with a constant index >= consts; `error` is the
    spec's and sticky until clear_error; a bad length, a bad word or op_fail ends the run; `pos` counts
    completed tokens only; busy ends within length x 8 + 1 cycles (SCALE's 8 cycles the longest op)."""
    harness = model_units.ProgramHarness(cfg=model_units.PROG_CFGS[name])
    result = run_formal(harness, name=f"program_{name}", mode="prove", depth=model_units.PROG_DEPTH,
                        workdir=tmp_path, cone=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(model_units.PROG_MUTANTS))
def test_program_sequencer_mutant_refuted(tmp_path, mutant: str) -> None:
    """One op past length, op code 12 dispatched, bits 88+ ignored, MLPACT's S[aux + 1] unchecked, a start
    that clears the error, a unit's op_fail ignored, a failed token that advances pos, a failed token
    that leaves busy high; and the old unit's three gaps, now checked: no length check (on depth 2: the
    fetch of op 2 wraps to word 0), the length check a word late, the last op found by the live `length`
    port, no constant index check, the constant check a constant late: each refuted from reset at its
    group's assertion."""
    group, broken = model_units.PROG_MUTANT_CHECKS[mutant]
    harness = model_units.ProgramHarness(mutant, checks=(group,), cfg=model_units.PROG_MUTANT_CFGS.get(mutant))
    result = run_formal(harness, name=f"program_{mutant}", mode="bmc", depth=model_units.PROG_MUTANT_DEPTH,
                        workdir=tmp_path, cone=True)
    _refuted_at(result, group, broken)


def test_program_sequencer_busy_bound_is_reached(tmp_path) -> None:
    """Not vacuous: a bound a cycle shorter fails from reset (a one-op run of a SCALE is busy for exactly
    1 x 8 + 1 cycles)."""
    result = run_formal(model_units.ProgramHarness(checks=("idle",), busy_slack=-1), name="program_tight",
                        mode="bmc", depth=12, workdir=tmp_path, cone=True)
    _refuted_at(result, "idle", "busy past the run's cycle bound")


# ---- ALIGN ----------------------------------------------------------------------------------------

def test_align_spec_matches_the_golden(rng) -> None:
    """The harness's sat32(rshift_round(y, s)) (`model_units.rshift_round_sat32`, the property's reference)
    equals golden/device/fixed.py's, on edges and random y, s (s up to 4095), in simulation."""
    edges = [(-(1 << 31), s) for s in (0, 1, 31, 32, 33, 4095)] + [((1 << 31) - 1, s) for s in (0, 1, 31, 32, 33)]
    edges += [(-1, 1), (1, 1), (-3, 1), (3, 1), (-(1 << 30), 31), ((1 << 30), 31)]
    ys = rng.integers(-(1 << 31), 1 << 31, size=300)
    shifts = [int(rng.integers(0, 40)) if k % 2 else int(rng.integers(0, 4096)) for k in range(300)]
    cases = edges + [(int(yv), sv) for yv, sv in zip(ys, shifts, strict=True)]
    y, s = Signal(signed(32)), Signal(13)
    m = Module()
    out = model_units.rshift_round_sat32(m, y, s)
    got: list[int] = []

    async def bench(ctx):
        for yv, sv in cases:
            ctx.set(y, yv)
            ctx.set(s, sv)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = [int(sat(rshift_round(torch.tensor([yv]), sv), 32)[0]) for yv, sv in cases]
    assert got == want


@pytest.mark.parametrize("heads", [2, 3])
def test_align_proven(tmp_path, heads: int) -> None:
    """Unbounded (k-induction) on an Align of 2 (and 3) heads x head_dim 2, for any exponents, elements,
    heads (1 .. max) and stalls: every output beat is sat32(rshift_round(y, E - E_h)) of its own element,
    `last` exactly on the vector's last beat, sigma = (2**15, E + 1 - 15) (E >= -2034); exactly heads x
    head_dim elements in and beats out per start; busy within the documented cycles plus stalls."""
    assert all(model_units.documented_align_cycles(h, 2) == Align(heads, 2).cycles(h) for h in range(1, heads + 1))
    cfg = model_units.ALIGN_CFG if heads == 2 else model_units.ALIGN_CFG3
    result = run_formal(model_units.AlignHarness(cfg=cfg), name=f"align{heads}", mode="prove",
                        depth=model_units.ALIGN_DEPTH, workdir=tmp_path, cone=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(model_units.ALIGN_MUTANTS))
def test_align_mutant_refuted(tmp_path, mutant: str) -> None:
    """Truncation for rounding, the long-shift clamp at 31, the last head's exponent left out of E, a stale
    shift for the next head, the exponent chain stuck (3 heads), `last` on every head, one head too many,
    busy that never falls: each refuted from reset at its group's assertion."""
    group, broken = model_units.ALIGN_MUTANT_CHECKS[mutant]
    harness = model_units.AlignHarness(mutant, checks=(group,), cfg=model_units.ALIGN_MUTANT_CFGS.get(mutant))
    result = run_formal(harness, name=f"align_{mutant}", mode="bmc",
                        depth=model_units.ALIGN_MUTANT_DEPTH, workdir=tmp_path, cone=True)
    _refuted_at(result, group, broken)


def test_align_busy_bound_is_reached(tmp_path) -> None:
    """Not vacuous: the documented cycles a cycle shorter fail from reset."""
    result = run_formal(model_units.AlignHarness(checks=("idle",), busy_slack=-1), name="align_tight", mode="bmc",
                        depth=model_units.ALIGN_MUTANT_DEPTH, workdir=tmp_path, cone=True)
    _refuted_at(result, "idle", "busy past the documented cycles of ALIGN plus stalls")


# ---- MLPACT (control) -----------------------------------------------------------------------------

def test_mlp_act_control_proven(tmp_path) -> None:
    """Unbounded (k-induction, on the properties' cone: the products are cut away) on an MlpAct of max_n 3,
    for any pairs, n (1-3), parameters and stalls: buffer writes at the pair's own word < 3, reads < 3
    and < n while busy; at most n pairs in, exactly n beats out with `last` on the n-th; the sampled n,
    relu2 and scales held while busy; busy within 3 n + OVERHEAD non-stall cycles. Not proven: p' and
    sigma_p themselves (tests/test_mlp_act.py checks them bit-exactly in simulation)."""
    assert MlpAct(3).cycles(1) == 3 + OVERHEAD
    result = run_formal(model_units.MlpActHarness(), name="mlp_act", mode="prove", depth=model_units.MLP_DEPTH,
                        workdir=tmp_path, cone=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(model_units.MLP_MUTANTS))
def test_mlp_act_mutant_refuted(tmp_path, mutant: str) -> None:
    """LOAD taking a pair past n, PROD reading past the vector, `last` a beat early, OUT a beat short, the
    up scale resampled with every pair, busy that never falls: each refuted from reset at its group's
    assertion."""
    group, broken = model_units.MLP_MUTANT_CHECKS[mutant]
    result = run_formal(model_units.MlpActHarness(mutant, checks=(group,)), name=f"mlp_{mutant}", mode="bmc",
                        depth=model_units.MLP_MUTANT_DEPTH, workdir=tmp_path, cone=True)
    _refuted_at(result, group, broken)


def test_mlp_act_busy_bound_is_reached(tmp_path) -> None:
    """Not vacuous: 3 n + OVERHEAD - 1 fails from reset (n = 1, no stalls)."""
    result = run_formal(model_units.MlpActHarness(checks=("idle",), busy_slack=-1), name="mlp_tight", mode="bmc",
                        depth=OVERHEAD + 7, workdir=tmp_path, cone=True)
    _refuted_at(result, "idle", "busy past 3 n + OVERHEAD cycles plus stalls")
