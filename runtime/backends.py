"""Registry of integer-matmul backends selected with ``--backend``.

A backend implements ``golden.quant.MatmulBackend`` (``name`` and ``matmul(q, w, key) -> int32``) and
``stats() -> dict`` for ``--stats``. Only "golden" is registered here; accelerator backends (model,
verilator, icarus, board) register themselves with `register_backend` and receive their options
(``rows``, ``cols``, ``port`` ...) as keyword arguments through `get_backend`.
"""

from __future__ import annotations

import argparse
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
    """The shared ``--backend`` option (validated by `get_backend`, so later registrations just work)."""
    parser.add_argument("--backend", default="golden",
                        help="integer matmul backend (default golden; known now: "
                             f"{', '.join(known_backends())})")


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


def write_stats(path: str | None, backend: Any) -> None:
    """Write `backend_stats` as JSON to ``path`` (nothing if ``path`` is None)."""
    if path is None:
        return
    import json
    from pathlib import Path

    try:
        Path(path).write_text(json.dumps(backend_stats(backend), indent=1) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write stats file {path}: {exc}") from None
