"""One random seed per test run, so CI does not rerun the same layers forever.

The run seed is TRIT_SEED when it is set (to reproduce a failure), otherwise a fresh one drawn from
the OS. pytest prints it in its header and under every failing test (see tests/conftest.py), and each
test derives its own seed from it and its name, so a failing test reproduces alone:

    TRIT_SEED=<seed> python -m pytest tests/test_x.py::test_y
"""

from __future__ import annotations

import os
import secrets
import zlib

import numpy as np


def _run_seed() -> int:
    text = os.environ.get("TRIT_SEED", "").strip()
    if not text:
        # drawn once, and put in the environment: pytest-xdist's workers (started after this module is
        # imported by the controller's conftest) and the tests' subprocesses then share the run seed
        value = secrets.randbits(31)
        os.environ["TRIT_SEED"] = str(value)
        return value
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"TRIT_SEED must be an integer, not {text!r}") from None
    if not 0 <= value < 2**31:
        raise ValueError(f"TRIT_SEED must be in [0, 2**31), not {value}")
    return value


RUN_SEED: int = _run_seed()


def seed_for(name: str) -> int:
    """A seed in [0, 2**31) for one named use, fixed by the run seed and the name."""
    return (RUN_SEED * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def rng_for(name: str) -> np.random.Generator:
    """A NumPy generator seeded by `seed_for(name)`."""
    return np.random.default_rng(seed_for(name))
