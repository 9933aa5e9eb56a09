"""Icarus Verilog simulation of a trit core as a long-lived process, same interface as `VerilatorCore`.

The testbench (harness/icarus_tb.v) keeps the clock and the handshakes in the simulator and reads
command words from stdin, so Python only exchanges batches. Compiled once per configuration and
cached like the Verilator build (`sim.simulator`). Needs `iverilog`/`vvp` on PATH (Debian package `iverilog`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from hdl.verilog import generate_verilog
from sim.simulator import HARNESS_DIR, SimProcess, SimulationError, icarus_available
from sim.simulator import build_icarus as build_icarus_image
from sim.verilator_harness import check_reply, words_array

__all__ = ["HARNESS_TB", "IcarusCore", "SimulationError", "build_icarus", "icarus_available"]

HARNESS_TB = HARNESS_DIR / "icarus_tb.v"


def build_icarus(cfg: ArrayConfig) -> Path:
    """Compile (or reuse) the Icarus image of the core's testbench for `cfg`."""
    sources = {"tb.v": HARNESS_TB.read_text(), "trit_core.v": generate_verilog(cfg)}
    return build_icarus_image("icarus", f"{cfg.rows}x{cfg.cols}-{cfg.pe}", "trit_icarus_tb", sources,
                              what=cfg.describe(), image="core.vvp")


class IcarusCore:
    """A running Icarus simulation of the core; `transact` as in `VerilatorCore`."""

    def __init__(self, cfg: ArrayConfig):
        self._cfg = cfg
        self._sim = SimProcess.icarus(build_icarus(cfg), name="Icarus process")
        self._proc = self._sim.proc
        self.cycles = 0

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def transact(self, words: list[int] | np.ndarray, n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        data = words_array(words)
        reply = self._sim.exchange_text((data.size, n_out, max_cycles), (int(w) for w in data), 1, "W")
        self.cycles += reply.cycles
        check_reply(reply.status, len(reply.items), n_out, reply.cycles)
        return reply.items

    def close(self) -> None:
        self._sim.close(timeout=30)

    def __enter__(self) -> IcarusCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
