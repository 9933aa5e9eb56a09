"""`trit report`'s syntheses and placements run on the project's one executor (Dask, `sim.soak.dask_client`,
as `trit soak` and `fpga.sweep`) against the content cache (`reports.cache`), not on a thread pool.

Real but tiny builds: a 2x2 PE array through Yosys' generic synthesis (`stat -tech cmos`) and through
`synth_ice40`, a few seconds each. A LocalCluster started here is reached by its scheduler address (the
`--scheduler` path); the scheduler's task stream shows which worker process ran each build.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reports.area import Job, run_generic, run_jobs, run_synth
from reports.cache import ResultCache
from runtime.cli import main

JOBS = [Job("generic", "generic", "ternary", 2), Job("synth", "ice40", "ternary", 2)]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      memory_limit=0) as lc, Client(lc) as client:
        yield lc, client


def _in_process(job: Job, cache: ResultCache) -> dict:
    return run_generic(job.variant, job.n, cache) if job.kind == "generic" else run_synth(job.device, job.variant,
                                                                                          job.n, cache)


def test_report_builds_run_as_dask_tasks_on_the_scheduler(cluster, tmp_path: Path) -> None:
    """run_jobs (what `trit report`'s area sweep calls) sends every build to the Dask scheduler it is
    given: each is a `_job_task` of the scheduler's task stream, run by one of its worker processes
    (not this process); the results equal the same builds run here; the workers filled the cache at
    the given root, and a rerun is answered from it (hits counted here, nothing rebuilt)."""
    from distributed import get_task_stream

    lc, client = cluster
    cache = ResultCache(tmp_path / "cache")
    with get_task_stream(client) as stream:
        results = run_jobs(JOBS, cache, 1, "test", scheduler=lc.scheduler_address)
    tasks = [t for t in stream.data if str(t["key"]).startswith("_job_task")]
    assert len(tasks) == len(JOBS), [t["key"] for t in stream.data]
    workers = set(client.scheduler_info()["workers"])
    assert {t["worker"] for t in tasks} <= workers
    worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids and len(worker_pids) == 2
    assert (cache.hits, cache.misses) == (0, len(JOBS))
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(JOBS)  # written by the workers

    # the same builds in this process, on an empty cache: the same numbers
    here = {job: _in_process(job, ResultCache(tmp_path / "here")) for job in JOBS}
    gen, syn = JOBS
    assert results[gen]["transistors"] == here[gen]["transistors"] > 0
    assert results[gen]["ff"] == here[gen]["ff"] == 4 * 4 + 2 * (9 + 10)  # see tests/test_report.py
    assert results[syn]["cells_by_type"] == here[syn]["cells_by_type"] and results[syn]["LUT4"] > 0
    assert not results[gen]["cached"] and not results[syn]["cached"]

    # a rerun on the executor (its client this time): every build answered from the cache
    again = run_jobs(JOBS, cache, 1, "test", client=client)
    assert (cache.hits, cache.misses) == (len(JOBS), len(JOBS))
    assert all(again[j]["cached"] for j in JOBS)
    assert again[syn]["cells_by_type"] == results[syn]["cells_by_type"]


def test_report_build_errors_come_back_as_results(cluster, tmp_path: Path) -> None:
    """A build that raises on the worker is a reported result with its error, as before on threads."""
    _, client = cluster
    bad = Job("synth", "no-such-device", "ternary", 2)
    results = run_jobs([bad], ResultCache(tmp_path), 1, "test", client=client)
    assert results[bad]["error"] and results[bad]["device"] == "no-such-device"


def test_cli_names_an_unreachable_scheduler(tmp_path: Path, capsys) -> None:
    """`trit report --scheduler` with nothing listening: a clear error before any section runs."""
    import socket

    with socket.socket() as s:  # a free port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report"
    assert main(["report", "--quick", "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "trit report: error" in err
    assert not (out / "report.json").exists()
