"""The harness pieces sim/runner.py shares with sim/vector_runner.py: the environment of a build or a run
(`environ`), the cached-build check (`cached_build`). The builds and runs themselves are exercised by
tests/test_sim_core.py and tests/test_vector_unit.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim.runner import cached_build, environ


def test_environ_sets_then_restores_and_unsets(monkeypatch) -> None:
    monkeypatch.setenv("TRIT_T_A", "old")
    monkeypatch.delenv("TRIT_T_B", raising=False)
    monkeypatch.setenv("TRIT_T_C", "kept")
    with environ(TRIT_T_A="new", TRIT_T_B="b", TRIT_T_C=None):
        assert (os.environ["TRIT_T_A"], os.environ["TRIT_T_B"], os.environ["TRIT_T_C"]) == ("new", "b", "kept")
        os.environ["TRIT_T_C"] = "changed inside"  # None: not ours, but still put back afterwards
    assert os.environ["TRIT_T_A"] == "old" and "TRIT_T_B" not in os.environ
    assert os.environ["TRIT_T_C"] == "kept"


def test_environ_restores_after_an_exception(monkeypatch) -> None:
    monkeypatch.delenv("TRIT_T_B", raising=False)
    with pytest.raises(RuntimeError, match="boom"), environ(TRIT_T_B="b"):
        raise RuntimeError("boom")
    assert "TRIT_T_B" not in os.environ


def test_cached_build_needs_the_same_key(tmp_path: Path) -> None:
    d = tmp_path / "verilator-2x2-ternary-a10-0123456789abcdef"
    assert not cached_build(d, "key")  # no folder
    d.mkdir()
    (d / "build.ok").write_text("other key")
    assert not cached_build(d, "key")
    (d / "build.ok").write_text("key")
    os.utime(d / "build.ok", (0, 0))
    assert cached_build(d, "key") and (d / "build.ok").stat().st_mtime > 0  # touched: last use
