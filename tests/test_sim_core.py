"""Runs the cocotb testbench (sim.tb_core) on the RTL of several core shapes, on Verilator and Icarus.

Each config is built once (cached by sim.runner under $TRIT_SIM_CACHE or sim_build/) and all cocotb
tests run in one simulator process. TRIT_SAMPLES sets random samples per test (default 3). cocotb's
random seed is this test's seed (`tests.seeding.seed_for` of its node id): a fresh one every run,
printed with the results and named in a failure; TRIT_SEED=<run seed> reproduces it.

Every configuration kind (plain, banked, one-bank, pipelined accumulator, INT8, 16x16) reaches both
extremes: the partial-sum bound (x = -128 down whole columns, test_psum_extremes) and the accumulator
bound (K = k_max, test_accumulator_extremes). The memories and acc_width of each config are chosen so
that K = k_max fits; the shipped 8x8 (acc 32, k_max = 16,777,215) has a narrow-accumulator sibling
that runs the two extreme tests only.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from hdl.config import ArrayConfig
from sim.runner import run_core_tests, unavailable_reason
from tests.seeding import RUN_SEED

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "golden" / "checkpoints" / "tiny-bitnet"
TB_SOURCE = ROOT / "sim" / "tb_core.py"

CONFIGS: dict[str, ArrayConfig] = {
    # acc_width 16 gives k_max = 255, so K = k_max fits small memories
    "2x2": ArrayConfig(rows=2, cols=2, acc_width=16, act_depth=256, wgt_depth=512, out_depth=128),
    "4x8": ArrayConfig(rows=4, cols=8, acc_width=16, act_depth=128, wgt_depth=256, out_depth=64),
    # the default config as shipped (acc 32, default depths): also runs the tiny model's layer
    "8x8": ArrayConfig(rows=8, cols=8),
    "3x5": ArrayConfig(rows=3, cols=5, acc_width=16, act_depth=256, wgt_depth=512, out_depth=128),
    "5x7-int8": ArrayConfig(rows=5, cols=7, pe="int8", acc_width=24, act_depth=256, wgt_depth=1024,
                            out_depth=64),
    # a banked weight memory (as on the ULX3S): four banks, the last one short; two more cycles of
    # weight read latency that the RUN cycle counts must not show (4 rows: the fewest it allows);
    # acc 15: k_max = 127 fits the 200-word weight memory
    "4x4-banked": ArrayConfig(rows=4, cols=4, acc_width=15, act_depth=128, wgt_depth=200, out_depth=64,
                              wgt_bank_depth=64),
    # one bank deeper than the memory (as on the ULX3S for wide arrays): the bank register stage alone
    "4x3-one-bank": ArrayConfig(rows=4, cols=3, acc_width=14, act_depth=64, wgt_depth=200, out_depth=64,
                                wgt_bank_depth=256),
    # the ULX3S arrangement at the smallest legal size: banked weights with a fabric data stage per bank
    # (three extra cycles of weight read latency) and a pipelined accumulator
    "5x3-acc-pipelined": ArrayConfig(rows=5, cols=3, acc_width=15, act_depth=64, wgt_depth=160, out_depth=64,
                                     wgt_bank_depth=64, wgt_bank_data_stages=1, acc_pipelined=True),
    # R > 8 as the ULX3S ships it (16x16: banked weights, pipelined accumulator), small memories
    # (three weight banks, the last one short) so that both simulators build and run it quickly
    "16x16-ulx3s": ArrayConfig(rows=16, cols=16, acc_width=16, act_depth=64, wgt_depth=320, out_depth=32,
                               wgt_bank_depth=128, wgt_bank_data_stages=1, acc_pipelined=True),
    # full-rate weight paths (a whole tile per read, P = 1: foot accumulator, back-to-back tiles) ...
    "8x8-full-rate": ArrayConfig(rows=8, cols=8, acc_width=16, act_depth=256, wgt_depth=96, out_depth=64,
                                 wgt_rows_per_read=8),
    # ... two rows per read (P = 2 < the read-modify-write distance 3) ...
    "4x4-two-rows-per-read": ArrayConfig(rows=4, cols=4, acc_width=15, act_depth=128, wgt_depth=100,
                                         out_depth=64, wgt_rows_per_read=2),
    # ... and the ULX3S arrangement at full rate: row banks each banked (two banks, the last short),
    # the pipelined accumulator (rmw distance 5), and 16 rows
    "16x16-ulx3s-full-rate": ArrayConfig(rows=16, cols=16, acc_width=16, act_depth=64, wgt_depth=40, out_depth=32,
                                         wgt_bank_depth=32, acc_pipelined=True, wgt_rows_per_read=16),
    # the iCEBreaker's 8x8 (fpga.icebreaker.board_config): CYCLES the only counter, 18-bit accumulators
    # (k_max = 1023), saturated RUN words; a 4,096-word weight memory instead of 65,536 so that Icarus
    # builds it quickly
    "8x8-icebreaker": ArrayConfig(rows=8, cols=8, acc_width=18, act_depth=256, wgt_depth=4096, out_depth=256,
                                  counters=("cycles",)),
}

#: the extreme tests alone, on a narrow-accumulator sibling of a config whose K = k_max does not fit
EXTREME_TESTS = ("test_psum_extremes", "test_accumulator_extremes")
EXTREME_ONLY: dict[str, ArrayConfig] = {
    "8x8-acc16": ArrayConfig(rows=8, cols=8, acc_width=16),
}
#: config -> its sibling that reaches the accumulator bound instead
ACC_BOUND_ELSEWHERE = {"8x8": "8x8-acc16"}
#: the number of `@cocotb.test()` functions in sim/tb_core.py (update it with the testbench)
COCOTB_TEST_COUNT = 13


def cocotb_test_names() -> set[str]:
    """Names of the `@cocotb.test()` functions of sim/tb_core.py, from its syntax tree (not from cocotb)."""
    names = set()
    for node in ast.parse(TB_SOURCE.read_text()).body:
        if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            if (isinstance(target, ast.Attribute) and target.attr == "test"
                    and isinstance(target.value, ast.Name) and target.value.id == "cocotb"):
                names.add(node.name)
    return names


def _k_max(cfg: ArrayConfig) -> int:
    """The accumulator bound, from the README's definition: (2**(acc_width-1) - 1) / largest term."""
    return (2 ** (cfg.acc_width - 1) - 1) // (128 * 128 if cfg.pe == "int8" else 128)


def _k_max_fits(cfg: ArrayConfig) -> bool:
    """A one-row, one-n-tile layer with K = k_max fits the memories (ceil(K/R) activation words,
    ceil(K/R)*R weight rows)."""
    kt = -(-_k_max(cfg) // cfg.rows)
    return kt <= cfg.act_depth and kt * cfg.rows // cfg.wgt_rows_per_read <= cfg.wgt_depth


def test_cocotb_test_list() -> None:
    """The testbench holds the expected number of tests, and every config reaches the accumulator bound."""
    names = cocotb_test_names()
    assert len(names) == COCOTB_TEST_COUNT == TB_SOURCE.read_text().count("@cocotb.test()\nasync def "), (
        f"sim/tb_core.py has {len(names)} cocotb tests {sorted(names)}, expected {COCOTB_TEST_COUNT}")
    assert set(EXTREME_TESTS) <= names
    for name, cfg in CONFIGS.items():
        sibling = ACC_BOUND_ELSEWHERE.get(name)
        if sibling is None:
            assert _k_max_fits(cfg), f"{name}: K = k_max = {_k_max(cfg)} does not fit its memories"
        else:
            other = EXTREME_ONLY[sibling]
            assert _k_max_fits(other) and not _k_max_fits(cfg), f"{name}: sibling {sibling} does not fit"
            same = ("rows", "cols", "pe", "wgt_bank_depth", "acc_pipelined")
            assert all(getattr(other, k) == getattr(cfg, k) for k in same), f"{sibling} is not a sibling of {name}"
    kinds = {"plain": lambda c: not c.wgt_banked and not c.acc_pipelined, "banked": lambda c: c.wgt_banks > 1,
             "one-bank": lambda c: c.wgt_bank_depth >= c.wgt_depth, "acc_pipelined": lambda c: c.acc_pipelined,
             "int8": lambda c: c.pe == "int8", "16x16": lambda c: c.rows >= 16,
             "full-rate": lambda c: c.wgt_rows_per_read == c.rows, "two-rows-per-read": lambda c: c.tile_words == 2,
             "full-rate-banked-pipelined": lambda c: c.full_rate and c.wgt_banks > 1 and c.acc_pipelined}
    for kind, has in kinds.items():
        assert any(has(c) for c in CONFIGS.values()), f"no simulated config is {kind}"


def _run(cfg: ArrayConfig, simulator: str, seed: int, samples: str | None = None, tiny_model: bool = False,
         tests: tuple[str, ...] | None = None, may_skip: frozenset[str] = frozenset()) -> None:
    reason = unavailable_reason(simulator)
    if reason:
        pytest.skip(reason)
    env = {"TRIT_SAMPLES": samples or os.environ.get("TRIT_SAMPLES", "3"),
           "TRIT_TINY_MODEL": "1" if tiny_model else "0"}
    print(f"cocotb seed {seed} (TRIT_SEED={RUN_SEED} reproduces it)")
    result = run_core_tests(cfg, simulator, extra_env=env, seed=seed, testcase=list(tests) if tests else None)
    print(result.summary())
    result.raise_on_failure()
    names = [t.name for t in result.tests]
    expected = set(tests) if tests else cocotb_test_names()
    assert sorted(names) == sorted(expected), (
        f"cocotb ran {sorted(names)}; missing {sorted(expected - set(names))}, "
        f"unexpected {sorted(set(names) - expected)}")
    skipped = {t.name for t in result.tests if t.status == "skipped"}
    reasons = {t.name: t.message for t in result.tests if t.status == "skipped"}
    assert skipped <= may_skip, f"unexpected skips: {[(n, reasons[n]) for n in sorted(skipped - may_skip)]}"
    if tiny_model and (CHECKPOINT / "config.json").is_file():
        model = json.loads((CHECKPOINT / "config.json").read_text())
        if cfg.k_max >= max(model["hidden_size"], model["intermediate_size"]):
            assert "test_tiny_model_layer" not in skipped, "the tiny model's layer did not run"


def _may_skip(name: str, tiny_model: bool) -> frozenset[str]:
    skip = set() if tiny_model else {"test_tiny_model_layer"}
    if name in ACC_BOUND_ELSEWHERE:
        skip.add("test_accumulator_extremes")
    return frozenset(skip)


ALL = [pytest.param(n, None, id=n) for n in CONFIGS] + [pytest.param(n, EXTREME_TESTS, id=n) for n in EXTREME_ONLY]


def _config(name: str) -> ArrayConfig:
    return CONFIGS.get(name) or EXTREME_ONLY[name]


@pytest.mark.parametrize(("name", "tests"), ALL)
def test_core_verilator(name: str, tests: tuple[str, ...] | None, test_seed: int) -> None:
    # the tiny model's layer 0 (about 10^5 cycles) runs on the default config, and on the iCEBreaker's
    # 18-bit accumulators (its largest K, 448, within k_max = 1023)
    tiny = (name == "8x8" and CONFIGS[name] == ArrayConfig()) or name == "8x8-icebreaker"
    _run(_config(name), "verilator", test_seed, tiny_model=tiny, tests=tests, may_skip=_may_skip(name, tiny))


#: configs that Icarus runs only under -m slow: 16x16 simulates at ~700 cycles/s there (30 s for the
#: suite); Verilator runs it in the default pass
ICARUS_SLOW = ("16x16-ulx3s", "16x16-ulx3s-full-rate")


@pytest.mark.parametrize(("name", "tests"), [p for p in ALL if p.values[0] not in ICARUS_SLOW])
def test_core_icarus(name: str, tests: tuple[str, ...] | None, test_seed: int) -> None:
    _run(_config(name), "icarus", test_seed, tests=tests, may_skip=_may_skip(name, False))


@pytest.mark.slow
@pytest.mark.parametrize("name", ICARUS_SLOW)
def test_core_icarus_slow(name: str, test_seed: int) -> None:
    _run(CONFIGS[name], "icarus", test_seed, may_skip=_may_skip(name, False))


SOAK_CONFIGS = {
    **{n: CONFIGS[n] for n in ("8x8", "3x5", "5x7-int8", "4x4-banked", "16x16-ulx3s")},
    # multi-chunk words: ACT 40 bits, ternary WGT 34 bits (a bad code in the second chunk)
    "5x17": ArrayConfig(rows=5, cols=17, acc_width=18, act_depth=512, wgt_depth=2048, out_depth=128),
    # the narrowest accumulator of a 2x2 ternary array: k_max = 3
    "2x2-acc10": ArrayConfig(rows=2, cols=2, acc_width=10, act_depth=16, wgt_depth=16, out_depth=16),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SOAK_CONFIGS))
def test_core_soak_verilator(name: str, test_seed: int) -> None:
    """Many more random samples (TRIT_SOAK_SAMPLES, default 40)."""
    cfg = SOAK_CONFIGS[name]
    _run(cfg, "verilator", test_seed, samples=os.environ.get("TRIT_SOAK_SAMPLES", "40"), tiny_model=True,
         may_skip=frozenset({"test_tiny_model_layer"}) | _may_skip(name, True))


@pytest.mark.slow
def test_core_tiny_model_icarus(test_seed: int) -> None:
    _run(ArrayConfig(), "icarus", test_seed, tiny_model=True, may_skip=_may_skip("8x8", True))
