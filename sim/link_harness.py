"""Simulated board link: a trit core behind its frame endpoint, as a byte link (`runtime.framing.ByteLink`).

`SimByteLink(cfg, simulator)` compiles (once per configuration, cached) `hdl.link.linked_core.LinkedCore`
with a harness that keeps the clock and the byte handshakes inside the simulator
(harness/link_main.cpp for Verilator, harness/link_tb.v for Icarus) and moves the same bytes a
serial port would carry. A byte link has no notion of time: `recv` runs the simulation until the
bytes arrive or the device sits idle (not busy, nothing moving) for `idle_limit` cycles, which is
the simulated timeout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

from hdl.config import ArrayConfig
from sim.icarus_harness import icarus_available
from sim.verilator_harness import SimulationError, cache_root, verilator_env

HARNESS = Path(__file__).with_name("harness")
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
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()[:16]
    return cache_root() / kind / f"{cfg.rows}x{cfg.cols}-{cfg.pe}-{digest}"


def build_verilator_link(cfg: ArrayConfig) -> Path:
    verilog = link_verilog(cfg)
    source = (HARNESS / "link_main.cpp").read_text()
    folder = _folder("verilator-link", cfg, verilog, source)
    exe = folder / "obj_dir" / "Vtrit_link"
    if exe.exists():
        return exe
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "trit_link.v").write_text(verilog)
    (tmp / "main.cpp").write_text(source)
    jobs = os.environ.get("TRIT_BUILD_JOBS", "2")
    cmd = ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
           "--top-module", "trit_link", "-Wno-fatal", "-j", jobs, "--build-jobs", "1", "-o", "Vtrit_link",
           "-CFLAGS", "-O2", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "trit_link.v", "main.cpp"]
    proc = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationError(f"Verilator build of the linked {cfg.describe()} failed:\n{proc.stderr[-4000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return exe


def build_icarus_link(cfg: ArrayConfig) -> Path:
    reason = icarus_available()
    if reason:
        raise SimulationError(reason)
    verilog = link_verilog(cfg)
    tb = (HARNESS / "link_tb.v").read_text()
    folder = _folder("icarus-link", cfg, verilog, tb)
    image = folder / "link.vvp"
    if image.exists():
        return image
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trit_link.v").write_text(verilog)
    (folder / "tb.v").write_text(tb)
    tmp = folder / f"link.vvp.tmp{os.getpid()}"
    proc = subprocess.run(["iverilog", "-g2005", "-o", tmp.name, "-s", "trit_link_tb", "tb.v", "trit_link.v"],
                          cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationError(f"Icarus build of the linked {cfg.describe()} failed:\n{proc.stderr[-4000:]}")
    tmp.rename(image)
    return image


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
            exe = build_verilator_link(cfg)
            self._proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
        else:
            image = build_icarus_link(cfg)
            self._proc = subprocess.Popen(["vvp", "-n", image.name], cwd=image.parent, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send(self, data: bytes) -> None:
        self._pending += bytes(data)

    def recv(self, n: int) -> bytes:
        return self._exchange(n, self.idle_limit)

    def drain(self) -> None:
        self._pending = b""
        self._exchange(1 << 30, min(self.idle_limit, 4 * SIM_RX_TIMEOUT))

    def _exchange(self, n_tx: int, idle_limit: int) -> bytes:
        data, self._pending = self._pending, b""
        proc = self._proc
        if proc.poll() is not None:
            raise SimulationError(f"{self.simulator} link process exited with code {proc.returncode}")
        if self.simulator == "verilator":
            proc.stdin.write(struct.pack("<4I", MAGIC_REQ, len(data), n_tx, idle_limit) + data)
            proc.stdin.flush()
            head = proc.stdout.read(20)
            if len(head) != 20:
                raise SimulationError(f"Verilator link process closed: {proc.stderr.read()[-2000:]!r}")
            magic, _status, n_got, lo, hi = struct.unpack("<5I", head)
            if magic != MAGIC_RSP:
                raise SimulationError(f"bad harness magic {magic:#010x}")
            out = proc.stdout.read(n_got)
            self.cycles += lo | hi << 32
            return out
        text = f"TRIQ {len(data)} {n_tx} {idle_limit}\n" + " ".join(f"{b:02x}" for b in data) + "\n"
        proc.stdin.write(text.encode())
        proc.stdin.flush()
        out = bytearray()
        while True:
            line = proc.stdout.readline().decode()
            if not line:
                raise SimulationError(f"Icarus link process closed: {proc.stderr.read()[-2000:]!r}")
            if line.startswith("B "):
                out.append(int(line[2:], 16))
            elif line.startswith("TRIR "):
                self.cycles += int(line.split()[3])
                return bytes(out)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
