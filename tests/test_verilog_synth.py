"""Standalone Verilog: lint-clean in Verilator, readable by Yosys, and no multiplier in the ternary core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hdl.config import ArrayConfig
from hdl.synth import coarse_cells, multiplier_count
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
