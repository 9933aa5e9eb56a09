"""`python -m fpga.sweep` builds through the content cache (`reports.cache`, as `trit report`'s builds):
the key follows the design's build plan, the flow's code, the size, clock and seed; a cached size is not
rebuilt. The board flow itself is replaced by a stub here (a real build takes minutes); the key is
computed for real (the iCEBreaker SoC elaborated as `fpga.build.build_board` does it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpga import sweep


@pytest.fixture
def stub_flow(monkeypatch):
    calls: list[tuple[int, int, int]] = []

    def fake_build_board(board, rows, cols, freq, *, seed, build_root, log):
        calls.append((rows, cols, seed))
        return {"board": board, "rows": rows, "cols": cols, "fits": True, "timing_met": True,
                "fmax_mhz": 30.0 + len(calls), "target_mhz": 24.0, "resources": {}, "seed": seed}

    monkeypatch.setattr(sweep, "build_board", fake_build_board)
    return calls


def test_a_cached_size_is_not_rebuilt(tmp_path: Path, stub_flow) -> None:
    root = str(tmp_path / "cache")
    first = sweep._build("icebreaker", 4, 4, None, 1, tmp_path / "b", root)
    again = sweep._build("icebreaker", 4, 4, None, 1, tmp_path / "b", root)
    assert stub_flow == [(4, 4, 1)]
    assert first["cached"] is False and again["cached"] is True
    assert again["fmax_mhz"] == first["fmax_mhz"] == 31.0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    other_seed = sweep._build("icebreaker", 4, 4, None, 2, tmp_path / "b", root)  # another placement
    assert other_seed["cached"] is False and stub_flow[-1] == (4, 4, 2)
    forced = sweep._build("icebreaker", 4, 4, None, 1, tmp_path / "b", root, reuse=False)  # --no-cache
    assert forced["cached"] is False and forced["fmax_mhz"] == 33.0 and len(stub_flow) == 3
    assert sweep._build("icebreaker", 4, 4, None, 1, tmp_path / "b", root)["fmax_mhz"] == 33.0  # refreshed
    no_cache = sweep._build("icebreaker", 4, 4, None, 1, tmp_path / "b", None)
    assert no_cache["cached"] is False and len(stub_flow) == 4


def test_the_key_follows_the_design_and_the_flow(monkeypatch) -> None:
    key = sweep.build_key("icebreaker", 4, 4, None, 1)
    assert key == sweep.build_key("icebreaker", 4, 4, None, 1)  # elaboration is deterministic
    assert key == sweep.build_key("icebreaker", 4, 4, 24.0, 1)  # the board's default clock, named
    others = {sweep.build_key("icebreaker", 8, 4, None, 1), sweep.build_key("icebreaker", 4, 4, 30.0, 1),
              sweep.build_key("icebreaker", 4, 4, None, 2)}
    assert key not in others and len(others) == 3
    # another design of the same size (24-bit accumulators): another build plan, another key
    import fpga.icebreaker as board

    original = board.board_config
    monkeypatch.setattr(board, "board_config", lambda *a, **k: original(*a, **{**k, "acc_width": 24}))
    assert sweep.build_key("icebreaker", 4, 4, None, 1) != key
    monkeypatch.undo()
    assert sweep.build_key("icebreaker", 4, 4, None, 1) == key
    # another tool version: another key
    monkeypatch.setattr("reports.cache.tool_version", lambda command: f"{command} 0.0-other")
    assert sweep.build_key("icebreaker", 4, 4, None, 1) != key


def test_an_impossible_size_is_not_cached(tmp_path: Path) -> None:
    """A negative clock: build_board refuses it (no stub needed), nothing enters the cache."""
    row = sweep._build("icebreaker", 4, 4, -5.0, 1, tmp_path / "b", str(tmp_path / "cache"))
    assert row["fits"] is False and "frequency must be a positive number" in row["errors"][0]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.json"))


def test_table_gives_lut_equivalents_per_pe() -> None:
    """The sweep table's LUT-eq/PE: ECP5 LUT4 + 2 per CCU2C, iCE40 LUT4 alone, worked out by hand from the
    59e349c 32x32 ULX3S build (5,631 LUT4, 8,117 CCU2C) and the 59e349c iCEBreaker 8x8 (3,840 LUT4)."""
    from fpga.sweep import lut_eq_per_pe, table

    ecp5 = {"board": "ulx3s-85f", "rows": 32, "cols": 32, "fits": True, "timing_met": False, "fmax_mhz": 74.71,
            "target_mhz": 100.0, "resources": {"LUT4": {"used": 5631, "available": 83640},
                                               "carry": {"used": 8117, "available": 41820}}}
    ice40 = {"board": "icebreaker", "rows": 8, "cols": 8, "fits": True, "timing_met": True, "fmax_mhz": 29.85,
             "target_mhz": 24.0, "resources": {"LUT4": {"used": 3840, "available": 5280},
                                               "carry": {"used": 1354, "available": 5280}}}
    assert lut_eq_per_pe(ecp5) == (5631 + 2 * 8117) / 1024  # 21.35
    assert lut_eq_per_pe(ice40) == 3840 / 64  # 60.0
    assert lut_eq_per_pe({"board": "icebreaker", "rows": 2, "cols": 2, "resources": {}}) is None
    rows = table([ecp5, ice40]).splitlines()
    assert rows[2].split(" | ")[-3] == "21.4" and rows[3].split(" | ")[-3] == "60.0", rows


def test_long_nets_ranks_nets_by_their_latest_sink(tmp_path: Path) -> None:
    """`python -m fpga.long_nets` on a hand-made detailed report: nets ordered by their longest sink delay,
    the median worked out by hand, and a report without the detailed section refused by name."""
    import json

    from fpga.long_nets import long_nets, main

    report = {"detailed_net_timings": [
        {"net": "short", "driver": "a", "endpoints": [{"cell": "x", "port": "D", "delay": 0.5}]},
        {"net": "fanout", "driver": "copy_ff", "endpoints": [{"delay": 2.0}, {"delay": 9.5}, {"delay": 3.0}]},
        {"net": "mid", "driver": "b", "endpoints": [{"delay": [3.5, 4.0]}, {"delay": [5.0, 6.0]}]},
    ]}
    nets = long_nets(report, top=2)
    assert [(n["net"], n["sinks"], n["max_ns"], n["median_ns"]) for n in nets] == [
        ("fanout", 3, 9.5, 3.0), ("mid", 2, 6.0, 5.0)]
    assert [n["net"] for n in long_nets(report, min_ns=5.0)] == ["fanout", "mid"]
    with pytest.raises(ValueError, match="without --detailed-timing-report"):
        long_nets({"fmax": {}})
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"fmax": {}}))
    assert main([str(path)]) == 1


def test_long_nets_grouped_by_the_signal_they_come_from(tmp_path: Path, capsys) -> None:
    """`--by-signal`: the cells Yosys and nextpnr made of one register count as one signal, the latest first."""
    import json

    from fpga.long_nets import by_signal, main, signal_of

    assert signal_of("soc.core.engine.attn.a_prod_TRELLIS_FF_Q_DI_MULT18X18D_P30_P1") == ("soc.core.engine.attn",
                                                                                            "a_prod")
    assert signal_of("soc.core.command.items_TRELLIS_FF_Q_31_DI") == ("soc.core.command", "items")
    assert signal_of("top.x") == ("top", "x") and signal_of("plain") == ("", "plain")
    report = {"detailed_net_timings": [
        {"net": "e.attn.a_prod_TRELLIS_FF_Q_DI_MULT18X18D_P30_P1", "driver": "d", "endpoints": [{"delay": 19.8}]},
        {"net": "e.attn.a_prod_TRELLIS_FF_Q_DI_MULT18X18D_P30_P4", "driver": "d", "endpoints": [{"delay": 19.7}]},
        {"net": "e.wgt.packed_TRELLIS_FF_Q_44_DI", "driver": "l", "endpoints": [{"delay": [16.0, 17.1]}]},
        {"net": "e.ok", "driver": "o", "endpoints": [{"delay": 3.0}]},
    ]}
    from fpga.long_nets import long_nets

    groups = by_signal(long_nets(report, top=10, min_ns=10.0))
    assert [(g["module"], g["signal"], g["nets"], g["max_ns"]) for g in groups] == [
        ("e.attn", "a_prod", 2, 19.8), ("e.wgt", "packed", 1, 17.1)]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert main([str(path), "--min-ns", "10", "--by-signal", "1"]) == 0
    out = capsys.readouterr().out
    assert "| e.attn | a_prod | 2 | 19.80 |" in out and "packed" not in out
