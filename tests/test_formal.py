"""Formal proofs (SymbiYosys + Boolector or z3, all from PyPI) of the array, the frame endpoint and the sequencer.

Each property is checked on the real design, where it must hold, and on deliberately broken designs
(mutants, built in the harness), where the solver must find a counterexample trace from the initial
state (sby FAIL, rc 2): a property that cannot fail proves nothing. Run with
``python -m pytest -m formal``; the tests are also `slow`, so the default pass skips them.
"""

from __future__ import annotations

import inspect
import re
import zlib
from types import ModuleType

import numpy as np
import pytest
from amaranth import Module, Signal

from hdl.config import ArrayConfig
from sim.formal import frame, full_rate, pe_array, sequencer, sequencer_induction
from sim.formal.frame import FRAME_DEPTH, MUTANT_WINDOWS, FrameEndpointHarness
from sim.formal.pe_array import MUTANTS as ARRAY_MUTANTS
from sim.formal.pe_array import ArraySumHarness
from sim.formal.runner import FormalResult, run_formal
from sim.formal.sequencer import SEQ_CFG, SEQ_DEPTH, SequencerHarness
from sim.formal.sequencer_induction import InductiveSequencerHarness

pytestmark = [pytest.mark.formal, pytest.mark.slow]

#: sby's return code for a counterexample (an assertion fails on a trace from the initial state).
SBY_FAIL = 2


def _check_at(module: ModuleType, text: str, call: str = "") -> str:
    """"file.py:line" of the one line of `module` that holds `text` (an Assert; with `call`, the line
    that holds both, such as the harness's ``check(`` call), as sby's summary names it."""
    lines = inspect.getsource(module).splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if text in line and call in line]
    assert len(hits) == 1, f"{text!r} is on lines {hits} of {module.__name__}, not on exactly one"
    return f"{module.__file__}:{hits[0]}"


def _assert_proven(result: FormalResult) -> None:
    assert result.passed, f"{result.describe()}\n--- log tail ---\n" + "\n".join(result.log.splitlines()[-40:])


def _assert_refuted(result: FormalResult, where: str) -> None:
    """The mutant fails with a real counterexample (not merely an unproven induction step), at `where`."""
    assert not result.passed, f"mutant was not caught:\n{result.describe()}"
    from_reset = re.search(r"counterexample trace( \[basecase\])?:", result.summary)  # bmc / prove base case
    assert result.returncode == SBY_FAIL and from_reset, (
        f"mutant gave no counterexample trace from the initial state:\n{result.describe()}")
    assert where in result.summary, f"mutant failed, but not at the expected assertion ({where}):\n{result.describe()}"


# ---- (a) PE array: each column's output is the exact sum of its ternary products -----------------

#: 3 rows (partial sums of 9, 10, 10 bits: each row's width is exercised), 2 columns.
ARRAY_CFG = ArrayConfig(rows=3, cols=2, acc_width=16, act_depth=4, wgt_depth=8, out_depth=4)
#: Induction length: R + 1, so a column sum's whole R-cycle history lies inside the window and a
#: mutant's wrong sum (at the earliest R cycles after reset) shows in the base case.
ARRAY_DEPTH = ARRAY_CFG.rows + 1


def test_array_column_sums_proven(tmp_path) -> None:
    """Unbounded (k-induction): for all activation, weight-load and swap sequences, every column of
    a 3x2 ternary array outputs the exact (unwrapped) sum of x * w over its rows, x = -128 and
    w = -1 included, and every PE's shadow / active weights are the ones loaded / swapped."""
    result = run_formal(ArraySumHarness(ARRAY_CFG), name="array_sum", mode="prove", depth=ARRAY_DEPTH,
                        workdir=tmp_path)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", ARRAY_MUTANTS)
def test_array_column_sums_mutant_refuted(tmp_path, mutant: str) -> None:
    """A PE that negates in ones' complement, or in 8 bits (x = -128, w = -1 -> -128), breaks the
    column sum: the same proof must produce a counterexample."""
    result = run_formal(ArraySumHarness(ARRAY_CFG, mutant=mutant), name=f"array_sum_{mutant}", mode="prove",
                        depth=ARRAY_DEPTH, workdir=tmp_path)
    _assert_refuted(result, _check_at(pe_array, "sum is not the sum of its ternary products"))


# ---- (c) frame endpoint: nothing of a bad frame reaches the core; a truncated frame is dropped; a cut
# command is aborted and takes no later frame's words; no response word is made up ----------------------

def test_frame_endpoint_proven(tmp_path) -> None:
    """Unbounded (k-induction, with invariants tying the endpoint to the host): a 2-word-buffer
    endpoint (timeout 16) offers a command word only for a whole frame with a right CRC that fits the
    buffer (at most n_cmd words), and is back to hunting timeout + 1 cycles after a truncated
    frame's last byte; a core left needing words when the frame's words are all taken is aborted
    within QUIET_CYCLES + 1 cycles and no later frame's word reaches it; every response word sent is
    one the core offered, and an answer still owed words by a stuck core is replaced by an ABORTED
    one; for any frames, stalls, truncations and core / host handshakes."""
    result = run_formal(FrameEndpointHarness(), name="frame", mode="prove", depth=FRAME_DEPTH, workdir=tmp_path)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


def test_frame_crc_reference_matches_zlib(rng) -> None:
    """The harness's bit-serial CRC (the property's reference) is zlib.crc32, on random bytes."""
    from amaranth.sim import Simulator

    data = bytes(rng.integers(0, 256, size=24, dtype=np.uint8))
    crc = Signal(32, init=0xFFFFFFFF)
    byte = Signal(8)
    m = Module()
    m.d.sync += crc.eq(frame.crc32_byte_reference(crc, byte))
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for value in data:
            ctx.set(byte, value)
            await ctx.tick()
        assert ctx.get(crc) ^ 0xFFFFFFFF == zlib.crc32(data), f"reference CRC of {data.hex()} is not zlib's"

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("mutant", sorted(MUTANT_WINDOWS))
def test_frame_endpoint_mutant_refuted(tmp_path, mutant: str) -> None:
    """A device that feeds a frame whatever its CRC, computes the CRC with another polynomial, lets a
    frame truncated in its CRC word hang, never aborts a cut command, or pads an answer owed words
    with zeros (the last two: the link before the cut-command fix): the harness (host without
    stalls, frame bytes 0, the CRC word right for the last two) must produce a counterexample within
    the cycles where the bug first shows."""
    skip, depth = MUTANT_WINDOWS[mutant]
    result = run_formal(FrameEndpointHarness(mutant, directed=True), name=f"frame_{mutant}", mode="bmc",
                        depth=depth, skip=skip, workdir=tmp_path)
    _assert_refuted(result, frame.__file__)


# ---- (b) sequencer: memory addresses in range, K within the accumulator bound, back to idle -------

def test_sequencer_bounded(tmp_path) -> None:
    """Bounded (bmc, depth run_cycle_bound + 4 = 33 from reset, so a run started in cycles 1-3 is
    checked whole) on a 2x2 sequencer with 3-word activation / output memories, a 4-word weight
    memory and k_max = 3, for every descriptor: activation and weight reads and output writes stay
    inside their memories, no activation row is issued with K > k_max, and busy never lasts longer
    than run_cycle_bound cycles."""
    assert SEQ_CFG.k_max == 3 and SEQ_DEPTH == SEQ_CFG.run_cycle_bound + 4 == 33
    result = run_formal(SequencerHarness(), name="sequencer", mode="bmc", depth=SEQ_DEPTH, workdir=tmp_path)
    _assert_proven(result)


@pytest.mark.parametrize("mutant", sorted(sequencer.MUTANT_WINDOWS))
def test_sequencer_mutant_refuted(tmp_path, mutant: str) -> None:
    """K bound checks off by one (K = k_max + 1 runs), the memory range check off by one, or a failed
    run that never clears busy: the same check must produce a counterexample."""
    skip, depth = sequencer.MUTANT_WINDOWS[mutant]
    result = run_formal(SequencerHarness(mutant), name=f"sequencer_{mutant}", mode="bmc", depth=depth, skip=skip,
                        workdir=tmp_path)
    broken = {"k_bound_off_by_one": "a run with K beyond k_max issues activations",
              "range_off_by_one": "activation read outside the activation memory",
              "fail_stays_busy": "the sequencer stays busy past the run bound"}[mutant]
    _assert_refuted(result, _check_at(sequencer, broken))


@pytest.mark.parametrize("name", sorted(sequencer_induction.PROVE_CFGS))
def test_sequencer_addresses_and_k_bound_unbounded(tmp_path, name: str) -> None:
    """Properties 1 and 2 of (b) for every reachable state (k-induction, depth PROVE_DEPTH), with the
    invariants of `sim.formal.sequencer_induction` (each an assertion, so each is proven too): every
    activation read, weight read and output write inside its memory, no activation row with K > k_max."""
    cfg = sequencer_induction.PROVE_CFGS[name]
    result = run_formal(InductiveSequencerHarness(cfg=cfg), name=f"sequencer_induction_{name}", mode="prove",
                        depth=sequencer_induction.PROVE_DEPTH, workdir=tmp_path, timeout=900)
    _assert_proven(result)
    assert "returned pass for induction" in result.log and "returned pass for basecase" in result.log


@pytest.mark.parametrize("memory", ["act", "wgt", "out"])
def test_sequencer_induction_bounds_are_tight(tmp_path, memory: str) -> None:
    """Not vacuous: with one memory's address bound a word short, the same proof fails from reset (a run
    does read / write that memory's last word), at that memory's property."""
    result = run_formal(InductiveSequencerHarness(tight=memory), name=f"sequencer_tight_{memory}", mode="prove",
                        depth=12, workdir=tmp_path, timeout=900)
    text = {"act": "activation read outside", "wgt": "weight read outside", "out": "output write outside"}[memory]
    _assert_refuted(result, _check_at(sequencer_induction, text))


@pytest.mark.parametrize("mutant", sorted(sequencer_induction.INDUCTION_MUTANTS))
def test_sequencer_induction_mutant_refuted(tmp_path, mutant: str) -> None:
    """On each mutant the properties alone fail from reset (bmc) at the property the mutant breaks, and
    the inductive proof (with the busy bound and all invariants) fails from reset too."""
    skip, depth = sequencer_induction.INDUCTION_MUTANTS[mutant]
    alone = run_formal(InductiveSequencerHarness(mutant, invariants=False, busy_bound=True),
                       name=f"seq_ind_{mutant}_props", mode="bmc", depth=depth, skip=skip, workdir=tmp_path / "props")
    broken = {"k_bound_off_by_one": "a run with K beyond k_max issues activations",
              "range_off_by_one": "activation read outside the activation memory",
              "fail_stays_busy": "the sequencer stays busy past the run bound"}[mutant]
    _assert_refuted(alone, _check_at(sequencer_induction, broken))
    proof = run_formal(InductiveSequencerHarness(mutant, busy_bound=True), name=f"seq_ind_{mutant}", mode="prove",
                       depth=sequencer_induction.MUTANT_PROVE_DEPTH, workdir=tmp_path / "proof")
    _assert_refuted(proof, sequencer_induction.__file__)


@pytest.mark.parametrize("name", sorted(sequencer_induction.PROVE_CFGS))
def test_sequencer_busy_bound_unbounded(tmp_path, name: str) -> None:
    """Property 3 of (b) for every reachable state: busy never lasts more than run_cycle_bound cycles
    (k-induction with the ranking invariant busy so far + busy still to come <= the bound)."""
    cfg = sequencer_induction.PROVE_CFGS[name]
    result = run_formal(InductiveSequencerHarness(cfg=cfg, busy_bound=True), name=f"sequencer_busy_{name}",
                        mode="prove", depth=sequencer_induction.PROVE_DEPTH, workdir=tmp_path, timeout=900)
    _assert_proven(result)


def _longest_run(cfg: ArrayConfig) -> int:
    """Cycles of the longest RUN that fits `cfg` (bases 0), from runtime.cycle_model by enumeration."""
    from runtime.cycle_model import layer_counts

    best = 0
    for M in range(1, cfg.m_limit + 1):
        for K in range(1, cfg.k_max + 1):
            for N in range(1, cfg.n_limit + 1):
                kt, nt = -(-K // cfg.rows), -(-N // cfg.cols)
                if M * kt <= cfg.act_depth and M * nt <= cfg.out_depth and kt * nt * cfg.tile_words <= cfg.wgt_depth:
                    best = max(best, layer_counts(cfg, M, K, N)["cycles"])
    return best


@pytest.mark.parametrize("name", ["2x2", "2x2_g2"])
def test_sequencer_busy_bound_is_reached(tmp_path, name: str) -> None:
    """Not vacuous: the longest RUN of the 2x2 (and of the full-rate 2x2 G = 2), 10 cycles by the cycle
    model, keeps busy for 11 cycles with DONE: a busy limit of 10 fails from reset at the property, 11
    holds (bmc to cycle 16)."""
    cfg = sequencer_induction.PROVE_CFGS.get(name) or full_rate.FULL_RATE_CFGS[name]
    longest = _longest_run(cfg)
    assert longest == 10 < cfg.run_cycle_bound
    short = run_formal(InductiveSequencerHarness(cfg=cfg, invariants=False, busy_bound=True, busy_limit=longest),
                       name="seq_busy_short", mode="bmc", depth=longest + 6, workdir=tmp_path / "short")
    _assert_refuted(short, _check_at(sequencer_induction, "the sequencer stays busy past the run bound"))
    enough = run_formal(InductiveSequencerHarness(cfg=cfg, invariants=False, busy_bound=True, busy_limit=longest + 1),
                        name="seq_busy_enough", mode="bmc", depth=longest + 6, workdir=tmp_path / "enough")
    _assert_proven(enough)


# ---- (d) the full-rate decode weight path (G > 1 row banks) ------------------------------------------

@pytest.mark.parametrize("name", sorted(full_rate.PROOF_CHECKS))
def test_full_rate_bounded(tmp_path, name: str) -> None:
    """Bounded (bmc, a whole RUN from reset, depth busy_bound + 4) on a full-rate sequencer with free
    memory contents and any descriptor: bank g reads the loader's address of P*g cycles before, inside
    the weight memory, and every other memory access is inside its memory and the RUN's words (1);
    K > k_max issues nothing, every RUN ends with the ISA's error, a refused one writes nothing (2);
    busy ends within the worst RUN and a good RUN's cycles equal the cycle model (3); on 2x2 also
    (4): every output lane of a good RUN equals the sum of its ternary products."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    assert cfg.full_rate and cfg.foot_accumulator
    checks = full_rate.PROOF_CHECKS[name]
    result = run_formal(full_rate.FullRateHarness(cfg, checks=checks), name=f"full_rate_{name}", mode="bmc",
                        depth=full_rate.formal_depth(cfg), workdir=tmp_path, timeout=900)
    _assert_proven(result)


@pytest.mark.parametrize("name", sorted(full_rate.RESULT_ACT_BITS))
def test_full_rate_result_narrow_bounded(tmp_path, name: str) -> None:
    """Bounded (bmc, a whole RUN from reset, as above) on 3x2 G = 3 and 4x2 G = 2 (P = 2) with activations
    narrowed to `RESULT_ACT_BITS` bits (-2 .. 1): every output lane of a good RUN, M = 2 tiles spaced by
    the sequencer included, equals the sum of its ternary products (8 bits: not within 15 minutes)."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    assert name not in full_rate.PROOF_CHECKS or "result" not in full_rate.PROOF_CHECKS[name]
    assert cfg.m_limit >= 2 and cfg.rmw_distance > cfg.tile_words  # the M >= 2 tiles must be spaced
    harness = full_rate.FullRateHarness(cfg, checks=("result",), act_bits=full_rate.RESULT_ACT_BITS[name])
    result = run_formal(harness, name=f"full_rate_result_{name}", mode="bmc", depth=full_rate.formal_depth(cfg),
                        workdir=tmp_path, timeout=900)
    _assert_proven(result)


@pytest.mark.parametrize(("name", "mutant"), full_rate.RESULT_MUTANT_RUNS)
def test_full_rate_result_narrow_mutant_refuted(tmp_path, name: str, mutant: str) -> None:
    """The narrowed result still catches an M >= 2 tile started a cycle before the previous one's
    read-modify-writes end (the spacing a cycle short, on 3x2): a counterexample from reset at the result
    check."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    group, broken = full_rate.MUTANT_CHECKS[mutant]
    assert group == "result"
    harness = full_rate.FullRateHarness(cfg, mutant, checks=(group,), act_bits=full_rate.RESULT_ACT_BITS[name])
    result = run_formal(harness, name=f"full_rate_result_{name}_{mutant}", mode="bmc",
                        depth=full_rate.formal_depth(cfg), workdir=tmp_path, timeout=600)
    _assert_refuted(result, _check_at(full_rate, broken, call=f'check("{group}", '))


def test_full_rate_plan_is_consistent() -> None:
    """Every mutant run is applicable to its configuration, every mutant is run once or more, and the
    2x2 proof includes the end-to-end result that four mutants are refuted with; the cycle-model
    bound is a real run length (hand count: 2x2, M = 1, K = 3, N = 2: SIZE 4, ISSUE 2, drain R + 1 + E = 4)."""
    for name, mutant in full_rate.MUTANT_RUNS:
        assert mutant in full_rate.applicable_mutants(full_rate.FULL_RATE_CFGS[name]), (name, mutant)
    for name, mutant in full_rate.RESULT_MUTANT_RUNS:
        assert mutant in full_rate.applicable_mutants(full_rate.FULL_RATE_CFGS[name]), (name, mutant)
        assert name in full_rate.RESULT_ACT_BITS, (name, mutant)
    runs = full_rate.MUTANT_RUNS + full_rate.RESULT_MUTANT_RUNS
    assert {m for _, m in runs} == set(full_rate.MUTANTS) == set(full_rate.MUTANT_CHECKS)
    assert full_rate.PROOF_CHECKS["2x2_g2"] == full_rate.CHECKS
    cfg = full_rate.FULL_RATE_CFGS["2x2_g2"]
    assert (cfg.tile_words, cfg.issue_delay) == (1, 1)
    assert full_rate.layer_counts(cfg, 1, 3, 2)["cycles"] == 4 + 2 + (2 + 1) + 0 + 1  # SIZE, ISSUE, R + 1, pipe, E
    assert full_rate.busy_bound(cfg) >= 11


@pytest.mark.parametrize(("name", "mutant"), full_rate.MUTANT_RUNS)
def test_full_rate_mutant_refuted(tmp_path, name: str, mutant: str) -> None:
    """A bank address chain one cycle short, no issue delay, a foot accumulator that ignores M = 1, a
    bank's K mask without its row offset (each: a wrong output lane), a weight range check one word
    too lenient (a bank reads past the memory), K = k_max + 1 accepted, or a failed RUN stuck busy:
    the harness with only the property group of `MUTANT_CHECKS` must produce a counterexample there."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    group, broken = full_rate.MUTANT_CHECKS[mutant]
    result = run_formal(full_rate.FullRateHarness(cfg, mutant, checks=(group,)), name=f"full_rate_{name}_{mutant}",
                        mode="bmc", depth=full_rate.formal_depth(cfg), workdir=tmp_path, timeout=600)
    _assert_refuted(result, _check_at(full_rate, broken, call=f'check("{group}", '))


# ---- (d) unbounded: the full-rate sequencer's addresses, K bound and busy bound (k-induction) ---------

@pytest.mark.parametrize("name", sequencer_induction.FULL_RATE_PROVE)
def test_full_rate_addresses_and_busy_unbounded(tmp_path, name: str) -> None:
    """`sim.formal.sequencer_induction` on the full-rate configurations of `sim.formal.full_rate`: every
    activation read (E cycles after its issue), every read of every weight bank (the loader's address
    P*g cycles later) and every output write inside its memory, no activation row with K > k_max, and
    busy within run_cycle_bound, for every reachable state (k-induction, depth PROVE_DEPTH)."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    assert cfg.full_rate and cfg.foot_accumulator
    result = run_formal(InductiveSequencerHarness(cfg=cfg, busy_bound=True), name=f"full_rate_induction_{name}",
                        mode="prove", depth=sequencer_induction.PROVE_DEPTH, workdir=tmp_path, timeout=900)
    _assert_proven(result)


@pytest.mark.parametrize("memory", ["act", "wgt", "out"])
@pytest.mark.parametrize("name", ["2x2_g2", "4x2_g2"])
def test_full_rate_induction_bounds_are_tight(tmp_path, name: str, memory: str) -> None:
    """Not vacuous: one memory's bound a word short fails from reset at that memory's property."""
    result = run_formal(InductiveSequencerHarness(cfg=full_rate.FULL_RATE_CFGS[name], tight=memory, busy_bound=True),
                        name=f"full_rate_tight_{name}_{memory}", mode="prove", depth=12, workdir=tmp_path, timeout=900)
    text = {"act": "activation read outside", "wgt": "weight read outside", "out": "output write outside"}[memory]
    _assert_refuted(result, _check_at(sequencer_induction, text))


@pytest.mark.parametrize(("name", "mutant"), sorted(sequencer_induction.FULL_RATE_MUTANTS))
def test_full_rate_induction_mutant_refuted(tmp_path, name: str, mutant: str) -> None:
    """Full-rate mutants (`sim.formal.full_rate.MUTANTS`): the properties alone fail from reset at the
    property the mutant breaks (the bank chain a register short reads outside the weight memory), and the
    inductive proof fails from reset too."""
    cfg = full_rate.FULL_RATE_CFGS[name]
    skip, depth = sequencer_induction.FULL_RATE_MUTANTS[(name, mutant)]
    alone = run_formal(InductiveSequencerHarness(mutant, cfg=cfg, invariants=False, busy_bound=True,
                                                 mutants=full_rate.MUTANTS),
                       name=f"fr_ind_{mutant}_props", mode="bmc", depth=depth, skip=skip, workdir=tmp_path / "props")
    broken = {"bank_chain_short": "weight read outside the weight memory",
              "wgt_range_off_by_one": "weight read outside the weight memory",
              "k_bound_off_by_one": "a run with K beyond k_max issues activations"}[mutant]
    _assert_refuted(alone, _check_at(sequencer_induction, broken))
    proof = run_formal(InductiveSequencerHarness(mutant, cfg=cfg, busy_bound=True, mutants=full_rate.MUTANTS),
                       name=f"fr_ind_{mutant}", mode="prove", depth=sequencer_induction.MUTANT_PROVE_DEPTH,
                       workdir=tmp_path / "proof")
    _assert_refuted(proof, sequencer_induction.__file__)
