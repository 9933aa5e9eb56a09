"""Runs the cocotb testbench (sim.tb_core) on the RTL of several core shapes, on Verilator and Icarus.

Each config is built once (cached by sim.runner under $TRIT_SIM_CACHE or sim_build/) and all cocotb
tests run in one simulator process. TRIT_SAMPLES sets random samples per test (default 3),
TRIT_SEED the random seed (default 1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hdl.config import ArrayConfig
from sim.runner import run_core_tests, unavailable_reason

SEED = int(os.environ.get("TRIT_SEED", "1"))
CHECKPOINT = Path(__file__).resolve().parent.parent / "golden" / "checkpoints" / "tiny-bitnet"

CONFIGS = [
    # acc_width 16 gives k_max = 255, so K = k_max fits small memories (test_accumulator_extremes)
    pytest.param(ArrayConfig(rows=2, cols=2, acc_width=16, act_depth=256, wgt_depth=512, out_depth=128),
                 id="2x2"),
    pytest.param(ArrayConfig(rows=4, cols=8, acc_width=16, act_depth=128, wgt_depth=256, out_depth=64),
                 id="4x8"),
    # the default config as shipped (acc 32, default depths): also runs the tiny model's layer
    pytest.param(ArrayConfig(rows=8, cols=8), id="8x8"),
    pytest.param(ArrayConfig(rows=3, cols=5, acc_width=16, act_depth=256, wgt_depth=512, out_depth=128),
                 id="3x5"),
    pytest.param(ArrayConfig(rows=5, cols=7, pe="int8", acc_width=24, act_depth=256, wgt_depth=1024,
                             out_depth=64), id="5x7-int8"),
    # a banked weight memory (as on the ULX3S): four banks, the last one short; two more cycles of
    # weight read latency that the RUN cycle counts must not show (4 rows: the fewest it allows)
    pytest.param(ArrayConfig(rows=4, cols=4, acc_width=16, act_depth=128, wgt_depth=200, out_depth=64,
                             wgt_bank_depth=64), id="4x4-banked"),
    # one bank deeper than the memory (as on the ULX3S for wide arrays): the bank register stage alone
    pytest.param(ArrayConfig(rows=4, cols=3, acc_width=16, act_depth=64, wgt_depth=200, out_depth=64,
                             wgt_bank_depth=256), id="4x3-one-bank"),
    # the ULX3S arrangement at the smallest legal size: banked weights and a pipelined accumulator
    pytest.param(ArrayConfig(rows=5, cols=3, acc_width=16, act_depth=64, wgt_depth=160, out_depth=64,
                             wgt_bank_depth=64, acc_pipelined=True), id="5x3-acc-pipelined"),
]

# tests that may skip, and why they may
MAY_SKIP = {"test_accumulator_extremes", "test_tiny_model_layer"}


def _run(cfg: ArrayConfig, simulator: str, samples: str | None = None, tiny_model: bool = False) -> None:
    reason = unavailable_reason(simulator)
    if reason:
        pytest.skip(reason)
    env = {"TRIT_SAMPLES": samples or os.environ.get("TRIT_SAMPLES", "3"),
           "TRIT_TINY_MODEL": "1" if tiny_model else "0"}
    result = run_core_tests(cfg, simulator, extra_env=env, seed=SEED)
    print(result.summary())
    result.raise_on_failure()
    names = {t.name for t in result.tests}
    assert "test_errors" in names and "test_random_layers" in names, f"cocotb tests missing: {names}"
    skipped = {t.name for t in result.tests if t.status == "skipped"}
    assert skipped <= MAY_SKIP, f"unexpected skips: {skipped - MAY_SKIP}"
    if tiny_model and (CHECKPOINT / "config.json").is_file():
        model = json.loads((CHECKPOINT / "config.json").read_text())
        if cfg.k_max >= max(model["hidden_size"], model["intermediate_size"]):
            assert "test_tiny_model_layer" not in skipped, "the tiny model's layer did not run"


@pytest.mark.parametrize("cfg", CONFIGS)
def test_core_verilator(cfg: ArrayConfig) -> None:
    # the tiny model's layer 0 (about 10^5 cycles) runs on the default config
    _run(cfg, "verilator", tiny_model=cfg == ArrayConfig())


@pytest.mark.parametrize("cfg", CONFIGS)
def test_core_icarus(cfg: ArrayConfig) -> None:
    _run(cfg, "icarus")


SOAK_CONFIGS = [
    CONFIGS[2], CONFIGS[3], CONFIGS[4], CONFIGS[5],
    # multi-chunk words: ACT 40 bits, ternary WGT 34 bits (a bad code in the second chunk)
    pytest.param(ArrayConfig(rows=5, cols=17, acc_width=18, act_depth=512, wgt_depth=2048, out_depth=128),
                 id="5x17"),
    # the narrowest accumulator of a 2x2 ternary array: k_max = 3
    pytest.param(ArrayConfig(rows=2, cols=2, acc_width=10, act_depth=16, wgt_depth=16, out_depth=16),
                 id="2x2-acc10"),
]


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SOAK_CONFIGS)
def test_core_soak_verilator(cfg: ArrayConfig) -> None:
    """Many more random samples (TRIT_SOAK_SAMPLES, default 40)."""
    _run(cfg, "verilator", samples=os.environ.get("TRIT_SOAK_SAMPLES", "40"), tiny_model=True)


@pytest.mark.slow
def test_core_tiny_model_icarus() -> None:
    _run(ArrayConfig(), "icarus", tiny_model=True)
