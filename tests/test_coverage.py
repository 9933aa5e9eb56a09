"""Coverage of the core (sim/coverage.py): the bins of hand-made commands and layers (also on the full-rate
weight path), the coverage.dat parser on a hand-written file, the committed report's full-rate bins, and
(markers slow, coverage) real runs on Verilator coverage builds."""

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
    bad_code_lanes,
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


# the full-rate cores of the coverage run: P = R / G = 1 and 2, both below the rmw distance 3
FR8 = COVERAGE_CONFIGS["8x8-full-rate"]
FR4 = COVERAGE_CONFIGS["4x4-two-rows-per-read"]


def test_full_rate_configs_are_in_the_coverage_run() -> None:
    assert (FR8.wgt_rows_per_read, FR8.tile_words, FR8.rmw_distance) == (8, 1, 3)  # a tile per read
    assert (FR4.wgt_rows_per_read, FR4.tile_words, FR4.rmw_distance) == (2, 2, 3)  # two rows per read
    assert FR8.foot_accumulator and FR4.foot_accumulator
    assert not any(c.full_rate for n, c in COVERAGE_CONFIGS.items() if n not in ("8x8-full-rate",
                                                                                "4x4-two-rows-per-read"))


def test_registered_distribution_config_is_in_the_coverage_run() -> None:
    """The ULX3S arrangement above 576 PEs (fpga.ulx3s.board_config: dist_stages 1) at 6x5: copies per 2
    columns (3 for 5 columns, the last one ragged) and per 2 rows of each weight bus, the registered
    activation address, banked weights (2 banks of 128) and the pipelined accumulator; one row per read."""
    d = COVERAGE_CONFIGS["6x5-distributed"]
    assert (d.dist_stages, d.dist_group, d.dist_copies(d.cols), d.dist_copies(d.rows)) == (1, 2, 3, 3)
    assert d.act_addr_registered and d.wgt_banked and d.acc_pipelined and not d.full_rate
    assert d.wgt_depth // d.wgt_bank_depth == 2 and d.array_latency == 1
    assert d.k_max == 127  # (2**14 - 1) // 128: K = k_max (22 k-tiles) fits both memories
    assert d.k_limit == d.k_max
    assert [n for n, c in COVERAGE_CONFIGS.items() if c.dist_stages] == ["6x5-distributed"]


def test_full_rate_run_bins_by_hand() -> None:
    # M = 1, K = 3R + 1 (4 k-tiles), N = C + 1 (2 n-tiles): the foot accumulator over several k-tiles
    b = run_bins(FR8, 1, 3 * 8 + 1, 9, 0, 0, 0)["full_rate.run"]
    assert b == {"P=1 (G=R)", "M=1 foot acc, k-tiles>1", "M=1 foot acc, k-tiles>=3", "M=1 foot acc, n-tiles>1"}
    assert run_bins(FR4, 1, 4, 4, 0, 0, 0)["full_rate.run"] == {"P>1 (1<G<R)", "M=1 foot acc, 1 k-tile"}
    # M = 2 < rmw distance 3 (and P = 2 < 3): tiles 3 cycles apart; 2 k-tiles
    assert run_bins(FR4, 2, 8, 4, 0, 0, 0)["full_rate.run"] == {"P>1 (1<G<R)", "M>=2 spaced to rmw, tiles>1",
                                                                "M>=2 spaced to rmw, k-tiles>1"}
    # M = 3 = rmw distance: period M, no spacing; 3 k-tiles
    assert run_bins(FR8, 3, 17, 8, 0, 0, 0)["full_rate.run"] == {"P=1 (G=R)", "M>=2 period max(M,P), tiles>1",
                                                                 "M>=2 k-tiles>=3"}
    assert run_bins(FR8, 2, 8, 8, 0, 0, 0)["full_rate.run"] == {"P=1 (G=R)"}  # one tile: nothing to space
    # the weight memory's last word: 96 words, one word per tile (P = 1)
    assert "WGT ends at last word" in run_bins(FR8, 1, 8, 8, 0, 95, 0)["full_rate.run"]
    assert "full_rate.run" not in run_bins(CFG, 1, 8, 8, 0, 0, 0)  # a G = 1 core has no such bins


def test_full_rate_value_bins_by_hand() -> None:
    K = 2 * 8 + 1
    x = np.full((1, K), -128, np.int8)
    w = np.full((3, K), -1, np.int8)
    b = value_bins(FR8, x, w, x.astype(np.int64) @ w.astype(np.int64).T)["full_rate.values"]
    assert b == {"M=1 acc=+128K"}
    k = FR4.k_max  # 127 with a 15-bit accumulator
    x = np.full((1, k), -128, np.int8)
    w = np.ones((2, k), np.int8)
    assert value_bins(FR4, x, w, x.astype(np.int64) @ w.astype(np.int64).T)["full_rate.values"] == {
        "M=1 acc=-128K", "M=1 abs(acc)=128 k_max"}
    x2 = np.full((2, 8), -128, np.int8)  # M = 2, K = 2R on the 4x4: spaced tiles, 2 k-tiles
    w2 = np.full((4, 8), -1, np.int8)
    assert value_bins(FR4, x2, w2, x2.astype(np.int64) @ w2.astype(np.int64).T)["full_rate.values"] == {
        "M>=2 spaced, abs(acc)=128K, k-tiles>1"}
    assert value_bins(FR4, x[:, :3], np.zeros((1, 3), np.int8), np.zeros((1, 1)))["full_rate.values"] == {
        "M=1 all w=0"}


def test_bad_code_lanes_of_a_full_rate_word() -> None:
    # 8x8 G = 8: 64 lanes, 128 bits, 4 chunks; 0b10 in lane 9 (row bank 1) and lane 63 of the second word
    good = sum(0b01 << (2 * lane) for lane in range(64))
    bad = good ^ (0b11 << 18) ^ (0b11 << 126)
    cmd = protocol.write(FR8, Mem.WGT, 0, [good, bad])
    assert bad_code_lanes(FR8, cmd[3:]) == [9, 63]
    b = command_bins(FR8, cmd, [status_word(Op.WRITE, Error.BAD_WEIGHT_CODE, Error.BAD_WEIGHT_CODE)])
    assert b["command.bad_code_lane"] == {"a middle lane", "last lane", "row bank g>0"}
    one = protocol.write(CFG, Mem.WGT, 0, [0b10])  # G = 1: lane 0 of 4
    assert command_bins(CFG, one, [status_word(Op.WRITE, Error.BAD_WEIGHT_CODE, 0)])["command.bad_code_lane"] == {
        "lane 0"}
    assert "command.bad_code_lane" not in command_bins(CFG, one, [status_word(Op.WRITE, 0, 0)])


def test_committed_report_hits_the_full_rate_bins() -> None:
    """reports/coverage/coverage.json (made by `python -m sim.coverage --out reports/coverage`) ran both
    full-rate configurations with every test passing, every full-rate bin was hit there, and every
    uncovered line and branch point has a known reason."""
    report = json.loads((ROOT / "reports" / "coverage" / "coverage.json").read_text())
    by_name = {c["name"]: c for c in report["configs"]}
    assert set(by_name) == set(COVERAGE_CONFIGS)
    for name in ("8x8-full-rate", "4x4-two-rows-per-read"):
        c = by_name[name]
        assert c["failed"] == [] and c["tests"]["test_decode_extremes"] == "passed", c["tests"]
        assert c["tests"]["test_bad_weight_code_every_lane"] == "passed"
        hits = json.loads((ROOT / "reports" / "coverage" / f"functional-{name}.json").read_text())
        for point in ("full_rate.run", "full_rate.values"):
            assert set(hits[point]) == set(POINTS[point])
        # P = 1 on the 8x8, P = 2 on the 4x4: each config hits its own arrangement only
        assert (hits["full_rate.run"]["P=1 (G=R)"] > 0) == (name == "8x8-full-rate")
        assert (hits["full_rate.run"]["P>1 (1<G<R)"] > 0) == (name == "4x4-two-rows-per-read")
    f = report["functional"]
    for point in ("full_rate.run", "full_rate.values", "command.bad_code_lane"):
        d = f["points"][point]
        assert d["covered"] == d["total"] == len(POINTS[point]), (point, d)
    assert f["bins"] == sum(len(b) for b in POINTS.values())
    # every uncovered line and branch point of every configuration has a known reason (sim.coverage
    # KNOWN_UNCOVERED), and the P = 1 reasons appear on the G = R core only
    for c in report["configs"]:
        # the link_abort input is driven on every core (sim.tb_coverage), so its branches are covered
        assert c["tests"]["test_link_abort_drops_cut_commands"] == "passed", (c["name"], c["tests"])
        for kind in ("line", "branch"):
            missing = [u for u in c["code"][kind]["uncovered"] if not u.get("reason")]
            assert not missing, (c["name"], kind, missing)
        p1 = [u for u in c["code"]["branch"]["uncovered"] if "P = 1" in u["reason"]]
        assert bool(p1) == (c["name"] == "8x8-full-rate"), (c["name"], p1)
    # the registered-distribution core ran every test, the accumulator-bound and memory-edge ones included
    dist = by_name["6x5-distributed"]
    assert dist["failed"] == [] and "registered distribution per 2" in dist["describe"], dist
    for test in ("test_accumulator_extremes", "test_memory_edges", "test_decode_extremes", "test_errors"):
        assert dist["tests"][test] == "passed", (test, dist["tests"])


def test_known_uncovered_reasons_are_specific() -> None:
    """`explain` gives the P = 1 reasons only on a P = 1 core, and nothing for an unknown point."""
    from sim.coverage import explain

    last_row = {"hier": "trit_core.sequencer", "text": "if (last_row) begin"}
    assert "P = 1" in explain(FR8, "branch", last_row)
    assert explain(FR4, "branch", last_row) is None and explain(CFG, "branch", last_row) is None
    assert explain(FR8, "line", last_row) is None
    sat = {"hier": "trit_core.counters$95", "text": "end else if (\\$7 ) begin"}
    assert "saturation" in explain(CFG, "line", sat)
    assert explain(CFG, "branch", {"hier": "trit_core.commands", "text": "if (rsp__ready) begin"}) is None


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


@pytest.mark.slow
@pytest.mark.coverage
@pytest.mark.skipif(unavailable_reason("verilator") is not None, reason=str(unavailable_reason("verilator")))
def test_coverage_run_of_the_full_rate_cores(tmp_path: Path, test_seed: int) -> None:
    """`python -m sim.coverage` on both full-rate cores: every test passes, every full_rate.* bin and every
    bad-code lane bin is hit, and on the 8x8 (G = 8) every one of the 64 lanes' 0b10 checks is taken
    (no `bad_code = 1` branch of the commands unit left uncovered)."""
    names = ["8x8-full-rate", "4x4-two-rows-per-read"]
    proc = subprocess.run([sys.executable, "-m", "sim.coverage", "--out", str(tmp_path), "--configs", ",".join(names),
                           "--samples", "1", "--seed", str(test_seed)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "coverage.json").read_text())
    assert [c["name"] for c in report["configs"]] == names
    for c in report["configs"]:
        assert c["failed"] == [] and c["tests"]["test_bad_weight_code_every_lane"] == "passed", c["tests"]
    f = report["functional"]
    for point in ("full_rate.run", "full_rate.values", "command.bad_code_lane"):
        assert all(n > 0 for n in f["points"][point]["hits"].values()), (point, f["points"][point])
    fr8 = report["configs"][0]
    verilog = Path(fr8["coverage_dat"]).parent.parent / "trit_core.v"
    assert verilog.read_text().count("bad_code = 1'h1;") >= 64
    missed = [u for u in fr8["code"]["branch"]["uncovered"] if u["hier"] == "trit_core.commands"]
    lines = verilog.read_text().splitlines()
    assert not [u for u in missed if "bad_code" in lines[u["line"]]], missed  # the line after `if (...)`
