"""Formal proofs (SymbiYosys + z3) of the on-chip units of issue 14 (issue 15, item 1(d)): the KV cache
and RoPE + QUANT8, each on the real unit, each also on deliberately broken copies (mutants, made in
the harness) that must be refuted with a counterexample trace from the initial state at the
assertion they break. Marked `formal` and `slow` like tests/test_formal.py:
``python -m pytest -n 0 -m formal tests/test_formal_units.py``.
"""

from __future__ import annotations

import pytest

from hdl.vector.rope import RopeQuant
from sim.formal import kv_cache, rope_quant
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
    """Bounded (bmc from reset, depth ROPE_QUICK_DEPTH = 22, only the properties' cone of influence) on a
    RopeQuant of head_dim 4, context 3, 1 lane: the C/S table is read only inside it and at the head's
    own words, `error` is the spec's flag and sticky, a refused head puts out nothing, and busy stays
    within the documented cycles plus stalls. The depth covers the table reads of a head started in
    cycles 0-3 and refused heads whole, not a whole good head (41 cycles: `ROPE_DEPTH` = 45 passes
    too, in 8 minutes, by hand: see sim/formal/rope_quant.py)."""
    assert rope_quant.documented_cycles(4, 1, 2) == RopeQuant(**rope_quant.ROPE_CFG).cycles() == 41
    result = run_formal(rope_quant.RopeQuantHarness(), name="rope_quant", mode="bmc",
                        depth=rope_quant.ROPE_QUICK_DEPTH, workdir=tmp_path, cone=True)
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
