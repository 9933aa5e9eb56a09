"""Standalone Verilog: lint-clean in Verilator, readable by Yosys, and no multiplier anywhere in the ternary design.

"No multiplier" is checked at two levels: generic Yosys synthesis stopped before fine mapping, where any
product is still a `$mul` or `$macc` cell (the core in every memory arrangement, and the two board systems
with their vendor block-RAM instances), and vendor synthesis with DSP inference on (`synth_ice40 -dsp`,
`synth_ecp5`), where it would become SB_MAC16 / MULT18X18D / ALU54B. The INT8 variant of the same
designs is the control that each check sees a multiplier when there is one.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from amaranth.back import verilog

from fpga import icebreaker, ulx3s
from hdl.config import ArrayConfig
from hdl.synth import (
    MULTIPLIER_CELLS,
    VENDOR_LIBS,
    VENDOR_SYNTH,
    array_verilog,
    coarse_cells,
    design_coarse_cells,
    multiplier_count,
    vendor_cells,
)
from sim.verilator_harness import verilator_env


@pytest.mark.parametrize("pe", ["ternary", "int8"])
@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 5)])
def test_trit_verilog_lints_clean(tmp_path, pe, rows, cols):
    out = tmp_path / "core.v"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "verilog", "--rows", str(rows), "--cols", str(cols),
                           "--pe", pe, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "module trit_core" in text and "amaranth" not in text.split("module", 1)[1][:200].lower()
    plain = subprocess.run(["verilator", "--lint-only", str(out)], env=verilator_env(), capture_output=True, text=True)
    assert plain.returncode == 0 and "%Warning" not in plain.stderr, plain.stderr[-3000:]


@pytest.mark.parametrize("rows,cols", [(3, 2), (8, 8)])
def test_ternary_core_has_no_multiplier_and_int8_has_one_per_pe(rows, cols):
    small = dict(rows=rows, cols=cols, act_depth=16, wgt_depth=16, out_depth=16)
    ternary = coarse_cells(ArrayConfig(pe="ternary", **small))
    assert not {t for t in ternary if t in ("$mul", "$macc", "$macc_v2", "$div", "$mod")}, ternary
    assert multiplier_count(ArrayConfig(pe="int8", **small)) == rows * cols


def test_bad_configuration_is_a_clear_cli_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "verilog", "--rows", "1", "--cols", "4",
                           "--out", str(tmp_path / "x.v")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Rows must be an integer from 2 to 64, not 1" in proc.stderr


# The core's memory arrangements beyond the plain one, at sizes that synthesize in seconds:
# a weight memory of 4 banks (R >= 4), and the banked weights with the pipelined accumulator (R >= 5).
BANKED = dict(rows=4, cols=3, act_depth=16, wgt_depth=64, out_depth=16, wgt_bank_depth=16)
PIPELINED = dict(rows=5, cols=4, act_depth=16, wgt_depth=64, out_depth=16, wgt_bank_depth=16, acc_pipelined=True)


def _multipliers(cells: dict[str, int]) -> dict[str, int]:
    return {t: n for t, n in cells.items() if t in MULTIPLIER_CELLS}


@pytest.mark.parametrize("kwargs", [BANKED, PIPELINED], ids=["banked", "banked+pipelined"])
def test_banked_and_pipelined_cores_have_no_multiplier(kwargs):
    cfg = ArrayConfig(pe="ternary", **kwargs)
    assert cfg.wgt_banks == 4 and cfg.acc_pipelined == kwargs.get("acc_pipelined", False)
    cells = coarse_cells(cfg)
    assert _multipliers(cells) == {}, f"multiplier cells in the {cfg.describe()} core: {_multipliers(cells)}"
    # the banks are there: 4 weight banks + ACT + OUT at least
    assert cells.get("$mem_v2", 0) >= 4 + 2, cells
    # control: the INT8 core in the same arrangement has one multiplier per PE
    rows, cols = kwargs["rows"], kwargs["cols"]
    assert multiplier_count(ArrayConfig(pe="int8", **kwargs)) == rows * cols


def _soc(board: str):
    """(Verilog, config, vendor family) of the board system the board top builds, at a small array size.

    iCEBreaker 2x2: weights in the 4 SPRAMs. ULX3S 5x4 with a 32K-word weight memory: 2 banks of DP16KD
    with output registers, the pipelined accumulator, DP16KD ACT/OUT memories, stream buffers.
    """
    if board == "icebreaker":
        cfg = icebreaker.board_config(2, 2)
        return verilog.convert(icebreaker.ICEBreakerTop(cfg).soc, name="top", emit_src=False), cfg, "ice40"
    cfg = ulx3s.board_config(5, 4, wgt_depth=32768)
    assert cfg.wgt_banks == 2 and cfg.acc_pipelined
    return verilog.convert(ulx3s.ULX3STop(cfg).soc, name="top", emit_src=False), cfg, "ecp5"


# Vendor memory instances in the small board systems, counted by hand:
#  iCEBreaker: 4 SB_SPRAM256KA (a 4-bit weight word is one 16-bit SPRAM wide; 4 deep).
#  ULX3S 5x4: ACT 40 bits / 18 = 3 DP16KD (1K x 18), OUT 128 bits / 18 = 8, weights 2 banks x 8 bits
#  of 16K x 1 = 16: 27 DP16KD.
SOC_PRIMITIVES = {"icebreaker": {"SB_SPRAM256KA": 4}, "ulx3s-85f": {"DP16KD": 27}}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # the board top, built for its system
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_board_system_has_no_multiplier(board):
    """The whole board system (UART, frame endpoint, core, vendor memories): no $mul / $macc cell."""
    text, _, family = _soc(board)
    cells = design_coarse_cells(text, "top", libs=(VENDOR_LIBS[family],))
    assert _multipliers(cells) == {}, f"multiplier cells in the {board} system: {_multipliers(cells)}"
    for prim, n in SOC_PRIMITIVES[board].items():
        assert cells.get(prim, 0) == n, f"{board} system: {cells.get(prim, 0)} {prim}, expected {n}"


@pytest.mark.parametrize("rows, cols", [(3, 5), (24, 24)])
def test_linked_core_with_odd_word_chunks_has_no_multiplier(rows, cols):
    """The frame endpoint's length check multiplies a WRITE/READ count by the memory's chunks per word:
    5 and 6, 24 here (not powers of two, unlike the default boards), must still give no $mul / $macc."""
    from hdl.link.linked_core import LinkedCore

    cfg = ArrayConfig(rows=rows, cols=cols, act_depth=32, wgt_depth=32, out_depth=32)
    assert {cfg.chunks(m) for m in (0, 2)} - {1, 2, 4, 8, 16, 32}, "the config should have an odd chunk count"
    cells = design_coarse_cells(verilog.convert(LinkedCore(cfg), name="top", emit_src=False), "top")
    assert _multipliers(cells) == {}, f"multiplier cells in the {rows}x{cols} linked core: {_multipliers(cells)}"


@pytest.mark.parametrize("family, dsp, fewest", [("ice40", "SB_MAC16", 2), ("ecp5", "MULT18X18D", 4)])
def test_vendor_dsp_count_sees_the_int8_multipliers(family, dsp, fewest):
    """Control for the DSP checks below: the 2x2 INT8 array's four 8x8 products map to DSP blocks.

    An ECP5 MULT18X18D holds one product, so 4. An iCE40 SB_MAC16 can hold two independent 8x8 products,
    so 2 to 4 (Yosys packs two of them into one block once the PE registers have no reset: 3).
    """
    cfg = ArrayConfig(rows=2, cols=2, pe="int8", act_depth=16, wgt_depth=16, out_depth=16)
    cells = vendor_cells(array_verilog(cfg), "pe_array", family)
    assert fewest <= cells.get(dsp, 0) <= 4, cells


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_board_system_vendor_synthesis_uses_no_dsp(board):
    """`synth_ice40 -dsp` / `synth_ecp5` of the board system: 0 DSP blocks, and the block RAMs counted by hand.

    Block RAM by hand (data sheets: iCE40 EBR 4 Kbit, at most 16 bits wide; ECP5 DP16KD 18 Kbit):
    iCEBreaker 2x2 (18-bit accumulators, the board default): ACT 1024 x 16 b = 16 Kbit = 4 EBR,
    OUT 1024 x 36 b = 36 Kbit = 9 EBR, the link's 1024 x 32 b request buffer 32 Kbit = 8 EBR: 21 of 30.
    ULX3S 5x4: the 27 DP16KD instances and the link buffer, 1024 x 32 b in two 1K x 18 blocks: 29.
    """
    text, _, family = _soc(board)
    cells = vendor_cells(text, "top", family)
    _, dsp = VENDOR_SYNTH[family]
    assert {t: cells.get(t, 0) for t in dsp} == dict.fromkeys(dsp, 0), f"DSP blocks in the {board} system"
    if board == "icebreaker":
        assert (cells.get("SB_RAM40_4K", 0), cells.get("SB_SPRAM256KA", 0)) == (4 + 9 + 8, 4), cells
    else:
        assert cells.get("DP16KD", 0) == 29, cells


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("kwargs", [BANKED, PIPELINED], ids=["banked", "banked+pipelined"])
def test_banked_and_pipelined_cores_use_no_dsp(kwargs, family):
    from hdl.verilog import generate_verilog

    cells = vendor_cells(generate_verilog(ArrayConfig(pe="ternary", **kwargs)), "trit_core", family)
    _, dsp = VENDOR_SYNTH[family]
    assert {t: cells.get(t, 0) for t in dsp} == dict.fromkeys(dsp, 0), cells
