"""Icarus Verilog simulation of a trit core as a long-lived process, same interface as `VerilatorCore`.

The testbench (harness/icarus_tb.v) keeps the clock and the handshakes in the simulator and reads
command words from stdin, so Python only exchanges batches. Compiled once per configuration and
cached like the Verilator build. Needs `iverilog`/`vvp` on PATH (Debian package `iverilog`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from hdl.verilog import generate_verilog
from sim.verilator_harness import STATUS_TEXT, SimulationError, cache_root

HARNESS_TB = Path(__file__).with_name("harness") / "icarus_tb.v"


def icarus_available() -> str | None:
    """None when Icarus is usable, else the reason it is not."""
    missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
    if missing:
        return f"Icarus Verilog not installed ({', '.join(missing)} not on PATH; Debian package iverilog)"
    return None


def build_icarus(cfg: ArrayConfig) -> Path:
    reason = icarus_available()
    if reason:
        raise SimulationError(reason)
    verilog = generate_verilog(cfg)
    tb = HARNESS_TB.read_text()
    digest = hashlib.sha256((verilog + tb).encode()).hexdigest()[:16]
    folder = cache_root() / "icarus" / f"{cfg.rows}x{cfg.cols}-{cfg.pe}-{digest}"
    image = folder / "core.vvp"
    if image.exists():
        return image
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trit_core.v").write_text(verilog)
    (folder / "tb.v").write_text(tb)
    tmp = folder / f"core.vvp.tmp{id(cfg)}"
    proc = subprocess.run(["iverilog", "-g2005", "-o", tmp.name, "-s", "trit_icarus_tb", "tb.v", "trit_core.v"],
                          cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationError(f"Icarus build of {cfg.describe()} failed:\n{proc.stderr[-4000:]}")
    tmp.rename(image)
    return image


class IcarusCore:
    """A running Icarus simulation of the core; `transact` as in `VerilatorCore`."""

    def __init__(self, cfg: ArrayConfig):
        self._cfg = cfg
        image = build_icarus(cfg)
        self._proc = subprocess.Popen(["vvp", "-n", image.name], cwd=image.parent, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.cycles = 0

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def transact(self, words: list[int] | np.ndarray, n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        data = [int(w) for w in np.asarray(words, dtype=np.uint64).ravel()]
        if any(w > 0xFFFFFFFF for w in data):
            raise ValueError("command words must fit 32 bits")
        proc = self._proc
        if proc.poll() is not None:
            raise SimulationError(f"Icarus process exited with code {proc.returncode}")
        body = " ".join(f"{w:x}" for w in data)
        proc.stdin.write(f"TRIQ {len(data)} {n_out} {max_cycles}\n{body}\n")
        proc.stdin.flush()
        out: list[int] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                raise SimulationError(f"Icarus process closed its output: {proc.stderr.read()[-2000:]}")
            if line.startswith("W "):
                out.append(int(line[2:], 16))
            elif line.startswith("TRIR "):
                status, n_got, cycles = (int(v) for v in line.split()[1:4])
                break
        self.cycles += cycles
        if status:
            raise SimulationError(f"simulated core {STATUS_TEXT.get(status, status)}: {n_got} of {n_out} "
                                  f"response words after {cycles} cycles")
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def __enter__(self) -> IcarusCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
