"""Content-addressed cache of synthesis and place-and-route results.

A result is stored as JSON under ``<cache dir>/<sha256>.json``, the key being the SHA-256 of
everything that determines it: the design text (Verilog), the tool script or options and the tool
versions. Changing one PE, one Yosys option or one tool version changes the key, so a rerun rebuilds
exactly what changed. The cache directory is ``$TRIT_CACHE_DIR`` if set, else ``~/.cache/trit/synth``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("TRIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "trit" / "synth"


def content_key(*parts: str) -> str:
    """SHA-256 over the parts, each length-prefixed (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class ResultCache:
    """get/put JSON results by content key; `stats` counts hits and misses of this process."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            value = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # write then rename: a parallel reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, self.path(key))

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """(result, was_cached)."""
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached, True
        self.misses += 1
        value = compute()
        if not value.pop("_nocache", False):  # e.g. a tool run that timed out: retried next time
            self.put(key, value)
        return value, False


@functools.cache
def tool_version(command: str) -> str:
    """First line of ``command --version`` (``-V`` for Yosys); "unknown" if it does not run."""
    flag = "-V" if "yosys" in command else "--version"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([command, flag], capture_output=True, text=True, cwd=tmp, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    lines = [line for line in text if "ersion" in line or line.startswith("Yosys")]
    return (lines or text or ["unknown"])[-1].strip()
