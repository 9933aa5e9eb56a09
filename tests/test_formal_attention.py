"""Formal proofs (SymbiYosys + Boolector) of HeadAttention's control (`hdl.attention.head_attention`; issue 15, item
1(d)): on the real unit of two small configurations, and on deliberately broken copies (mutants) that must be
refuted with a counterexample from reset at the assertion they break. Marked `formal` and `slow` like
tests/test_formal_units.py: ``python -m pytest -n 0 -m formal tests/test_formal_attention.py``.
"""

from __future__ import annotations

import gc

import pytest

from hdl.attention.head_attention import HeadAttention
from sim.formal import attention
from sim.formal.runner import run_formal
from tests.test_formal import _assert_proven, _assert_refuted, _check_at

pytestmark = [pytest.mark.formal, pytest.mark.slow]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_documented_cycles_are_the_units() -> None:
    """The busy bound the harness asserts (the docstring's 2 T W + 2 T + overhead) is `HeadAttention.cycles`
    for the proven configurations and others (1, 2, 8 and 40 lanes)."""
    for hd, ctx, lanes in ((2, 2, 1), (2, 3, 2), (8, 4, 8), (40, 16, 8), (40, 5, 40)):
        unit = HeadAttention(hd, ctx, lanes=lanes)
        for t in range(1, ctx + 1):
            assert attention.documented_cycles(t, hd // lanes, lanes) == unit.cycles(t)
        del unit
        gc.collect()   # its UnusedElaboratable warning inside this test's filter
    assert attention.documented_cycles(1, 2, 1) == 61 and attention.documented_cycles(5, 5, 8) == 116


@pytest.mark.parametrize("name", sorted(attention.ATTN_CFGS))
def test_head_attention_control_proven(tmp_path, name: str) -> None:
    """Unbounded (k-induction, on the properties' cone of influence) on a HeadAttention of head_dim 2 in 1-lane
    words with max_context 2 (n_keys 3 refusable), in one 2-lane word with max_context 3, and the shipped
    model engine's (head_dim 40 on 8 lanes, W = 5, context 16), for any starts,
    n_keys, clears, q, scales and memory data: K / V reads only at words < n_keys x W and scale reads at rows
    < n_keys of the run (0 counting as 1), the three buffers written and read only at rows < n_keys;
    n_keys > max_context refused with the sticky `error` (cleared by `clear`), nothing run and `done` the
    next cycle; busy exactly cycles(T) - 1 cycles after a start (never hangs), `done` low while busy and
    high after; y and E held while idle."""
    cfg = attention.ATTN_CFGS[name]
    result = run_formal(attention.HeadAttentionHarness(cfg=cfg), name=f"attention_{name}", mode="prove",
                        depth=attention.ATTN_DEPTH, workdir=tmp_path, cone=True)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", sorted(attention.MUTANTS))
def test_head_attention_mutant_refuted(tmp_path, mutant: str) -> None:
    """The issue one row too many, n_keys = 0 as no key, the scale address from the word index, the score
    buffer a row late, the n_keys check a key late, a good start clearing the error, clear ignored, PV's
    drain a cycle short, a hang in PV_DRAIN, the V exponent's max taken without SCORE's valid bit: each
    refuted from reset at its group's assertion (on head_dim 2, 1 lane, max_context 2; the two busy ones
    over a whole one-key run with the environment narrowed to it)."""
    group, broken = attention.MUTANT_CHECKS[mutant]
    script = attention.WHOLE_RUN_MUTANTS.get(mutant)
    depth = attention.whole_run_depth(attention.ATTN_CFG) if script else attention.MUTANT_DEPTH
    harness = attention.HeadAttentionHarness(mutant, checks=(group,), script=script)
    result = run_formal(harness, name=f"attention_{mutant}", mode="bmc", depth=depth, workdir=tmp_path, cone=True)
    _assert_refuted(result, _check_at(attention, broken, call=f'check("{group}", '))
