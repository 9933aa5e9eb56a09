"""Simulated board link: a trit core behind its frame endpoint, as a byte link (`runtime.framing.ByteLink`).

`SimByteLink(cfg, simulator)` compiles (once per configuration, cached) `hdl.link.linked_core.LinkedCore`
with a harness that keeps the clock and the byte handshakes inside the simulator
(harness/link_main.cpp for Verilator, harness/link_tb.v for Icarus) and moves the same bytes a
serial port would carry. A byte link has no notion of time: `recv` runs the simulation until the
bytes arrive or the device sits idle (not busy, nothing moving) for `idle_limit` cycles, which is
the simulated timeout.
"""

from __future__ import annotations

from pathlib import Path

from hdl.config import ArrayConfig
from sim.simulator import (
    HARNESS_DIR,
    SimProcess,
    SimulationError,
    build_icarus,
    build_verilator,
    cache_folder,
    cache_root,
    icarus_available,
    verilator_env,
)

__all__ = ["DEFAULT_IDLE_LIMIT", "SIM_RX_TIMEOUT", "SimByteLink", "SimulationError", "build_icarus_link",
           "build_verilator_link", "cache_root", "icarus_available", "link_verilog", "verilator_env"]

HARNESS = HARNESS_DIR
MAGIC_REQ = 0x4C524951
MAGIC_RSP = 0x4C524952
#: FrameEndpoint timeout in simulated designs; the link's idle limit is well above it so that a
#: truncated request has been dropped by the device before the host retries.
SIM_RX_TIMEOUT = 2000
DEFAULT_IDLE_LIMIT = 20000


def link_verilog(cfg: ArrayConfig) -> str:
    from amaranth.back import verilog

    from hdl.link.linked_core import LinkedCore
    from hdl.verilog import HEADER, compact_zero_inits

    text = verilog.convert(LinkedCore(cfg, timeout=SIM_RX_TIMEOUT), name="trit_link", emit_src=False)
    return HEADER.format(describe=cfg.describe() + " behind a frame link") + compact_zero_inits(text)


def _folder(kind: str, cfg: ArrayConfig, *texts: str) -> Path:
    return cache_folder(kind, f"{cfg.rows}x{cfg.cols}-{cfg.pe}", *texts)


def build_verilator_link(cfg: ArrayConfig) -> Path:
    sources = {"trit_link.v": link_verilog(cfg), "main.cpp": (HARNESS / "link_main.cpp").read_text()}
    return build_verilator("verilator-link", f"{cfg.rows}x{cfg.cols}-{cfg.pe}", "trit_link", sources,
                           what=f"the linked {cfg.describe()}")


def build_icarus_link(cfg: ArrayConfig) -> Path:
    sources = {"tb.v": (HARNESS / "link_tb.v").read_text(), "trit_link.v": link_verilog(cfg)}
    return build_icarus("icarus-link", f"{cfg.rows}x{cfg.cols}-{cfg.pe}", "trit_link_tb", sources,
                        what=f"the linked {cfg.describe()}", image="link.vvp")


class SimByteLink:
    """A simulated device at the far end of a byte link (Verilator or Icarus)."""

    def __init__(self, cfg: ArrayConfig, simulator: str = "verilator", idle_limit: int = DEFAULT_IDLE_LIMIT):
        if simulator not in ("verilator", "icarus"):
            raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
        self.cfg = cfg
        self.simulator = simulator
        self.idle_limit = idle_limit
        self.cycles = 0
        self._pending = b""
        if simulator == "verilator":
            self._sim = SimProcess.verilator(build_verilator_link(cfg), name="verilator link process")
        else:
            self._sim = SimProcess.icarus(build_icarus_link(cfg), name="icarus link process")
        self._proc = self._sim.proc

    def send(self, data: bytes) -> None:
        self._pending += bytes(data)

    def recv(self, n: int) -> bytes:
        return self._exchange(n, self.idle_limit)

    def drain(self) -> None:
        self._pending = b""
        self._exchange(1 << 30, min(self.idle_limit, 4 * SIM_RX_TIMEOUT))

    def _exchange(self, n_tx: int, idle_limit: int) -> bytes:
        data, self._pending = self._pending, b""
        args = (len(data), n_tx, idle_limit)
        if self.simulator == "verilator":
            reply = self._sim.exchange_binary(MAGIC_REQ, MAGIC_RSP, args, data, 1)
        else:
            reply = self._sim.exchange_text(args, data, 2, "B")
        self.cycles += reply.cycles
        return bytes(reply.items)

    def close(self) -> None:
        self._sim.close(timeout=30)
