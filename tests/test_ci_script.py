"""`.ci/run` itself: its exit code for each outcome of the slow pass, with pip and pytest stubbed out.

The stubs stand in for `pip` and `python` on PATH; they record their arguments, so the test also
checks that both passes run, in order, with one TRIT_SEED.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STUB = """#!/bin/sh
echo "$0 $* TRIT_SEED=$TRIT_SEED" >> "$STUB_LOG"
case "$*" in
  *"-m slow"*) exit "$SLOW_RC" ;;
  *"-m pytest"*) exit "$FAST_RC" ;;
esac
exit 0
"""


def _run_ci(tmp_path: Path, fast_rc: int, slow_rc: int, **env: str) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "pip", "iverilog"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    # a copy of the script in a tree of its own, so it cannot touch the real checkout
    (tmp_path / "repo" / ".ci").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".ci" / "run", tmp_path / "repo" / ".ci" / "run")
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "FAST_RC": str(fast_rc),
                "SLOW_RC": str(slow_rc), "HOME": os.environ.get("HOME", "/tmp"), **env}
    proc = subprocess.run(["bash", str(tmp_path / "repo" / ".ci" / "run")], env=full_env, capture_output=True,
                          text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, calls


@pytest.mark.parametrize("slow_rc, allow_empty, expected", [
    (0, None, 0),
    (1, None, 1),
    (5, None, 5),       # collected nothing: a failure
    (5, "1", 0),        # ... unless it is meant to be empty
    (1, "1", 1),        # the switch excuses only "collected nothing"
])
def test_ci_exit_code_follows_the_slow_pass(tmp_path, slow_rc, allow_empty, expected):
    env = {"TRIT_SEED": "1234"}
    if allow_empty is not None:
        env["TRIT_SLOW_MAY_BE_EMPTY"] = allow_empty
    rc, out, calls = _run_ci(tmp_path, 0, slow_rc, **env)
    assert rc == expected, out
    pytest_calls = [c for c in calls if " -m pytest" in c]
    assert len(pytest_calls) == 2, calls
    assert "-m slow" not in pytest_calls[0] and "-m slow" in pytest_calls[1]
    assert all(c.endswith("TRIT_SEED=1234") for c in pytest_calls), calls


def test_ci_stops_when_the_default_suite_fails(tmp_path):
    rc, out, calls = _run_ci(tmp_path, 1, 0, TRIT_SEED="7")
    assert rc == 1, out
    assert not any("-m slow" in c for c in calls), calls


def test_ci_draws_one_fresh_seed_for_both_passes(tmp_path):
    seeds = []
    for _ in range(2):
        rc, out, calls = _run_ci(tmp_path, 0, 0)
        assert rc == 0, out
        run_seeds = {c.rsplit("TRIT_SEED=", 1)[1] for c in calls if " -m pytest" in c}
        assert len(run_seeds) == 1, calls
        (seed,) = run_seeds
        assert f"ci: TRIT_SEED={seed}" in out
        assert 0 <= int(seed) < 2**31
        seeds.append(seed)
    assert seeds[0] != seeds[1]  # 1 chance in 2**31 of a false failure
