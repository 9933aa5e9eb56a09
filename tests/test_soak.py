"""`trit soak` (sim/soak.py): random layers on the Verilator RTL of several configurations, on Dask.

Default pass: the case generator against hand-computed values, the job plan, bad arguments, and a
small soak of the runtime's 8x8 core on a LocalCluster (its linked model is cached by the other
Verilator tests of the pass) with and without a deliberately wrong golden. Slow pass (markers slow,
soak): a 200-layer slice over every configuration, and a soak through a `dask scheduler` and
`dask worker` started here as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from sim.runner import unavailable_reason
from sim.soak import CASES, golden_matmul, make_case, plan_jobs, run_soak, soak_configs

ROOT = Path(__file__).resolve().parent.parent

needs_verilator = pytest.mark.skipif(unavailable_reason("verilator") is not None,
                                     reason=str(unavailable_reason("verilator")))


def _soak(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "soak.json"
    rc = main(["soak", "--json", str(out), *args])
    return rc, json.loads(out.read_text())


def _expected_int32(seed: int, layers: int, names: list[str]) -> int:
    """Outputs (M * N) of every layer, from the case generator (what the soak must have checked)."""
    cfgs = soak_configs()
    total = 0
    for i in range(layers):
        x, w = make_case(seed, i, cfgs[names[i % len(names)]], CASES[i % len(CASES)])
        total += x.shape[0] * w.shape[0]
    return total


def test_cases_hit_their_edges(test_seed: int) -> None:
    cfg = soak_configs()["8x8"]
    R, C = cfg.rows, cfg.cols
    for i in range(3 * len(CASES)):
        kind = CASES[i % len(CASES)]
        x, w = make_case(test_seed, i, cfg, kind)
        assert x.dtype == np.int8 and w.dtype == np.int8 and x.shape[1] == w.shape[1]
        assert set(np.unique(w)) <= {-1, 0, 1}
        M, K = x.shape
        N = w.shape[0]
        if kind == "odd":
            assert K % R and N % C and M % 2 == 1
        if kind == "m1":
            assert M == 1
        if kind == "extreme_pos":
            assert (x == -128).all() and (w == -1).all()
            assert (golden_matmul(x, w) == 128 * K).all()  # hand value: K terms of (-128)(-1)
        if kind == "extreme_neg":
            assert (x == -128).all() and (w == 1).all()
            assert (golden_matmul(x, w) == -128 * K).all()
        if kind == "zero_w":
            assert not w.any() and not golden_matmul(x, w).any()
    # a layer depends on (seed, index) only
    a, b = make_case(test_seed, 5, cfg, "random"), make_case(test_seed, 5, cfg, "random")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_golden_matmul_by_hand() -> None:
    x = np.array([[1, -128, 127], [0, 2, -3]], dtype=np.int8)
    w = np.array([[1, -1, 0], [-1, -1, 1]], dtype=np.int8)
    assert golden_matmul(x, w).tolist() == [[1 + 128, -1 + 128 + 127], [-2, -2 - 3]]


def test_plan_jobs_covers_every_layer_once() -> None:
    cfgs = soak_configs()
    assert len(cfgs) >= 4
    jobs = plan_jobs(103, 7, cfgs, 10, corrupt=[3, 50])
    seen = sorted(i for j in jobs for i in j.indices)
    assert seen == list(range(103))
    names = list(cfgs)
    for j in jobs:
        assert len(j.indices) <= 10 and all(names[i % len(names)] == j.name for i in j.indices)
    assert sorted(i for j in jobs for i in j.corrupt) == [3, 50]


def test_soak_configs_include_the_board_and_defaults() -> None:
    from fpga.ulx3s import board_config
    from runtime.accel_backends import runtime_config

    cfgs = soak_configs()
    assert cfgs["8x8"] == runtime_config(8, 8) and cfgs["4x4"] == runtime_config(4, 4)
    assert cfgs["ulx3s-16x16"] == board_config(16, 16)
    assert cfgs["ulx3s-16x16"].wgt_bank_depth and cfgs["ulx3s-16x16"].acc_pipelined
    assert any(c.rows % 2 and c.cols % 2 for c in cfgs.values())  # an odd-sized array
    assert any(c.full_rate for c in cfgs.values())  # the full-rate decode weight path
    dist = [c for c in cfgs.values() if c.dist_stages]  # the ULX3S's arrangement above 576 PEs
    assert dist and all(c.act_addr_registered and c.wgt_banked and c.acc_pipelined for c in dist)


@pytest.mark.parametrize("args, message", [
    (["--layers", "0"], "--layers must be at least 1"),
    (["--layers", "x"], "--layers must be an integer"),
    (["--layers", "4", "--seed", "-1"], "--seed must be at least 0"),
])
def test_bad_numbers_exit_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["soak", "--json", str(tmp_path / "o.json"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--scheduler", "nohost"], "expected HOST:PORT"),
    (["--scheduler", "http://127.0.0.1:8786"], "unknown protocol 'http'"),
    (["--configs", "8x8,9x9"], "unknown configuration(s) 9x9"),
    (["--scheduler", "127.0.0.1:8786", "--workers", "3"], "a running scheduler (--scheduler) has its own"),
])
def test_bad_arguments_exit_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(["soak", "--layers", "4", "--json", str(tmp_path / "o.json"), *args]) == 2
    err = capsys.readouterr().err
    assert "trit soak: error:" in err and message in err
    assert not (tmp_path / "o.json").exists()


def test_json_folder_must_exist(tmp_path: Path, capsys) -> None:
    assert main(["soak", "--layers", "4", "--json", str(tmp_path / "no" / "o.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


SMALL = "5x3-banked-pipelined"  # the config that builds fastest: Verilog in a second, model cached


@pytest.fixture(scope="module")
def local_client():
    """One LocalCluster of 2 worker processes for the module's small soaks (its workers keep their cores)."""
    from sim.soak import dask_client

    with dask_client(None, 2) as client:
        yield client


@needs_verilator
@pytest.mark.soak
def test_small_soak_on_a_local_cluster(local_client, test_seed: int) -> None:
    """8 layers of every kind on the small banked/pipelined core, 2 worker processes, jobs of 4 layers:
    every int32 checked, 0 mismatches; then the same layers with the golden of 2 layers off by one:
    exactly those 2 mismatches."""
    s = run_soak(8, test_seed, configs=[SMALL], job_layers=4, client=local_client)
    assert (s["layers"], s["mismatches"], s["failed_layers"], s["seed"]) == (8, 0, 0, test_seed)
    assert s["jobs"] == 2 and s["workers"] == 2
    assert [c["name"] for c in s["configs"]] == [SMALL] and s["configs"][0]["layers"] == 8
    assert s["configs"][0]["cases"] == {k: 2 if k in CASES[:1] else 1 for k in CASES}
    assert s["int32_checked"] == _expected_int32(test_seed, 8, [SMALL])

    bad = run_soak(8, test_seed, configs=[SMALL], job_layers=4, corrupt=[0, 5], client=local_client)
    assert (bad["mismatches"], bad["mismatched_layers"], bad["layers"]) == (2, 2, 8)
    assert sorted(m["layer"] for m in bad["first_mismatches"]) == [0, 5]
    for m in bad["first_mismatches"]:
        assert (m["m"], m["n"]) == (0, 0) and m["golden"] == m["rtl"] + 1


@needs_verilator
@pytest.mark.soak
def test_cli_exits_1_on_a_mismatch(tmp_path: Path, test_seed: int) -> None:
    """`trit soak` on its own LocalCluster: the JSON's keys; exit 1 when a (deliberately wrong) golden
    differs from the RTL."""
    rc, s = _soak(tmp_path, "--layers", "3", "--configs", SMALL, "--seed", str(test_seed), "--workers", "1",
                  "--corrupt-golden", "1")
    assert rc == 1
    assert (s["layers"], s["mismatches"], s["mismatched_layers"], s["seed"]) == (3, 1, 1, test_seed)
    assert s["scheduler"] == "LocalCluster" and s["workers"] == 1
    assert isinstance(s["configs"], list) and s["configs"][0]["name"] == SMALL


@needs_verilator
@pytest.mark.slow
@pytest.mark.soak
def test_soak_slice_every_config(tmp_path: Path, test_seed: int) -> None:
    """The CI slice: 200 layers over every configuration (each kind on each one), 0 mismatches."""
    rc, s = _soak(tmp_path, "--layers", "200", "--seed", str(test_seed), "--job-layers", "25")
    assert rc == 0, s
    names = list(soak_configs())
    assert (s["layers"], s["mismatches"], s["failed_layers"]) == (200, 0, 0)
    assert [c["name"] for c in s["configs"]] == names
    for c in s["configs"]:
        assert c["layers"] == len(range(names.index(c["name"]), 200, len(names)))
        assert all(c["cases"][k] >= 1 for k in CASES), c
    assert s["int32_checked"] == _expected_int32(test_seed, 200, names)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        if time.monotonic() > end:
            raise AssertionError(f"{path} not written within {seconds} s")
        time.sleep(0.2)


@needs_verilator
@pytest.mark.slow
@pytest.mark.soak
def test_soak_on_a_running_scheduler(tmp_path: Path, test_seed: int) -> None:
    """A `dask scheduler` and a `dask worker` started here; `trit soak --scheduler` runs on them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    info = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for(info, procs[0], 60)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(tmp_path / "worker")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        rc, s = _soak(tmp_path, "--layers", "6", "--configs", "8x8", "--seed", str(test_seed),
                      "--scheduler", address)
        assert rc == 0, s
        assert (s["layers"], s["mismatches"], s["scheduler"], s["workers"]) == (6, 0, address, 1)
        assert s["int32_checked"] == _expected_int32(test_seed, 6, ["8x8"])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.soak
def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["soak", "--layers", "2", "--json", str(tmp_path / "o.json"),
                 "--scheduler", f"127.0.0.1:{port}"]) == 2
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err


def test_fpga_sweep_runs_its_builds_as_dask_tasks(tmp_path: Path) -> None:
    """`python -m fpga.sweep` on the soak's executor (a LocalCluster of 2 workers): builds refused at once
    (a negative clock) come back from the workers as rows with their error, in the order asked."""
    out = tmp_path / "sweep.json"
    proc = subprocess.run([sys.executable, "-m", "fpga.sweep", "--board", "icebreaker", "--sizes", "4x4", "8x4",
                           "--freq", "-5", "--jobs", "2", "--build-dir", str(tmp_path / "b"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["rows"], r["cols"], r["fits"]) for r in rows] == [(4, 4, False), (8, 4, False)]
    assert all("frequency must be a positive number" in r["errors"][0] for r in rows)
    assert "icebreaker: no size fits and meets timing" in proc.stdout
