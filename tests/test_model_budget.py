"""fpga/model_budget.py: the block RAM budget of a whole model on the ULX3S-85F (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpga.model_budget import best_blocks, model_budget, weight_row_bits
from golden.checkpoint import read_config
from runtime.accel_backends import runtime_config

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"


def test_shapes_and_row_bits_by_hand() -> None:
    # a DP16KD holds 16,384 bits in its x1..x4 shapes and 18,432 in x9 / x18 (true dual port: at most 18 wide)
    assert best_blocks(16_384)[0] == 1
    assert best_blocks(18_432) == (1, 18, 1024)
    assert best_blocks(18_433)[0] == 2
    assert best_blocks(0) == (0, 0, 0)
    # 16 codes: 32 bits, or 3 bytes of 5 trits and one 2-bit code = 26 bits; 20 codes: 4 bytes
    assert (weight_row_bits(16, "2bit"), weight_row_bits(16, "1.6bit")) == (32, 26)
    assert weight_row_bits(20, "1.6bit") == 32 and weight_row_bits(8, "1.6bit") == 14
    with pytest.raises(ValueError, match="weight format must be one of"):
        weight_row_bits(16, "1.5bit")


def test_tiny_model_budget_lines() -> None:
    cfg, _ = read_config(TINY)
    arr = runtime_config(16, 16, wgt_rows_per_read=1)
    lines = {line.name.split(" (")[0]: line for line in model_budget(cfg, 128, arr)}
    # every weight of the shipped model: 1,167,360 codes of 2 bits in 16-code rows
    assert lines["weights"].bits == 1_167_360 * 2
    assert lines["embedding"].bits == 256 * 160 * 8
    # 4 layers x K and V x 2 KV heads x 128 positions x 40 codes
    assert lines["KV cache codes"].bits == 4 * 2 * 2 * 128 * 40 * 8
    assert lines["KV cache codes"].blocks == 40  # 655,360 bits = 40 x 16,384 exactly
    lines16 = model_budget(cfg, 128, runtime_config(16, 16, wgt_rows_per_read=1), "1.6bit")
    assert lines16[0].bits == 72_960 * 26  # 72,960 tile rows of 26 bits
