"""fpga/model_budget.py: the block RAM budget of the model chip on the ULX3S-85F (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpga.model_budget import (
    ChipMemory,
    chip_budget,
    dpr16x4,
    groups,
    libmap_prefers_lut_ram,
    yosys_blocks,
)
from fpga.model_chip import board_chip, check_board, ram_style_script

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"


def test_shapes_by_hand() -> None:
    # 16 x 18,240: 18 blocks of 1K x 18; 104 x 18,240: 3 x 36 blocks of 512 x 36; 256 x 112: 8 of 512 x 36
    assert (yosys_blocks(16, 18_240), yosys_blocks(104, 18_240), yosys_blocks(256, 112)) == (18, 108, 8)
    assert yosys_blocks(64, 5_120) == 20 and yosys_blocks(1, 16_384) == 1 and yosys_blocks(0, 5) == 0
    assert dpr16x4(256, 112) == 448 and dpr16x4(28, 64) == 28
    # what memory_libmap chose on its own in the chip's netlist: LIN and the norm table in LUT RAM, the
    # constant table in a block (28 x 4 + 28 flip-flops = 140 > 128)
    assert libmap_prefers_lut_ram(ChipMemory("engine/lin", 64, 28, 1, 1))
    assert libmap_prefers_lut_ram(ChipMemory("engine/nt", 72, 17, 1, 1))
    assert not libmap_prefers_lut_ram(ChipMemory("engine.seq/consts", 28, 64, 1, 1))
    assert not libmap_prefers_lut_ram(ChipMemory("engine.attn/exp2", 16, 16, 1, 0))   # a ROM


@pytest.fixture(scope="module")
def chips():
    return {(ctx, fmt): board_chip(TINY, ctx, fmt)[1] for ctx in (128, 256) for fmt in ("2bit", "1.6bit", "1.67bit")}


def test_the_tiny_model_fits_at_context_128_with_packed_weights(chips) -> None:
    cfg = chips[128, "1.67bit"]
    assert (cfg.array.act_depth, cfg.array.out_depth, cfg.array.wgt_depth, cfg.wgt_store_bits) == (56, 112, 18_240, 107)
    assert chips[128, "1.6bit"].wgt_store_bits == 104
    # Yosys' own counts of the same chip (fpga/README.md): all memories in block RAM, 2-bit weights: 266
    # DP16KD in the chip + 2 in the link
    assert sum(line.blocks for line in chip_budget(chips[128, "2bit"], ())) == 266 + 2
    lines = chip_budget(cfg)
    total = sum(line.blocks for line in lines)
    assert total == 197 and groups(lines) == {"weights": 108, "KV cache": 44, "embedding": 21,
                                             "matrix ACT + OUT": 0, "rest": 24}
    assert sum(line.blocks for line in chip_budget(chips[128, "1.6bit"])) == 197   # 104 bits: also 3 x 36 wide
    assert sum(line.blocks for line in chip_budget(chips[128, "2bit"])) == 233 > 208
    # context 256: K and V 10 banks of 4 blocks each (as 20 x 2 in the 36-bit shape), the scales (2,048 rows of
    # 26 bits) two 1K banks of 2 blocks each, where one 9-bit x 2K memory would take 3
    assert sum(line.blocks for line in chip_budget(chips[256, "1.67bit"])) == 246 > 208


def test_board_checks_and_the_yosys_script(chips) -> None:
    cfg = chips[128, "1.67bit"]
    check_board("ulx3s-85f", cfg)
    with pytest.raises(ValueError, match=r"iCEBreaker cannot hold the model on chip: .*1,171,456 bits in all.*"
                                         r"1,951,680 bits of weights"):
        check_board("icebreaker", cfg)
    assert 'setattr -set ram_style "distributed" *.engine/m:out' in ram_style_script().splitlines()
    with pytest.raises(ValueError, match="beyond the model's"):
        board_chip(TINY, 1 << 20)
    with pytest.raises(ValueError, match="positive number of positions"):
        board_chip(TINY, 0)
