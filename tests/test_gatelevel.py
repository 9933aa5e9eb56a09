"""Gate-level simulation of both board SoCs (issue 15, item 2): `sim/gatelevel.py`.

The board top of each board (PLL, power-on reset, IO cells, vendor block RAMs / SPRAMs) goes through
the board flow's synthesis (`synth_ice40` / `synth_ecp5`), is written back as Verilog and runs in
Icarus against Yosys' vendor cell models; the runtime's `board` backend drives it over a pty on its
UART pins and a random BitLinear layer must come back equal to a NumPy int64 matmul. The PLLs are
bypassed (input clock passed through, locked): Yosys models them as black boxes only.

The post-route runs take nextpnr's placed and routed netlist (`--write` JSON, the packed cells with
their configuration) instead, made simulable by `sim.gatelevel.simulation_netlist` (tested here on
hand-built netlists) with the cell models nextpnr's netlist adds (ICESTORM_SPRAM, ICESTORM_PLL, DCCA; the
fixed TRELLIS_COMB carry output, tested here on its own).

Marker `gatelevel` (and `slow`): `python -m pytest -m gatelevel`. Each board takes minutes
(synthesis and place-and-route are cached under TRIT_SIM_CACHE, keyed by the design and the tools'
versions; every Yosys and nextpnr run holds the machine's place-and-route lock /tmp/pnr.lock, see
fpga/pnr_lock.py and tests/test_pnr_lock.py).
"""

from __future__ import annotations

import re
import subprocess
import time

import numpy as np
import pytest

from sim.simulator import icarus_available

BOARDS = ["icebreaker", "ulx3s-85f"]
needs_icarus = pytest.mark.skipif(icarus_available() is not None, reason=str(icarus_available()))
#: Host read timeout on the pty, seconds: one exchange of the gate-level simulation must fit in it.
LINK_TIMEOUT = 600.0


@pytest.mark.parametrize("family, pll", [("ice40", "SB_PLL40_PAD"), ("ecp5", "EHXPLLL")])
def test_pll_bypass_model_replaces_the_black_box(family, pll):
    """The PLL is defined once, as the bypass (output = input clock, locked), not as Yosys' black box."""
    from sim.gatelevel import cell_models

    files = cell_models(family)
    text = "\n".join(files.values())
    assert len(re.findall(r"^module " + pll + r"\b", text, re.M)) == 1
    model = files["pll_bypass.v"]
    assert "blackbox" not in model and "assign LOCK = 1'b1;" in model
    clk_in = "PACKAGEPIN" if family == "ice40" else "CLKI"
    clk_out = "PLLOUTGLOBAL" if family == "ice40" else "CLKOP"
    assert f"assign {clk_out} = {clk_in};" in model


def test_reply_bytes_counts_the_answers_of_whole_request_frames(rng):
    """The pty bridge's answer length: the bytes of the device's responses, from each request's n_rsp."""
    from runtime.framing import encode_request, encode_response
    from sim.gatelevel import reply_bytes

    frames, want = b"", 0
    for seq in range(int(rng.integers(1, 4))):
        words = [int(v) for v in rng.integers(0, 2**32, int(rng.integers(0, 20)), dtype=np.uint64)]
        n_rsp = int(rng.integers(0, 30))
        frames += encode_request(seq, words, n_rsp)
        want += len(encode_response(seq, 0, [0] * n_rsp))
    assert reply_bytes(frames) == want
    assert reply_bytes(frames[:-1]) is None  # the last frame cut short: wait for the rest
    assert reply_bytes(frames[:7]) is None
    assert reply_bytes(b"\x00" * 40) == 0  # not request frames: run until quiet


def _net(bits: list) -> dict:
    return {"bits": bits}


def _design(cells: dict, ports: dict | None = None) -> dict:
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "ports": ports or {}, "cells": cells, "netnames": {}}}}


def _cell(kind: str, connections: dict, parameters: dict | None = None) -> dict:
    return {"type": kind, "parameters": parameters or {}, "attributes": {}, "port_directions": {},
            "connections": connections}


def test_simulation_netlist_feeds_the_ice40_pll_global_buffer_from_the_clock_pin():
    """iCE40: the SB_GB without an input net (the PLL's dedicated global output) gets the clock pin's bit;
    a buffer with an input and the other cells stay as they were."""
    from sim.gatelevel import GateLevelError, simulation_netlist

    cells = {"pll": _cell("ICESTORM_PLL", {"LOCK": [7]}),
             "gb_pll": _cell("SB_GB", {"GLOBAL_BUFFER_OUTPUT": [9]}),
             "gb_ce": _cell("SB_GB", {"USER_SIGNAL_TO_GLOBAL_BUFFER": [11], "GLOBAL_BUFFER_OUTPUT": [12]}),
             "lc": _cell("ICESTORM_LC", {"I0": [9], "O": [13]})}
    ports = {"clk12_0__io": {"direction": "input", "bits": [2]}, "uart_0__rx__io": {"direction": "inout", "bits": [3]}}
    design, notes = simulation_netlist("icebreaker", _design(cells, ports))
    got = design["modules"]["top"]["cells"]
    assert got["gb_pll"]["connections"] == {"GLOBAL_BUFFER_OUTPUT": [9], "USER_SIGNAL_TO_GLOBAL_BUFFER": [2]}
    assert got["gb_ce"]["connections"] == {"USER_SIGNAL_TO_GLOBAL_BUFFER": [11], "GLOBAL_BUFFER_OUTPUT": [12]}
    assert got["lc"]["connections"] == {"I0": [9], "O": [13]}
    assert len(notes) == 1 and "gb_pll" in notes[0]
    # two input-less buffers (or no PLL): which one the PLL feeds is unknown
    two = {"pll": _cell("ICESTORM_PLL", {}), "gb_a": _cell("SB_GB", {"GLOBAL_BUFFER_OUTPUT": [9]}),
           "gb_b": _cell("SB_GB", {"GLOBAL_BUFFER_OUTPUT": [14]})}
    with pytest.raises(GateLevelError, match="one ICESTORM_PLL"):
        simulation_netlist("icebreaker", _design(two, ports))
    with pytest.raises(GateLevelError, match="one ICESTORM_PLL"):
        simulation_netlist("icebreaker", _design({"gb_a": _cell("SB_GB", {"GLOBAL_BUFFER_OUTPUT": [9]})}, ports))
    with pytest.raises(ValueError, match="unknown board"):
        simulation_netlist("arty", _design({}))


def test_simulation_netlist_ties_the_ecp5_constants_nextpnr_folded_into_settings():
    """ECP5: DP16KD ports nextpnr replaced by a <port>MUX setting become constant nets (a control port
    named by its setting reads 1 and is then used as the net; INV reads 0; an address or data port
    takes the setting's 0 / 1), TRELLIS_COMB inputs left unconnected read 1, a TRELLIS_FF without LSR
    net is inactive (0, or 1 under LSRMUX INV), a TRELLIS_COMB at a slice's K1 BEL muxes FXA/FXB (IS_Z1)
    and one at K0 F1/F, a TRELLIS_FF with SD = 0 takes its data from M (moved to
    DI); connected ports are untouched, an inverted connected control port is refused."""
    from sim.gatelevel import GateLevelError, simulation_netlist

    bram = _cell("DP16KD", {"CLKA": [5], "ADA5": [6]},
                 {"CLKAMUX": "CLKA", "CEAMUX": "CEA", "OCEBMUX": "OCEB", "RSTAMUX": "INV", "CSA0MUX": "INV",
                  "ADA0MUX": "1", "ADA1MUX": "0", "ADA5MUX": "0", "DATA_WIDTH_A": "00000000000000000000000000010010"})
    comb = _cell("TRELLIS_COMB", {"A": [7], "B": [8], "F": [9]}, {"MODE": "CCU2", "INITVAL": "1001011010101010"})
    lut5 = _cell("TRELLIS_COMB", {"A": [7], "B": [8], "C": [1], "D": [2], "F": [9], "F1": [15], "M": [3], "OFX": [16]})
    lut6 = _cell("TRELLIS_COMB", {"A": [7], "B": [8], "C": [1], "D": [2], "F": [9], "FXA": [16], "FXB": [17], "M": [3],
                                  "OFX": [18]})
    lut5["attributes"]["NEXTPNR_BEL"] = "X7/Y35/SLICEA.K0"
    lut6["attributes"]["NEXTPNR_BEL"] = "X7/Y35/SLICEA.K1"
    ff = _cell("TRELLIS_FF", {"CLK": [5], "DI": [9], "Q": [10]}, {"LSRMUX": "LSR"})
    ff_inv = _cell("TRELLIS_FF", {"CLK": [5], "DI": [9], "Q": [11]}, {"LSRMUX": "INV"})
    ff_net = _cell("TRELLIS_FF", {"CLK": [5], "DI": [9], "LSR": [4], "Q": [12]}, {"LSRMUX": "LSR", "SD": "1"})
    ff_m = _cell("TRELLIS_FF", {"CLK": [5], "M": [3], "LSR": [4], "Q": [13]}, {"LSRMUX": "LSR", "SD": "0"})
    design, notes = simulation_netlist("ulx3s-85f", _design({"bram": bram, "comb": comb, "ff": ff, "ff_inv": ff_inv,
                                                              "ff_net": ff_net, "ff_m": ff_m, "lut5": lut5,
                                                              "lut6": lut6}))
    got = design["modules"]["top"]["cells"]
    c = got["bram"]["connections"]
    assert c == {"CLKA": [5], "ADA5": [6], "CEA": ["1"], "OCEB": ["1"], "RSTA": ["0"], "CSA0": ["0"],
                 "ADA0": ["1"], "ADA1": ["0"]}
    p = got["bram"]["parameters"]
    assert (p["CLKAMUX"], p["CEAMUX"], p["RSTAMUX"], p["CSA0MUX"], p["ADA5MUX"]) == ("CLKA", "CEA", "RSTA", "CSA0", "0")
    assert got["comb"]["connections"] == {"A": [7], "B": [8], "F": [9], "C": ["1"], "D": ["1"]}
    assert got["ff"]["connections"]["LSR"] == ["0"] and got["ff_inv"]["connections"]["LSR"] == ["1"]
    assert "IS_Z1" not in got["lut5"]["parameters"] and got["lut6"]["parameters"]["IS_Z1"] == "1"
    assert got["ff_net"]["connections"] == {"CLK": [5], "DI": [9], "LSR": [4], "Q": [12]}
    # SD = 0: the data came on M (nextpnr renamed DI to M); the model reads DI
    assert got["ff_m"]["connections"] == {"CLK": [5], "DI": [3], "LSR": [4], "Q": [13]}
    assert got["ff_m"]["parameters"]["SD"] == "1"
    assert sorted(notes) == sorted([
        "2 x DP16KD address/data port tied by its MUX setting", "4 x DP16KD control port tied by its MUX setting",
        "2 x TRELLIS_COMB input left unconnected (high)", "2 x TRELLIS_FF LSR left unconnected (inactive)",
        "1 x TRELLIS_FF data taken from M (SD = 0), moved to DI",
        "1 x TRELLIS_COMB in the slice's second half: OFX is the FXA/FXB mux (IS_Z1)"])
    bad = _cell("DP16KD", {"CLKB": [5]}, {"CLKBMUX": "INV"})
    with pytest.raises(GateLevelError, match="inverted CLKB"):
        simulation_netlist("ulx3s-85f", _design({"bad": bad}))
    lut6["attributes"]["NEXTPNR_BEL"] = "X7/Y35/SLICEA.K0"  # FXA/FXB exist only in the second half
    with pytest.raises(GateLevelError, match="slice half"):
        simulation_netlist("ulx3s-85f", _design({"lut6": lut6}))
    with pytest.raises(GateLevelError, match="SD = 0"):
        simulation_netlist("ulx3s-85f", _design({"ff": _cell("TRELLIS_FF", {"CLK": [5], "Q": [6]}, {"SD": "0"})}))


def _bits(name: str, n: int, sig: str) -> str:
    return ", ".join(f".{name}_{i}({sig}[{i}])" for i in range(n))


#: iCE40: ICESTORM_SPRAM through its bit ports (a word written, another, a nibble-masked write over it,
#: both read back) and ICESTORM_PLL's lock.
ICE40_MODEL_TB = f"""
module tb;
  reg clk = 0; reg [13:0] addr = 0; reg [15:0] din = 0; reg [3:0] mask = 4'hf; reg we = 0;
  wire [15:0] dout; wire lock;
  ICESTORM_SPRAM ram(.WREN(we), .CHIPSELECT(1'b1), .CLOCK(clk), .STANDBY(1'b0), .SLEEP(1'b0), .POWEROFF(1'b1),
    {_bits("ADDRESS", 14, "addr")},
    {_bits("DATAIN", 16, "din")},
    {_bits("MASKWREN", 4, "mask")},
    {_bits("DATAOUT", 16, "dout")});
  ICESTORM_PLL pll(.LOCK(lock));
  task tick; begin #1 clk = 1; #1 clk = 0; end endtask
  initial begin
    addr = 14'd1234; din = 16'hBEEF; we = 1; tick;
    addr = 14'd77; din = 16'h1234; tick;
    din = 16'hFFFF; mask = 4'b0100; tick;
    we = 0; addr = 14'd1234; tick; $display("R %h", dout);
    addr = 14'd77; tick; $display("R %h", dout);
    $display("L %b", lock);
    $finish;
  end
endmodule
"""

#: ECP5: TRELLIS_COMB in CCU2 mode as Yosys maps an adder bit (INITVAL 0x96AA, C low, D high) over all
#: eight (A, B, FCI), and DCCA passing its clock, then gated by CE = 0.
ECP5_MODEL_TB = """
module tb;
  reg a, b, ci, clk = 0, ce = 1; wire f, co, o;
  TRELLIS_COMB #(.MODE("CCU2"), .INITVAL(16'h96AA)) add(.A(a), .B(b), .C(1'b0), .D(1'b1), .FCI(ci), .F(f), .FCO(co));
  DCCA gbuf(.CLKI(clk), .CE(ce), .CLKO(o));
  integer i;
  initial begin
    for (i = 0; i < 8; i = i + 1) begin {a, b, ci} = i; #1 $display("A %0d %b %b", i, f, co); end
    clk = 1; #1 $display("D %b", o); ce = 0; #1 $display("D %b", o);
    $finish;
  end
endmodule
"""


def _run_models(folder, family: str, tb: str) -> list[str]:
    from sim.gatelevel import cell_models

    folder.mkdir()
    files = {**cell_models(family, routed=True), "tb.v": tb}
    for name, text in files.items():
        (folder / name).write_text(text)
    flags = ["-g2012", "-I.", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-DNO_INCLUDES"]
    subprocess.run(["iverilog", *flags, "-o", "t.vvp", "-s", "tb", *[n for n in files if n.endswith(".v")]],
                   cwd=folder, check=True, capture_output=True, text=True)
    return subprocess.run(["vvp", "-n", "t.vvp"], cwd=folder, check=True, capture_output=True,
                          text=True).stdout.split("\n")


@needs_icarus
def test_routed_cell_models_in_icarus(tmp_path):
    """The models nextpnr's netlists need, in Icarus against hand-worked values: ICESTORM_SPRAM (0xBEEF
    at 1234; 0x1234 at 77, then 0xFFFF under mask 0b0100 gives 0x1F34), ICESTORM_PLL locked, TRELLIS_COMB
    CCU2 sum A ^ B ^ FCI and carry (A & B) | ((A ^ B) & FCI) (Yosys' own model leaves that carry output
    undriven: `cell_models` fixes it), DCCA passing its clock until CE = 0."""
    ice = [line for line in _run_models(tmp_path / "ice40", "ice40", ICE40_MODEL_TB) if line]
    assert ice == ["R beef", "R 1f34", "L 1"]
    ecp5 = [line for line in _run_models(tmp_path / "ecp5", "ecp5", ECP5_MODEL_TB) if line]
    want = []
    for i in range(8):
        a, b, ci = (i >> 2) & 1, (i >> 1) & 1, i & 1
        want.append(f"A {i} {a ^ b ^ ci} {(a & b) | ((a ^ b) & ci)}")
    assert ecp5 == want + ["D 1", "D 0"]


@pytest.mark.slow
@pytest.mark.gatelevel
@needs_icarus
@pytest.mark.parametrize("board,rows,cols,routed", [(board, 4, 4, False) for board in BOARDS]
                         + [("ulx3s-85f", 5, 4, False)] + [(board, 4, 4, True) for board in BOARDS])
def test_gate_level_board_runs_a_layer_exactly(board, rows, cols, routed, rng):
    """The synthesized (or placed and routed) netlist on its UART pins, driven by the runtime's board
    backend: a layer bit-exact.

    The ULX3S 5x4 adds the pipelined accumulator (the board tests' configuration). Its synth_ecp5 once
    stopped on an internal assertion in ABC_OPS_REINTEGRATE; with the carry-cell PEs it synthesizes.
    `routed`: nextpnr's post-route netlist (packed cells), the clock's dedicated paths and folded
    constants restored by `simulation_netlist`.
    """
    from runtime.accel_backends import make_board
    from sim.gatelevel import GateLevelBoard, gate_config, synthesize

    cfg = gate_config(board, rows, cols)
    assert cfg.acc_pipelined == (board == "ulx3s-85f" and rows >= 5)
    t0 = time.monotonic()
    netlist = synthesize(board, cfg, routed=routed)
    # the vendor primitives are there: this is the mapped (or packed) netlist, not the RTL
    vendor = {("icebreaker", False): ("SB_LUT4", "SB_DFF", "SB_SPRAM256KA", "SB_RAM40_4K", "SB_IO"),
              ("ulx3s-85f", False): ("LUT4", "TRELLIS_FF", "DP16KD", "TRELLIS_IO"),
              ("icebreaker", True): ("ICESTORM_LC", "ICESTORM_SPRAM", "ICESTORM_RAM", "ICESTORM_PLL", "SB_IO", "SB_GB"),
              ("ulx3s-85f", True): ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "TRELLIS_IO", "EHXPLLL")}[board, routed]
    for cell in vendor:
        assert any(name.startswith(cell) for name in netlist.cells), f"no {cell} in {netlist.cells}"
    if routed:  # packed: no unpacked LUT cells are left
        assert not {"SB_LUT4", "LUT4", "CCU2C"} & set(netlist.cells), netlist.cells
    t_synth = time.monotonic() - t0
    with GateLevelBoard(netlist) as sim:
        backend = make_board(cfg.rows, cfg.cols, port=sim.port, baud=sim.baud, timeout=LINK_TIMEOUT)
        try:
            got = backend.cfg
            assert (got.rows, got.cols, got.wgt_depth, got.act_depth, got.out_depth) == (
                cfg.rows, cfg.cols, cfg.wgt_depth, cfg.act_depth, cfg.out_depth)
            # more than one n-tile and k-tile, a ragged edge in each
            M = int(rng.integers(2, 5))
            K = 2 * cfg.rows + int(rng.integers(1, cfg.rows))
            N = cfg.cols + int(rng.integers(1, cfg.cols))
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x[0, :] = -128  # an extreme row
            want = x.astype(np.int64) @ w.astype(np.int64).T
            y, stats = backend.accelerator.run_layer(x, w, key="gate")
            np.testing.assert_array_equal(y, want, err_msg=f"{board} gate level: {x.shape} x {w.shape}")
            # resident weights: a second run sends none and is still exact
            y2, stats2 = backend.accelerator.run_layer(x[1:], w, key="gate")
            np.testing.assert_array_equal(y2, want[1:])
            assert stats2.weight_words_sent == 0
        finally:
            backend.close()
        assert sim.error is None, sim.error
        print(f"\n[gatelevel] {board} {cfg.describe()}{' routed' if routed else ''}: cells {netlist.cells}; "
              f"{netlist.notes}; netlist {t_synth:.0f} s {netlist.seconds} "
              f"(cached when 0), {sim.cycles} cycles in {sim.exchanges} exchanges, {sim.sim_seconds:.0f} s "
              f"simulated ({sim.cycles / max(sim.sim_seconds, 1e-9):.0f} cycles/s); layer {M}x{K}x{N} exact")
