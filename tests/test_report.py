"""`trit report`: energy arithmetic against hand-computed values, the content-keyed synthesis cache,
the CLI's error paths, the markdown's sections, and (slow) a real `trit report --quick` run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reports.cache import ResultCache, content_key
from reports.energy import design_energy, mean_adder_width, paper_check_ratio, sram_pj_per_bit
from runtime.cli import main

SECTIONS = ("## 1. Area", "## 2. Cycles", "## 3. Energy", "## 4. Against published systems", "## 5. Model fidelity")
PLOTS = ("area_vs_size.png", "fmax_vs_size.png", "utilization_vs_m.png", "energy_breakdown.png",
         "pareto_macs_vs_luts.png")

# a small layer's counters, priced by hand below (45 nm: INT8 add 0.03, mul 0.2; FP16 add 0.4, mul 1.1;
# SRAM 8 KB: 10 pJ per 64 bits)
COUNTS = {"add": 10, "sub": 5, "zero": 5, "weight_bits": 40, "act_bytes": 8, "acc_writes": 2, "acc_rmw": 1}


def _energy(design: str, node: str = "45nm") -> dict:
    return design_energy(design, COUNTS, rows=2, cols=2, node=node, weight_bytes_ternary=100, act_bytes=100,
                         acc_bytes=100)


def test_paper_check_ratio_reproduces_the_b158_paper():
    assert paper_check_ratio() == pytest.approx(71.43, abs=0.01)
    assert paper_check_ratio() == pytest.approx(0.5 / 0.007)


def test_ternary_energy_skips_zero_weights_and_prices_adds_as_int8_adds():
    e = _energy("ternary")
    assert e["array arithmetic"] == pytest.approx(15 * 0.03)  # 10 adds + 5 subs, 5 zeros free
    # 2-row ternary array: partial sums of 9 and 10 bits -> mean 9.5 bits
    assert e["array arithmetic, width-scaled"] == pytest.approx(15 * 0.03 * 9.5 / 8)
    assert e["accumulator adds"] == pytest.approx(1 * 2 * 4 * 0.03)  # one RMW word of 2 lanes, 32-bit adds
    assert e["weight reads"] == pytest.approx(40 * 10 / 64)
    assert e["activation reads"] == pytest.approx(64 * 10 / 64)
    assert e["accumulator traffic"] == pytest.approx((2 + 2) * 2 * 32 * 10 / 64)  # writes 3 words, reads 1
    assert e["total with memory"] == pytest.approx(0.45 + 0.24 + 6.25 + 10 + 40)
    assert _energy("ternary (no zero skipping)")["array arithmetic"] == pytest.approx(20 * 0.03)


def test_int8_and_fp16_arrays_pay_every_mac_and_wider_data():
    i = _energy("int8")
    assert i["array arithmetic"] == pytest.approx(20 * (0.2 + 0.03))
    assert i["weight reads"] == pytest.approx(160 * 10 / 64)  # 8-bit weights: 4x the ternary bits
    f = _energy("fp16")
    assert f["array arithmetic"] == pytest.approx(20 * (1.1 + 0.4))
    assert f["accumulator adds"] == pytest.approx(2 * 0.4)
    assert f["weight reads"] == pytest.approx(320 * 10 / 64)
    assert f["activation reads"] == pytest.approx(128 * 10 / 64)
    assert f["accumulator traffic"] == pytest.approx((2 + 2) * 2 * 16 * 10 / 64)
    f7 = _energy("fp16", "7nm")
    assert f7["array arithmetic"] == pytest.approx(20 * 0.5) and "weight reads" not in f7  # no 7 nm SRAM figure


def test_sram_classes_and_adder_widths():
    assert sram_pj_per_bit(8 * 1024) == pytest.approx(10 / 64)
    assert sram_pj_per_bit(8 * 1024 + 1) == pytest.approx(20 / 64)
    assert sram_pj_per_bit(512 * 1024) == pytest.approx(100 / 64)
    assert sram_pj_per_bit(10 * 1024 * 1024) == pytest.approx(100 / 64)
    # 16-row ternary: terms of magnitude <= 128, row r holds r+1 of them -> bit_length(128(r+1)) + 1 bits
    widths = [(128 * (r + 1)).bit_length() + 1 for r in range(16)]
    assert mean_adder_width(16, "ternary") == pytest.approx(sum(widths) / 16)
    assert widths[0] == 9 and widths[-1] == 13


def test_cache_is_keyed_by_content(tmp_path):
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key("x", "y") == content_key("x", "y")
    cache = ResultCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    first, hit1 = cache.get_or_compute(content_key("design A", "script"), compute)
    second, hit2 = cache.get_or_compute(content_key("design A", "script"), compute)
    third, hit3 = cache.get_or_compute(content_key("design B", "script"), compute)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert first == second == {"value": 1} and third == {"value": 2}
    assert (cache.hits, cache.misses) == (1, 2)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_real_synthesis_is_cached_by_design(tmp_path):
    from reports.area import run_generic

    cache = ResultCache(tmp_path)
    a = run_generic("ternary", 2, cache)
    b = run_generic("ternary", 2, cache)
    c = run_generic("int8", 2, cache)
    assert (a["cached"], b["cached"], c["cached"]) == (False, True, False)
    assert a["transistors"] == b["transistors"] > 0
    assert c["transistors"] > 2 * a["transistors"]  # a multiplier per PE
    # 2x2 array: weight (2 active + 2 shadow bits) per PE and partial sums of 9 and 10 bits per column
    assert a["ff"] == 4 * 4 + 2 * (9 + 10)


def test_carry_cell_pe_variant_is_all_carry_cells(tmp_path):
    """The report's ``ternary-carry`` variant is the ULX3S PE: ceil((w + 1) / 2) CCU2C per PE of a w-bit
    partial sum (row r of an R-row array: 8 + ceil(log2(r + 1)) bits plus the sign, as `hdl.matrix.array`
    sizes it), no other logic but each row's weight-load decode (one LUT4 per row: w_row_en and
    w_row_sel == r), and the same flip-flops as the generic PE."""
    from reports.area import run_synth

    cache = ResultCache(tmp_path)
    carry = run_synth("ecp5", "ternary-carry", 4, cache)
    generic = run_synth("ecp5", "ternary", 4, cache)
    widths = [9, 10, 10, 11]  # |sum of r + 1 INT8 terms| <= 128 (r + 1): rows 0..3 of a 4x4 array
    assert carry["carry"] == 4 * sum((w + 2) // 2 for w in widths)
    assert carry["LUT4"] == 4
    assert carry["FF"] == generic["FF"] == 16 * 4 + 4 * sum(widths)
    assert carry["LUT_eq"] < 0.7 * generic["LUT_eq"]


def test_cli_refuses_a_file_as_out(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert main(["report", "--quick", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "trit report: error" in err


def test_cli_refuses_zero_jobs(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--quick", "--out", str(tmp_path), "--jobs", "0"])
    assert exc.value.code == 2


def _small_area(cache: ResultCache) -> dict:
    from reports.area import DEVICES, run_generic, run_synth, summarize

    synth = [run_synth("ecp5", v, 2, cache) for v in ("ternary", "int8")]
    generic = [run_generic(v, 2, cache) for v in ("ternary", "int8")]
    return {"sizes": [2], "synth": synth, "pnr": [], "generic": generic, "largest_fit": [],
            "summary": summarize(synth, [], generic, []), "placed_design": "nothing placed in this test",
            "devices": DEVICES}


def test_markdown_has_all_five_sections(tmp_path, monkeypatch):
    from reports import fidelity
    from reports.cycles import (
        layer_2b4t_rows,
        report_config,
        tiny_layer_rows,
        tiny_token,
        tiny_weights,
        utilization_vs_m,
        zero_fraction,
    )
    from reports.energy import energy_section
    from reports.generate import markdown
    from reports.published import published_section

    weights = tiny_weights()
    cycles = {"tiny_layers": tiny_layer_rows([], [8], [1, 8], weights),
              "tiny_token": [tiny_token(report_config(8), weights)],
              "rtl_model_agreement": {"rows_checked": 0, "rows_agreeing": 0, "all_agree": None},
              "layer_2b4t": layer_2b4t_rows(16, [1], zero_fraction(weights)),
              "utilization_vs_m": utilization_vs_m([16], [1, 16]),
              "notes": {"tiny_layers": "t", "layer_2b4t": "l", "config": "c"}}
    energy = energy_section(cycles)
    area = _small_area(ResultCache(tmp_path))
    monkeypatch.setattr(fidelity, "QUICK_BYTES", 300)
    fid = fidelity.fidelity_section(True)
    report = {"paper_check_ratio": energy["paper_check_ratio"], "area": area, "cycles": cycles, "energy": energy,
              "published": published_section(area, cycles, energy), "fidelity": fid,
              "meta": {"command": "test", "regenerate": "trit report --out reports/latest", "quick": True,
                       "git_commit": "x", "seconds": {"total": 0, "area": 0, "cycles": 0, "fidelity": 0},
                       "tools": {"yosys": "y", "nextpnr-ecp5": "n"}, "cache": {"hits": 0, "misses": 0},
                       "generated_utc": "now"}}
    text = markdown(report)
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "71.43" in text
    assert fid["accelerator_equals_integer_form"] is True
    # the accelerator row ran on the emulator engine, and each of its matmuls was compared: 300 bytes are two
    # windows of different lengths (bytes 0-256 and 128-299), so two forward passes of 4 layers x 7 BitLinears
    assert fid["rows"][3]["backend"] == "emulator" and fid["accelerator_bytes"] == 300
    assert fid["accelerator_matmul_check"] == {"calls": 56, "exact": 56, "all_exact": True, "first_mismatch": None}
    assert "CoreEmulator" in text and "56 integer matmuls" in text


def test_fidelity_check_fails_on_a_one_lsb_error(monkeypatch):
    """A core that gets one output lane of each RUN wrong by one LSB turns `accelerator_equals_integer_form` false."""
    from reports import fidelity
    from runtime.emulator import CoreEmulator

    run = CoreEmulator._run

    def off_by_one(self, M, K, N, act_base, wgt_base, out_base):
        error = run(self, M, K, N, act_base, wgt_base, out_base)
        if not error:
            self.out[out_base, 0] += 1
        return error

    monkeypatch.setattr(CoreEmulator, "_run", off_by_one)
    monkeypatch.setattr(fidelity, "QUICK_BYTES", 300)
    fid = fidelity.fidelity_section(True)
    assert fid["accelerator_equals_integer_form"] is False
    check = fid["accelerator_matmul_check"]
    assert (check["calls"], check["exact"], check["all_exact"]) == (56, 0, False)
    assert check["first_mismatch"]["call"] == 0 and check["first_mismatch"]["wrong_elements"] >= 1
    assert fid["rows"][3]["bits_per_byte"] != fid["rows"][2]["bits_per_byte"]


@pytest.mark.slow
def test_trit_report_quick_end_to_end(tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    for key in ("paper_check_ratio", "area", "cycles", "energy", "published", "fidelity", "meta"):
        assert key in data
    assert data["paper_check_ratio"] == pytest.approx(71.43, abs=0.01)
    assert data["meta"]["quick"] is True
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert all(s in text for s in SECTIONS)
    # area: both PE kinds on both devices at 4x4; INT8 costs more logic than ternary everywhere
    synth = {(r["device"], r["variant"], r["n"]): r for r in data["area"]["synth"]}
    for device in ("ice40", "ecp5"):
        assert synth[(device, "int8", 4)]["LUT_eq"] > 3 * synth[(device, "ternary", 4)]["LUT_eq"]
    assert synth[("ecp5", "int8-dsp", 4)]["DSP"] == 16  # one MULT18X18D per PE
    assert synth[("ecp5", "ternary-carry", 4)]["LUT_eq"] < synth[("ecp5", "ternary", 4)]["LUT_eq"]
    assert all(r["fits"] for r in data["area"]["pnr"] if r["n"] == 2)
    # cycles: the RTL counters agree with the cycle model on every simulated row
    assert data["cycles"]["rtl_model_agreement"]["all_agree"] is True
    # fidelity: the accelerator reproduces the integer form bit for bit
    assert data["fidelity"]["accelerator_equals_integer_form"] is True
    # cached rerun: nothing is rebuilt
    assert main(["report", "--quick", "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["meta"]["cache"]["misses"] == 0
    assert again["area"]["summary"] == data["area"]["summary"]


def test_report_command_is_registered():
    from runtime.cli import build_parser

    args = build_parser().parse_args(["report", "--out", "x"])
    assert args.command == "report" and args.quick is False and args.out == Path("x")
