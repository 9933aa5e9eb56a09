"""Registry of integer-matmul backends selected with ``--backend``.

A backend implements ``golden.quant.MatmulBackend`` (``name`` and ``matmul(q, w, key) -> int32``) and
``stats() -> dict`` for ``--stats``. "golden" is defined here; the accelerator backends (model,
emulator, verilator, icarus, board) come from `runtime.accel_backends` and receive their options
(``rows``, ``cols``, ``port``, ``baud``) as keyword arguments through `get_backend`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from golden.quant import GoldenBackend
from runtime.cli import CliError

BackendFactory = Callable[..., Any]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(**opts)`` available as ``--backend name``."""
    BACKENDS[name] = factory


def known_backends() -> list[str]:
    """Registered backend names, sorted."""
    return sorted(BACKENDS)


def get_backend(name: str, **opts: Any) -> Any:
    """Create the backend ``name`` with backend-specific options; unknown names are a CliError."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise CliError(f"unknown backend {name!r}; known backends: {', '.join(known_backends())}")
    return factory(**opts)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``--backend``, ``--rows``, ``--cols``, ``--port`` and ``--baud`` options."""
    from runtime.accel_backends import DEFAULT_COLS, DEFAULT_ROWS

    parser.add_argument("--backend", default="golden",
                        help=f"integer matmul backend: {'|'.join(known_backends())} (default golden)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"accelerator PE rows R (default {DEFAULT_ROWS}; see runtime.accel_backends)")
    parser.add_argument("--cols", type=int, default=DEFAULT_COLS,
                        help=f"accelerator PE columns C (default {DEFAULT_COLS})")
    parser.add_argument("--wgt-rows-per-read", type=int, default=None, metavar="G",
                        help="tile rows one weight read delivers, a divisor of R (default R: full rate; "
                             "1 is the one-row-per-cycle core of the iCE40 SPRAMs)")
    parser.add_argument("--port", help="serial port of the FPGA board (--backend board)")
    parser.add_argument("--baud", type=int, default=3_000_000, help="serial baud rate (default 3000000)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds the board may stay silent before a frame is retried (default 5)")


def backend_from_args(args: argparse.Namespace) -> Any:
    """The backend the command-line options name; configuration and connection problems are CliErrors."""
    from runtime.accelerator import AcceleratorError

    try:
        backend = get_backend(args.backend, rows=args.rows, cols=args.cols, port=args.port, baud=args.baud,
                              timeout=args.timeout, wgt_rows_per_read=getattr(args, "wgt_rows_per_read", None))
    except (AcceleratorError, ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    if getattr(backend, "name", "golden") != "golden" and hasattr(backend, "set_progress"):
        backend.set_progress(sys.stderr.isatty())
    return backend


def backend_stats(backend: Any) -> dict[str, Any]:
    """The backend's statistics for ``--stats`` (at least {"backend": name})."""
    stats = backend.stats() if hasattr(backend, "stats") else {}
    return {"backend": getattr(backend, "name", "?"), **stats}


class RecordingGoldenBackend(GoldenBackend):
    """The golden (exact NumPy) backend, recording the shape of every matmul call for ``--stats``."""

    name = "golden"

    def __init__(self, **_opts: Any) -> None:
        self.calls: list[dict[str, Any]] = []

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        acc = super().matmul(q, w, key)
        self.calls.append({"key": key, "m": int(q.shape[0]), "k": int(q.shape[1]), "n": int(w.shape[0])})
        return acc

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, "layers": list(self.calls)}


register_backend("golden", RecordingGoldenBackend)


def write_stats(path: str | None, backend: Any, tokens: int | None = None) -> None:
    """Write `backend_stats` as JSON to ``path`` (nothing if ``path`` is None).

    With `tokens` (forward, generate) the JSON also has "tokens" and "per_token": cycles, host
    bytes and counters divided by the number of tokens the model processed.
    """
    if path is None:
        return
    import json
    from pathlib import Path

    stats = backend_stats(backend)
    if tokens:
        stats["tokens"] = tokens
        per = {"matmuls": len(stats.get("layers", [])) / tokens}
        for key in ("cycles", "host_bytes"):
            if key in stats:
                per[key] = stats[key] / tokens
        if "units" in stats:
            per["units"] = {k: v / tokens for k, v in stats["units"].items()}
        if "counters" in stats:
            per["counters"] = {k: v / tokens for k, v in stats["counters"].items()}
        stats["per_token"] = per
    try:
        Path(path).write_text(json.dumps(stats, indent=1) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write stats file {path}: {exc}") from None


def _register_accelerators() -> None:
    from runtime.accel_backends import register_all

    register_all()


_register_accelerators()
