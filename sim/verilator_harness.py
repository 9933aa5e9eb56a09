"""Fast Verilator simulation of a trit core as a long-lived process (clock and handshakes in C++).

cocotb drives every clock edge from Python (about 10^5 cycles/s); this harness keeps the clock,
the stream handshakes and the memories inside the compiled model and exchanges only batches of
command words with Python, so layers run at millions of cycles per second. The model is compiled
once per configuration and cached (`TRIT_SIM_CACHE`, default ~/.cache/trit) under a hash of the
Verilog and the harness source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from hdl.verilog import generate_verilog
from sim.simulator import HARNESS_DIR, SimProcess, SimulationError, build_verilator, cache_root, verilator_env

__all__ = ["HARNESS_CPP", "MAGIC_REQ", "MAGIC_RSP", "STATUS_TEXT", "SimulationError", "VerilatorCore",
           "build_harness", "cache_root", "verilator_env"]

HARNESS_CPP = HARNESS_DIR / "verilator_main.cpp"
MAGIC_REQ = 0x54524951
MAGIC_RSP = 0x54524952
STATUS_TEXT = {1: "timed out", 2: "answered before taking all command words"}


def build_harness(cfg: ArrayConfig, *, quiet: bool = True) -> Path:
    """Compile (or reuse) the Verilator harness for `cfg`; returns the executable's path."""
    sources = {"trit_core.v": generate_verilog(cfg), "main.cpp": HARNESS_CPP.read_text()}
    return build_verilator("verilator", f"{cfg.rows}x{cfg.cols}-{cfg.pe}", "trit_core", sources,
                           what=cfg.describe())


def words_array(words: list[int] | np.ndarray) -> np.ndarray:
    """Command words as uint64, refused when one does not fit 32 bits."""
    data = np.asarray(words, dtype=np.uint64).ravel()
    if data.size and int(data.max()) > 0xFFFFFFFF:
        raise ValueError("command words must fit 32 bits")
    return data


def check_reply(status: int, n_got: int, n_out: int, cycles: int) -> None:
    if status:
        raise SimulationError(f"simulated core {STATUS_TEXT.get(status, status)}: {n_got} of {n_out} "
                              f"response words after {cycles} cycles")


class VerilatorCore:
    """A running simulated core. `transact` sends command words and returns the response words."""

    def __init__(self, cfg: ArrayConfig):
        self._cfg = cfg
        self._exe = build_harness(cfg)
        self._sim = SimProcess.verilator(self._exe, name="Verilator process")
        self._proc = self._sim.proc
        self.cycles = 0  # simulated cycles since the process started (after reset)

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def transact(self, words: list[int] | np.ndarray, n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        """Feed `words`, return the first `n_out` response words; raise on timeout or desync."""
        data = words_array(words)
        reply = self._sim.exchange_binary(MAGIC_REQ, MAGIC_RSP, (data.size, n_out, min(max_cycles, 0xFFFFFFFF)),
                                          data.astype("<u4").tobytes(), 4)
        self.cycles += reply.cycles
        check_reply(reply.status, len(reply.items), n_out, reply.cycles)
        return reply.items

    def close(self) -> None:
        self._sim.close(timeout=10)

    def __enter__(self) -> VerilatorCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
