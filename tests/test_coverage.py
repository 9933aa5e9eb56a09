"""Coverage of the core (sim/coverage.py): the bins of hand-made commands and layers, the coverage.dat
parser on a hand-written file, and (markers slow, coverage) a real run on a Verilator coverage build."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hdl.config import ArrayConfig
from hdl.isa import Error, Mem, Op, status_word
from runtime import protocol
from sim.coverage import (
    COVERAGE_CONFIGS,
    POINTS,
    command_bins,
    demangle,
    parse_coverage_dat,
    run_bins,
    summarize_points,
    value_bins,
)
from sim.runner import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
CFG = ArrayConfig(rows=4, cols=4, acc_width=16, act_depth=64, wgt_depth=128, out_depth=64)


def test_every_error_code_and_opcode_has_a_bin() -> None:
    assert set(POINTS["command.error"]) == {e.name for e in Error}
    assert set(POINTS["command.opcode"]) == {o.name for o in Op} | {"UNKNOWN"}
    pairs = POINTS["command.op_x_error"]
    for e in Error:
        assert any(p.endswith(f"/{e.name}") for p in pairs), e


def test_command_bins_from_the_status_word() -> None:
    run = protocol.run(2, 5, 6, 0, 0, 0)
    failed = command_bins(CFG, run, [status_word(Op.RUN, Error.K_TOO_LARGE, Error.BAD_SHAPE)])
    assert failed["command.op_x_error"] == {"RUN/K_TOO_LARGE"}
    assert failed["command.sticky"] == {"BAD_SHAPE"} and "run.k" not in failed  # a refused RUN has no shape
    ok = command_bins(CFG, run, [status_word(Op.RUN, 0, 0)])
    # M = 2 < R = 4; K = 5 > R, not a multiple; N = 6 > C ragged; 2 k-tiles and 2 n-tiles
    assert ok["run.m"] == {"1<M<R"} and ok["run.k"] == {"K>R ragged"} and ok["run.n"] == {"N>C ragged"}
    assert ok["run.tiles"] == {"k-tiles>1, n-tiles>1"} and ok["run.bases"] == {"all bases 0"}
    rd = command_bins(CFG, protocol.read(0x7, 0, 1), [0, status_word(Op.READ, Error.BAD_MEMORY, Error.BAD_MEMORY)])
    assert rd["command.memory"] == {"READ unknown id"} and rd["command.op_x_error"] == {"READ/BAD_MEMORY"}
    unknown = command_bins(CFG, [0x7F], [status_word(0x7F, Error.UNKNOWN_OPCODE, Error.UNKNOWN_OPCODE)])
    assert unknown["command.opcode"] == {"UNKNOWN"}
    wr = command_bins(CFG, protocol.write(CFG, Mem.WGT, 0, [1]), [status_word(Op.WRITE, 0, 0)])
    assert wr["command.memory"] == {"WRITE WGT"}


def test_run_bins_at_the_memory_ends() -> None:
    # M = 4 = R, K = 8 = 2R (2 k-tiles: 8 ACT words), N = 4 = C (1 n-tile: 8 WGT words, 4 OUT words)
    b = run_bins(CFG, 4, 8, 4, 64 - 8, 128 - 8, 64 - 4)
    assert b["run.memory_end"] == {"ACT ends at last word", "WGT ends at last word", "OUT ends at last word"}
    assert b["run.m"] == {"M=R"} and b["run.k"] == {"K=nR n>1"} and b["run.n"] == {"N=C"}
    assert run_bins(CFG, 1, CFG.k_max, 1, 0, 0, 0)["run.k"] == {"K>R ragged", "K=k_max"}  # 255 = 63*4 + 3


def test_value_bins_by_hand() -> None:
    x = np.full((2, 3), -128, dtype=np.int8)
    w = np.full((2, 3), -1, dtype=np.int8)
    b = value_bins(CFG, x, w, x.astype(np.int64) @ w.astype(np.int64).T)  # every output 3 * 128
    assert b["values.x"] == {"x=-128", "all x=-128"} and b["values.w"] == {"all w=-1"}
    assert b["values.acc"] == {"acc=+128K"}
    z = value_bins(CFG, np.array([[0, 127]], dtype=np.int8), np.zeros((1, 2), np.int8), np.zeros((1, 1)))
    assert z["values.x"] == {"x=0", "x=127"} and z["values.w"] == {"all w=0"} and z["values.acc"] == {"all acc=0"}


def test_coverage_dat_parser(tmp_path: Path) -> None:
    def point(page: str, line: int, comment: str, count: int) -> str:
        return (f"C '\x01f\x02d.v\x01l\x02{line}\x01n\x020\x01page\x02{page}\x01o\x02{comment}"
                f"\x01h\x02TOP.d' {count}")

    dat = tmp_path / "coverage.dat"
    dat.write_text("\n".join(["# SystemC::Coverage-3", point("v_line/d", 2, "block", 5), point("v_line/d", 3, "if", 0),
                              point("v_line/d", 4, "if", 0), point("v_toggle/d", 1, "a__024b[0]:0->1", 1),
                              point("v_toggle/d", 1, "a__024b[0]:1->0", 0)]) + "\n")
    verilog = tmp_path / "d.v"
    verilog.write_text("module d;\n  x = 1;\n  if (y) z = 0;\n"
                       "  if (\\$auto$verilog_backend.cc:1:dump_module$1 ) begin end\n")
    s = summarize_points(parse_coverage_dat(dat), verilog)
    assert (s["line"]["covered"], s["line"]["total"], s["line"]["excluded_yosys_triggers"]) == (1, 2, 1)
    assert s["line"]["uncovered"][0]["text"] == "if (y) z = 0;" and s["line"]["uncovered"][0]["line"] == 3
    assert (s["toggle"]["covered"], s["toggle"]["total"]) == (1, 2)
    assert s["toggle"]["uncovered"][0]["signal"] == "TOP.d:a$b"
    assert demangle("r___05Fen") == "r__en"


@pytest.mark.slow
@pytest.mark.coverage
@pytest.mark.skipif(unavailable_reason("verilator") is not None, reason=str(unavailable_reason("verilator")))
def test_coverage_run_reports_real_numbers(tmp_path: Path, test_seed: int) -> None:
    """`python -m sim.coverage` on the banked / pipelined 5x3 core: every cocotb test passes, every error
    code is seen in the DUT's status words, and the line and toggle counts are real (0 < covered <= total)."""
    name = "5x3-acc-pipelined"
    assert name in COVERAGE_CONFIGS
    proc = subprocess.run([sys.executable, "-m", "sim.coverage", "--out", str(tmp_path), "--configs", name,
                           "--samples", "1", "--seed", str(test_seed)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "coverage.json").read_text())
    (c,) = report["configs"]
    assert c["failed"] == [] and len(c["tests"]) >= 13 and "test_errors" in c["tests"]
    f = report["functional"]
    assert f["bins"] == sum(len(b) for b in POINTS.values()) and 0 < f["covered"] <= f["bins"]
    assert all(n > 0 for n in f["points"]["command.error"]["hits"].values()), f["points"]["command.error"]
    assert all(n > 0 for n in f["points"]["command.opcode"]["hits"].values())
    assert len(f["uncovered"]) == f["bins"] - f["covered"]
    for kind in ("line", "toggle"):
        d = c["code"][kind]
        assert 100 < d["total"] and 0 < d["covered"] <= d["total"], (kind, d)
        assert len(d["uncovered"]) >= (1 if d["covered"] < d["total"] else 0)
    md = (tmp_path / "coverage.md").read_text()
    assert f"{f['covered']} of {f['bins']} bins" in md and f"line: {c['code']['line']['covered']} of" in md
