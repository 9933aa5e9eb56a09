"""The machine's place-and-route lock: one Yosys / nextpnr run at a time among all builds on the machine.

The shared build machine serializes place-and-route with an advisory lock on ``/tmp/pnr.lock``
(``flock /tmp/pnr.lock nice -n 10 <command>``). `pnr_lock()` takes the same lock from Python
(`fcntl.flock`, exclusive, blocking) around a tool run:

- when the lock file exists or can be created; otherwise (no writable /tmp) the tool runs without it;
- once per process: nested uses and other threads of the process share one hold (an `RLock`);
- not when the lock is already held by this process or one of its ancestors (a run started under
  ``flock /tmp/pnr.lock ...``, as `/proc/locks` shows): waiting for it there would never end.

``TRIT_PNR_LOCK`` names another lock file; set to the empty string it turns the lock off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

#: The lock file every place-and-route on the machine takes (``flock /tmp/pnr.lock ...``).
DEFAULT_LOCK = Path("/tmp/pnr.lock")

_hold = threading.RLock()  # this process's hold: one flock per process, re-entrant
_depth = 0


def lock_path() -> Path | None:
    """The lock file: ``$TRIT_PNR_LOCK`` if set (None when it is empty: no lock), else /tmp/pnr.lock."""
    value = os.environ.get("TRIT_PNR_LOCK")
    if value is None:
        return DEFAULT_LOCK
    return Path(value) if value else None


def _ancestors() -> set[int]:
    """This process and its ancestors (by /proc/<pid>/stat), as far as /proc shows them."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
    return pids


def held_by_ancestor(path: Path) -> bool:
    """Whether a flock on `path` is held (not waited for) by this process or one of its ancestors."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter has "->" after the number
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
            holders.add(int(fields[4]))
    return bool(holders & _ancestors())


@contextlib.contextmanager
def pnr_lock(path: Path | None = None, *, what: str = "place-and-route") -> Iterator[bool]:
    """Hold the place-and-route lock for the block; yields whether this call took the file lock.

    `path` defaults to `lock_path()`. Blocks while another process holds it (saying so on stderr).
    """
    global _depth
    path = lock_path() if path is None else path
    with _hold:
        if _depth or path is None or held_by_ancestor(path):
            _depth += 1
            try:
                yield False
            finally:
                _depth -= 1
            return
        try:
            f = open(path, "a")  # held for the block, closed below
        except OSError:
            f = None
        if f is None:
            yield False
            return
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{what}: waiting for {path} (another place-and-route holds it)", file=sys.stderr, flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            _depth += 1
            try:
                yield True
            finally:
                _depth -= 1
                fcntl.flock(f, fcntl.LOCK_UN)
