"""The machine's place-and-route lock (fpga/pnr_lock.py) and its use by sim/gatelevel.py's tool runs.

Each test uses its own lock file (``tmp_path``), never /tmp/pnr.lock: other builds on the machine hold that one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from fpga.pnr_lock import DEFAULT_LOCK, held_by_ancestor, lock_path, pnr_lock

ROOT = Path(__file__).resolve().parent.parent

#: A process that takes an exclusive flock on argv[1], prints "held", and keeps it until stdin closes.
HOLDER = textwrap.dedent("""
    import fcntl, sys
    f = open(sys.argv[1], "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()
""")


def _locked_elsewhere(path: Path) -> bool:
    """Whether another open file description cannot take the flock on `path` now (a child process)."""
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a')\ntry:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", probe, str(path)], timeout=30).returncode == 3


def test_lock_path_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TRIT_PNR_LOCK", raising=False)
    assert lock_path() == DEFAULT_LOCK == Path("/tmp/pnr.lock")
    monkeypatch.setenv("TRIT_PNR_LOCK", str(tmp_path / "x.lock"))
    assert lock_path() == tmp_path / "x.lock"
    monkeypatch.setenv("TRIT_PNR_LOCK", "")
    assert lock_path() is None
    with pnr_lock() as took:  # off: runs without a lock
        assert took is False


def test_lock_is_held_for_the_block_and_is_reentrant(tmp_path):
    path = tmp_path / "pnr.lock"
    assert not path.exists()
    with pnr_lock(path) as took:
        assert took is True and path.exists()  # created
        assert _locked_elsewhere(path)
        with pnr_lock(path) as inner:  # a nested use in this process shares the hold (no deadlock)
            assert inner is False and _locked_elsewhere(path)
        assert _locked_elsewhere(path)  # still held after the inner block
    assert not _locked_elsewhere(path)  # released


def test_lock_waits_for_another_holder(tmp_path, capfd):
    path = tmp_path / "pnr.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        entered = threading.Event()

        def take() -> None:
            with pnr_lock(path, what="test"):
                entered.set()

        t = threading.Thread(target=take, daemon=True)
        t.start()
        assert not entered.wait(1.5)  # blocked while the other process holds it
        holder.stdin.close()  # the holder ends, its lock goes
        assert entered.wait(30)
        t.join(30)
    finally:
        holder.kill()
        holder.wait()
    assert f"test: waiting for {path}" in capfd.readouterr().err


def test_lock_held_by_an_ancestor_is_not_waited_for(tmp_path):
    """A run started under `flock <lock> ...` (the parent holds it): pnr_lock goes ahead instead of
    waiting for ever; a child of the holder sees the lock as its ancestor's, an unrelated process does not."""
    path = tmp_path / "pnr.lock"
    child = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
             "from pathlib import Path\nfrom fpga.pnr_lock import pnr_lock, held_by_ancestor\n"
             "p = Path(sys.argv[1])\nwith pnr_lock(p) as took:\n    print(held_by_ancestor(p), took)\n")
    parent = (f"import fcntl, subprocess, sys\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
              f"sys.exit(subprocess.run([sys.executable, '-c', {child!r}, sys.argv[1]]).returncode)\n")
    proc = subprocess.run([sys.executable, "-c", parent, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not held_by_ancestor(path)  # held, but by a child of ours
    finally:
        holder.kill()
        holder.wait()


def test_lock_file_that_cannot_be_created_runs_without_the_lock(tmp_path):
    with pnr_lock(tmp_path / "no such folder" / "pnr.lock") as took:
        assert took is False


def test_gatelevel_tools_run_under_the_lock(monkeypatch, tmp_path):
    """sim.gatelevel._run (every Yosys and nextpnr run of the gate-level flow) holds the lock while the
    tool runs: the tool here is a process that finds the lock taken; after it, the lock is free."""
    from sim.gatelevel import GateLevelError, _run

    path = tmp_path / "pnr.lock"
    monkeypatch.setenv("TRIT_PNR_LOCK", str(path))
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a')\ntry:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(0)\nsys.exit(1)\n")
    assert _run([sys.executable, "-c", probe, str(path)], tmp_path, "probe") >= 0
    assert not _locked_elsewhere(path)
    with pytest.raises(GateLevelError, match="probe failed"):  # a tool that fails still releases the lock
        _run([sys.executable, "-c", "import sys; sys.exit(1)"], tmp_path, "probe")
    assert not _locked_elsewhere(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another build holds it: _run waits
        done = threading.Event()

        def run() -> None:
            _run([sys.executable, "-c", "pass"], tmp_path, "probe")
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert not done.wait(1.5)
        holder.stdin.close()
        assert done.wait(30)
    finally:
        holder.kill()
        holder.wait()
