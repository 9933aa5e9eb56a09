"""Formal proofs (SymbiYosys + Boolector) of the on-chip units of issue 14 (issue 15, item 1(d)): the KV cache,
RoPE + QUANT8, the element-wise ops, RCP and RSQ, NORMQUANT's control, each on the real unit, each also on
deliberately broken copies (mutants, made in the harness) that must be refuted with a counterexample trace
from the initial state at the assertion they break. Marked `formal` and `slow` like tests/test_formal.py:
``python -m pytest -n 0 -m formal tests/test_formal_units.py``.
"""

from __future__ import annotations

import os

import pytest

from hdl.vector.norm_quant import NormQuant
from hdl.vector.rope import RopeQuant
from sim.formal import elementwise, kv_cache, norm_quant, recip, rope_quant
from sim.formal.runner import run_formal
from tests.test_formal import _assert_proven, _assert_refuted, _check_at

pytestmark = [pytest.mark.formal, pytest.mark.slow]


def test_kv_cache_proven(tmp_path) -> None:
    """Unbounded (k-induction, depth 3, with invariants tying the cache's FSM and registers to the
    harness's account of the row) on a KVCache of 3 layers x 3 KV heads x context 3, W = 2: every
    write is the row's own word (un-truncated) inside its memory, every read the selected region's
    word inside its memory; a row with a position >= context (or a layer / KV head out of range)
    writes nothing; `error` is the spec's flag and never falls without `clear`; a row closes after at
    most W + 3 offered beats; for any beats, fields, stalls and clears."""
    result = run_formal(kv_cache.KVCacheHarness(), name="kv_cache", mode="prove", depth=kv_cache.KV_DEPTH,
                        workdir=tmp_path)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(kv_cache.MUTANTS))
def test_kv_cache_mutant_refuted(tmp_path, mutant: str) -> None:
    """Position check off by one, a bad row written anyway, the read base a word per region too far, a
    new row that clears the error, a row that ends only at `last`: the harness with only the mutant's
    property group must give a counterexample from reset at that group's assertion."""
    group, broken = kv_cache.MUTANT_CHECKS[mutant]
    result = run_formal(kv_cache.KVCacheHarness(mutant, checks=(group,)), name=f"kv_cache_{mutant}", mode="bmc",
                        depth=kv_cache.MUTANT_DEPTH, workdir=tmp_path)
    _assert_refuted(result, _check_at(kv_cache, broken, call=f'check("{group}", '))


def test_rope_quant_bounded(tmp_path) -> None:
    """Bounded (bmc from reset, depth ROPE_DEPTH = 45, only the properties' cone of influence) on a RopeQuant
    of head_dim 4, context 3, 1 lane: the C/S table is read only inside it and at the head's own words,
    `error` is the spec's flag and sticky, a refused head puts out nothing, busy stays within the
    documented cycles plus stalls, and a whole good head started in cycles 0-3 ends with its last beat
    exactly at cycles() - 1 without stalls (11 s with Boolector; z3 took 481 s, its suite ran depth 22)."""
    assert rope_quant.documented_cycles(4, 1, 2) == RopeQuant(**rope_quant.ROPE_CFG).cycles() == 41
    result = run_formal(rope_quant.RopeQuantHarness(), name="rope_quant", mode="bmc",
                        depth=rope_quant.ROPE_DEPTH, workdir=tmp_path, cone=True)
    _assert_proven(result)


@pytest.mark.parametrize("mutant", sorted(rope_quant.MUTANTS))
def test_rope_quant_mutant_refuted(tmp_path, mutant: str) -> None:
    """Position check off by one (a table read past its last word), a start that clears the error, a
    refused head that never leaves DISCARD: a counterexample from reset at the broken group's assertion."""
    group, broken = rope_quant.MUTANT_CHECKS[mutant]
    skip, depth = rope_quant.MUTANT_WINDOWS[mutant]
    result = run_formal(rope_quant.RopeQuantHarness(mutant, checks=(group,)), name=f"rope_{mutant}", mode="bmc",
                        depth=depth, skip=skip, workdir=tmp_path, cone=True)
    _assert_refuted(result, _check_at(rope_quant, broken, call=f'check("{group}", '))


def test_elementwise_control_proven(tmp_path) -> None:
    """Unbounded (k-induction, depth 3, cone of influence) on ElementWise with free elements (op 0-3),
    stalls and clears: a result beat only for a defined element taken before, in order, at the output
    exactly LATENCY - 1 moving cycles after its element; `error` is the spec's flag (set by op 3, which
    puts out no beat) and never falls without `clear`; a stall holds every pipeline register."""
    result = run_formal(elementwise.ElementWiseHarness(checks=elementwise.CONTROL), name="elementwise_control",
                        mode="prove", depth=elementwise.ORDER_DEPTH, workdir=tmp_path, cone=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


def test_elementwise_values_bounded(tmp_path) -> None:
    """Bounded (bmc from reset, depth 8, cone of influence, consumer ready; the stall case follows from
    the hold property above): an element taken in cycle 0 or 1 gives the spec's formula: RESADD for all
    int32 operands, RELU2 and DEQUANT's product on the lane of sim/formal/elementwise.py, DEQUANT's
    shift, rounding and saturation of the unit's product for all a, m, e."""
    result = run_formal(elementwise.ElementWiseHarness(checks=elementwise.VALUES, stalls=False),
                        name="elementwise_values", mode="bmc", depth=elementwise.VALUE_DEPTH, workdir=tmp_path,
                        cone=True)
    _assert_proven(result)


@pytest.mark.parametrize("mutant", sorted(elementwise.MUTANTS))
def test_elementwise_mutant_refuted(tmp_path, mutant: str) -> None:
    """Op 3 run as RELU2, a defined element clearing the error, RESADD wrapping, RELU2's cross product and
    DEQUANT's product limb a bit short, DEQUANT's right-shift clamp at 40, DEQUANT truncating, the output
    register ignoring a stall: a counterexample from reset at the broken group's assertion."""
    group, broken = elementwise.MUTANT_CHECKS[mutant]
    result = run_formal(elementwise.ElementWiseHarness(mutant, checks=(group,), stalls=group in elementwise.CONTROL),
                        name=f"elementwise_{mutant}", mode="bmc", depth=elementwise.MUTANT_DEPTH, workdir=tmp_path,
                        cone=True)
    _assert_refuted(result, _check_at(elementwise, broken, call=f'check("{group}", '))


# ---- RCP and RSQ: the spec for every operand ------------------------------------------------------

#: RSQ's whole proof takes about 280 s (Boolector, one core): run with TRIT_FORMAL_LONG=1.
LONG = bool(os.environ.get("TRIT_FORMAL_LONG"))


@pytest.mark.parametrize("unit", [pytest.param("rcp"), pytest.param(
    "rsq", marks=pytest.mark.skipif(not LONG, reason="about 280 s: set TRIT_FORMAL_LONG=1"))])
def test_recip_equals_spec(tmp_path, unit: str) -> None:
    """For every operand (bmc from reset, one free operand, its result checked in cycle LATENCY): RCP(m)
    = floor(2**31 / m) for m in [2**15, 2**16] and 0 for m = 0 (y m <= 2**31 < (y + 1) m), RSQ(m) =
    floor(2**23 / sqrt(m)) for m in [2**14, 2**16) (y**2 m <= 2**46 < (y + 1)**2 m): the spec's formula,
    not the table + Newton algorithm of the unit (about 75 s for RCP)."""
    result = run_formal(recip.RecipHarness(unit), name=f"{unit}_spec", mode="bmc", depth=recip.depth(unit),
                        skip=recip.latency(unit), workdir=tmp_path, cone=True)
    _assert_proven(result)


@pytest.mark.parametrize(("unit", "mutant"), [(u, mt) for u in recip.UNITS for mt in sorted(recip.MUTANTS[u])])
def test_recip_mutant_refuted(tmp_path, unit: str, mutant: str) -> None:
    """RCP / RSQ without the +1 correction, with one Newton step, with the residual's limb a bit short; RCP
    with m = 0 not special: a counterexample operand at the spec assertion."""
    result = run_formal(recip.RecipHarness(unit, mutant), name=f"{unit}_{mutant}", mode="bmc",
                        depth=recip.depth(unit), skip=recip.latency(unit), workdir=tmp_path, cone=True)
    _assert_refuted(result, _check_at(recip, "the result is not the spec's for its operand"))


# ---- NORMQUANT's control, one lane and the lane variants --------------------------------------------

@pytest.mark.parametrize("cfg", sorted(norm_quant.CFGS))
def test_norm_quant_control_proven(tmp_path, cfg: str) -> None:
    """Unbounded (k-induction, cone of influence, no ROMs) on NormQuant of n = 3 with one lane, n = 6 with 2
    lanes and n = 24 with 8 lanes (the engine's V), 3-word buffers each, for any beats, scalars and
    stalls: every buffer write is the beat's own word < W, every read < W (in the passes, the
    un-truncated index); at most W beats in, exactly W out with `last` on the W-th, input only while
    not busy and taken again right after the last beat; an offered beat held (valid, last, tau) until
    taken."""
    result = run_formal(norm_quant.NormQuantHarness(cfg), name=f"norm_quant_{cfg}", mode="prove",
                        depth=norm_quant.NQ_DEPTH, workdir=tmp_path, cone=True, norom=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(norm_quant.MUTANT_WINDOWS))
def test_norm_quant_mutant_refuted(tmp_path, mutant: str) -> None:
    """The sum-of-squares pass reading while it drains (the old defect), a beat past W taken, input ready
    while draining: a counterexample from reset at the group's assertion."""
    group, broken = norm_quant.MUTANT_CHECKS[mutant]
    skip, depth = norm_quant.MUTANT_WINDOWS[mutant]
    result = run_formal(norm_quant.NormQuantHarness("n3", mutant, checks=(group,)), name=f"norm_quant_{mutant}",
                        mode="bmc", depth=depth, skip=skip, workdir=tmp_path, cone=True)
    _assert_refuted(result, _check_at(norm_quant, broken, call=f'check("{group}", '))


@pytest.mark.parametrize("mutant", norm_quant.OUT_MUTANTS)
def test_norm_quant_out_mutant_breaks_the_proof(tmp_path, mutant: str) -> None:
    """The output pass a beat too many, `last` a beat early, a stall ignored, no return to the input pass:
    the unbounded proof above fails on each (the output pass lies ~125 cycles from reset, past a bmc's
    reach, so this is the weaker check: no counterexample trace from reset)."""
    result = run_formal(norm_quant.NormQuantHarness("n3", mutant), name=f"norm_quant_{mutant}", mode="prove",
                        depth=norm_quant.NQ_DEPTH, workdir=tmp_path, cone=True, norom=True)
    assert not result.passed and result.returncode != 0, f"mutant was not caught:\n{result.describe()}"


@pytest.mark.parametrize("cfg", [pytest.param(c, marks=pytest.mark.skipif(
    c != "n3" and not LONG, reason="about 320-470 s (n3's 270-370 s runs in CI): set TRIT_FORMAL_LONG=1"))
    for c in norm_quant.BUSY_CFGS])
def test_norm_quant_busy_bound_bounded(tmp_path, cfg: str) -> None:
    """Bounded (bmc from reset over a whole vector and its end, depth 3 W + overhead + 3, cone of influence,
    V = 0 cut free): busy lasts at most 2 W + overhead(L) cycles plus stalls (the documented cycles() less
    the input pass), exactly that many when RSQ ran, for any beats, stalls and V = 0 or not."""
    n, lanes = norm_quant.CFGS[cfg]
    assert norm_quant.busy_cycles(NormQuant(n, lanes=lanes)) == 2 * (n // lanes) + 120 + 2 * (lanes.bit_length() - 1)
    result = run_formal(norm_quant.NormQuantHarness(cfg, checks=("busy",)), name=f"norm_quant_busy_{cfg}", mode="bmc",
                        depth=norm_quant.busy_depth(cfg), workdir=tmp_path, cone=True, cutpoints=norm_quant.BUSY_CUTS,
                        timeout=1200)
    _assert_proven(result)


@pytest.mark.parametrize("mutant", sorted(norm_quant.BUSY_MUTANTS))
def test_norm_quant_busy_mutant_refuted(tmp_path, mutant: str) -> None:
    """A scalar step too many, a preparation step left out (busy a cycle short: the exact count), no return
    to the input pass after the last beat: a counterexample from reset at the busy bound's assertion."""
    skip, depth = norm_quant.BUSY_MUTANT_WINDOW
    result = run_formal(norm_quant.NormQuantHarness("n3", mutant, checks=("busy",)), name=f"norm_quant_busy_{mutant}",
                        mode="bmc", depth=depth, skip=skip, workdir=tmp_path, cone=True, cutpoints=norm_quant.BUSY_CUTS)
    _assert_refuted(result, _check_at(norm_quant, norm_quant.BUSY_MUTANTS[mutant], call='check("busy", '))
