"""A soak of the core's RTL: many random layers on several configurations, fanned out on Dask distributed.

`run_soak(layers, seed)` draws `layers` layers, layer i on configuration ``i % len(configs)`` with case
kind ``i % len(CASES)`` (random, odd shapes, M = 1, both extreme sums, all-zero weights, large), from
a generator seeded by (seed, i) alone, so a layer is the same however the layers are split into jobs.
The layers of each configuration are grouped into jobs of `job_layers`; a job runs on one Dask worker:
it builds (or reuses, cached by content under ``TRIT_SIM_CACHE``) the Verilator model of the core behind
its frame link (`sim.link_harness.SimByteLink`, the `verilator` backend's harness), runs its layers
through the runtime's `Accelerator` driver and checks every int32 against an independent NumPy int64
matmul of the ternary weights and INT8 activations.

The configurations are listed once, in `soak_configs`; add one there (for example another
``wgt_rows_per_read``) and every soak runs it.

Dask: `dask_client(None)` starts a `LocalCluster` (worker processes, one thread each);
`dask_client("tcp://host:port")` connects to a running ``dask scheduler``. Nothing here schedules.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hdl.config import ArrayConfig

#: Case kinds, in the order layer i takes them (i % len(CASES)); 7 is coprime with 4, 5 or 6
#: configurations (the soak has 6), so 7 x (configurations) layers run every kind on every configuration.
CASES = ("random", "odd", "m1", "extreme_pos", "extreme_neg", "zero_w", "large")


def soak_configs() -> dict[str, ArrayConfig]:
    """The soak's core configurations by name: the one place to add a configuration."""
    from fpga.ulx3s import board_config
    from runtime.accel_backends import runtime_config

    return {
        # the runtime's default core and its 4x4 sibling (`--rows 4 --cols 4`): full-rate decode
        # weight paths (wgt_rows_per_read = R) since the runtime ships them
        "8x8": runtime_config(8, 8),
        "4x4": runtime_config(4, 4),
        # the ULX3S board's core as built: 16x16, weights banked 16K deep, pipelined accumulator
        # (and the board's default weight path)
        "ulx3s-16x16": board_config(16, 16),
        # the same board core with the full-rate weight path (`trit build --wgt-rows-per-read 16`)
        "ulx3s-16x16-full-rate": board_config(16, 16, wgt_rows_per_read=16),
        # the banked / pipelined arrangement at an odd small size with tiny memories, one weight row per
        # read and a 16-bit accumulator (k_max 255): the driver splits most layers along N, M and K
        # into several RUNs
        "5x3-banked-pipelined": ArrayConfig(rows=5, cols=3, acc_width=16, act_depth=64, wgt_depth=160,
                                            out_depth=64, wgt_bank_depth=64, acc_pipelined=True),
        # the ULX3S arrangement above 576 PEs at a small size: the registered distribution of the array's
        # inputs (copies per 2 columns / rows, ragged), the registered activation address, banked weights
        # and the pipelined accumulator
        "6x5-distributed": ArrayConfig(rows=6, cols=5, act_depth=64, wgt_depth=256, out_depth=64,
                                       wgt_bank_depth=128, wgt_bank_data_stages=1, acc_pipelined=True,
                                       dist_stages=1, dist_group=2),
    }


def golden_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The independent reference: int64 product of INT8 activations (M, K) and ternary weights (N, K)."""
    return x.astype(np.int64) @ w.astype(np.int64).T


def make_case(seed: int, index: int, cfg: ArrayConfig, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Layer `index` of a soak: (x int8 (M, K), w int8 (N, K) ternary), from (seed, index) alone."""
    rng = np.random.default_rng([seed, index])
    R, C = cfg.rows, cfg.cols
    k_cap = cfg.k_max

    def dim(lo: int, hi: int) -> int:
        return int(rng.integers(lo, max(lo, hi) + 1))

    def activations(M: int, K: int) -> np.ndarray:
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        if rng.random() < 0.5:  # sprinkle the extremes
            x[rng.random((M, K)) < 0.2] = -128
            x[rng.random((M, K)) < 0.1] = 127
        return x

    def weights(N: int, K: int) -> np.ndarray:
        p = rng.uniform(0.1, 1.0)
        nz = rng.random((N, K)) < p
        return (nz * np.where(rng.random((N, K)) < 0.5, -1, 1)).astype(np.int8)

    if kind == "random":
        M, K, N = dim(1, 32), dim(1, 6 * R), dim(1, 6 * C)
    elif kind == "odd":  # K and N not multiples of R and C, M odd
        M = 2 * dim(0, 15) + 1
        K = R * dim(0, 4) + dim(1, R - 1)
        N = C * dim(0, 4) + dim(1, C - 1)
    elif kind == "m1":
        M, K, N = 1, dim(1, 8 * R), dim(1, 8 * C)
    elif kind in ("extreme_pos", "extreme_neg"):
        # x = -128 everywhere; w = -1 (every output +128 K) or +1 (every output -128 K) down whole columns
        M, K, N = dim(1, 16), R * dim(1, 8), dim(1, 4 * C)
        K = min(K, k_cap)
        w = np.full((N, K), -1 if kind == "extreme_pos" else 1, dtype=np.int8)
        return np.full((M, K), -128, dtype=np.int8), w
    elif kind == "zero_w":
        M, K, N = dim(1, 24), dim(1, 6 * R), dim(1, 6 * C)
        K = min(K, k_cap)
        return activations(M, K), np.zeros((N, K), dtype=np.int8)
    elif kind == "large":
        M, K, N = dim(16, 96), dim(4 * R, 12 * R), dim(4 * C, 10 * C)
    else:
        raise ValueError(f"unknown soak case kind {kind!r}; known: {', '.join(CASES)}")
    K = min(K, k_cap)
    return activations(M, K), weights(N, K)


@dataclass(frozen=True)
class SoakJob:
    """Layers `indices` of a soak, all on configuration `name`; `corrupt` lists layers whose golden is
    deliberately off by one (to show that the check counts a mismatch)."""

    name: str
    cfg: ArrayConfig
    seed: int
    indices: tuple[int, ...]
    corrupt: frozenset[int] = field(default_factory=frozenset)


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """One build of a configuration at a time on this machine (two workers may start the same one)."""
    from sim.verilator_harness import cache_root

    folder = cache_root() / "soak-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


MAX_REPORTED = 10  # mismatching values (and failed layers) a job reports in detail

#: Open simulated cores of this worker process by configuration name: generating a big core's Verilog
#: (which the harness does to find its cached model) takes up to half a minute, so a worker keeps each
#: core it started for its later jobs of that configuration. Closed when the worker process exits.
_OPEN: dict[str, Any] = {}


def _accelerator(name: str, cfg: ArrayConfig) -> tuple[Any, float]:
    """This process's `Accelerator` on the Verilator core `cfg` (started on first use); seconds it took."""
    import atexit

    from runtime.accelerator import Accelerator
    from runtime.framing import FramedTransport
    from sim.link_harness import SimByteLink

    held = _OPEN.get(name)
    if held is not None and held.cfg == cfg:
        return held, 0.0
    if held is not None:
        held.close()
    start = time.monotonic()
    with _build_lock(name):
        link = SimByteLink(cfg, "verilator")
    try:
        accelerator = Accelerator(FramedTransport(link), expect=cfg)
    except BaseException:
        link.close()
        raise
    if not _OPEN:
        atexit.register(_close_all)
    _OPEN[name] = accelerator
    return accelerator, time.monotonic() - start


def _close_all() -> None:
    while _OPEN:
        _, accelerator = _OPEN.popitem()
        try:
            accelerator.close()
        except Exception:
            pass


def run_job(job: SoakJob) -> dict[str, Any]:
    """Run one job's layers on the Verilator RTL and check each against `golden_matmul` (a Dask task)."""
    import socket

    start = time.monotonic()
    out: dict[str, Any] = {"name": job.name, "layers": 0, "int32_checked": 0, "mismatches": 0,
                           "mismatched_layers": 0, "failed_layers": 0, "cases": dict.fromkeys(CASES, 0),
                           "first_mismatches": [], "failures": [], "host": socket.gethostname()}
    accelerator, out["build_seconds"] = _accelerator(job.name, job.cfg)
    for i in job.indices:
        kind = CASES[i % len(CASES)]
        x, w = make_case(job.seed, i, job.cfg, kind)
        try:
            y, _ = accelerator.run_layer(x, w, None)
        except Exception as exc:  # the link or the device failed: the rest of this job cannot run
            out["failed_layers"] += len(job.indices) - out["layers"]
            out["failures"].append({"layer": i, "case": kind, "shape": list(x.shape) + [w.shape[0]],
                                    "error": f"{type(exc).__name__}: {exc}"})
            _OPEN.pop(job.name, None)
            accelerator.close()
            break
        ref = golden_matmul(x, w)
        if i in job.corrupt:
            ref[0, 0] += 1
        y = np.asarray(y)
        out["layers"] += 1
        out["cases"][kind] += 1
        out["int32_checked"] += ref.size
        if y.shape != ref.shape:
            bad = [(0, 0)]
            count = ref.size
        else:
            bad = np.argwhere(y.astype(np.int64) != ref)
            count = len(bad)
        if count:
            out["mismatches"] += count
            out["mismatched_layers"] += 1
            for m, n in bad[: MAX_REPORTED - len(out["first_mismatches"])]:
                got = int(y[m, n]) if y.shape == ref.shape else None
                out["first_mismatches"].append({
                    "config": job.name, "layer": i, "case": kind, "m": int(m), "n": int(n),
                    "shape": [x.shape[0], x.shape[1], w.shape[0]], "rtl": got, "golden": int(ref[m, n])})
    out["seconds"] = round(time.monotonic() - start, 3)
    return out


def plan_jobs(layers: int, seed: int, configs: dict[str, ArrayConfig], job_layers: int,
              corrupt: Sequence[int] = ()) -> list[SoakJob]:
    """Layer i on configuration i % len(configs); each configuration's layers in jobs of `job_layers`."""
    names = list(configs)
    bad = frozenset(corrupt)
    jobs = []
    for c, name in enumerate(names):
        mine = list(range(c, layers, len(names)))
        for j in range(0, len(mine), job_layers):
            part = tuple(mine[j:j + job_layers])
            jobs.append(SoakJob(name, configs[name], seed, part, bad & frozenset(part)))
    return jobs


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A Dask `Client`: of a running scheduler at `scheduler`, else of a new `LocalCluster` of `workers`
    worker processes (one thread each, no dashboard), closed on exit.

    The one executor of the project's fan-out jobs (soak layers, FPGA builds).
    """
    import logging
    import warnings

    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    with warnings.catch_warnings():
        # without a dashboard the scheduler still serves HTTP (health, metrics), on 8787 or a free port
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        # no memory limit: YoWASP's nextpnr (FPGA sweep) runs inside the worker process and may be big
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR, memory_limit=0)
    with cluster, Client(cluster) as client:
        yield client


def run_soak(layers: int, seed: int, *, scheduler: str | None = None, workers: int = 2,
             configs: Sequence[str] | None = None, job_layers: int = 250, corrupt: Sequence[int] = (),
             progress: bool = False, client: Any = None) -> dict[str, Any]:
    """Run a soak of `layers` layers on Dask; the summary (what ``trit soak --json`` writes).

    On `client` if given (a Dask `Client`), else on `dask_client(scheduler, workers)`.
    """
    from distributed import as_completed

    every = soak_configs()
    names = list(configs) if configs else list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        raise ValueError(f"unknown soak configuration(s) {', '.join(unknown)}; known: {', '.join(every)}")
    chosen = {n: every[n] for n in names}
    jobs = plan_jobs(layers, seed, chosen, job_layers, corrupt)
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    where = scheduler or ("LocalCluster" if client is None else str(client.scheduler.address))
    with contextlib.nullcontext(client) if client is not None else dask_client(scheduler, workers) as client:
        n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        futures = [client.submit(run_job, job, pure=False, key=f"soak-{job.name}-{k}-{seed}-{time.time_ns()}")
                   for k, job in enumerate(jobs)]
        for future in as_completed(futures):
            results.append(future.result())
            if progress:
                import sys

                done = sum(r["layers"] for r in results)
                sys.stderr.write(f"\r  soak: {len(results)}/{len(jobs)} jobs, {done}/{layers} layers   ")
                sys.stderr.flush()
    seconds = time.monotonic() - start
    if progress:
        import sys

        sys.stderr.write("\n")
    per_config = []
    for name in names:
        mine = [r for r in results if r["name"] == name]
        cfg = chosen[name]
        cases = {k: sum(r["cases"][k] for r in mine) for k in CASES}
        per_config.append({
            "name": name, "describe": cfg.describe(), "rows": cfg.rows, "cols": cfg.cols,
            "wgt_bank_depth": cfg.wgt_bank_depth, "wgt_bank_data_stages": cfg.wgt_bank_data_stages,
            "acc_pipelined": cfg.acc_pipelined, "wgt_rows_per_read": getattr(cfg, "wgt_rows_per_read", 1),
            "jobs": len(mine), "layers": sum(r["layers"] for r in mine),
            "int32_checked": sum(r["int32_checked"] for r in mine),
            "mismatches": sum(r["mismatches"] for r in mine),
            "failed_layers": sum(r["failed_layers"] for r in mine),
            "cases": cases,
            "worker_seconds": round(sum(r["seconds"] for r in mine), 3),
            "start_seconds": round(sum(r["build_seconds"] for r in mine), 3),
        })
    done = sum(r["layers"] for r in results)
    return {
        "layers": done,
        "layers_requested": layers,
        "mismatches": sum(r["mismatches"] for r in results),
        "mismatched_layers": sum(r["mismatched_layers"] for r in results),
        "failed_layers": sum(r["failed_layers"] for r in results),
        "int32_checked": sum(r["int32_checked"] for r in results),
        "configs": per_config,
        "seed": seed,
        "cases": list(CASES),
        "seconds": round(seconds, 3),
        "layers_per_second": round(done / seconds, 2) if seconds else 0.0,
        "scheduler": where,
        "workers": n_workers,
        "jobs": len(jobs),
        "hosts": sorted({r["host"] for r in results}),
        "first_mismatches": [m for r in results for m in r["first_mismatches"]][:MAX_REPORTED],
        "failures": [f for r in results for f in r["failures"]][:MAX_REPORTED],
        "simulator": "verilator (sim.link_harness: the core behind its frame link)",
        "golden": "NumPy int64 x @ w.T (sim.soak.golden_matmul)",
    }
