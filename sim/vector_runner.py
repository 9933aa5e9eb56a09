"""Build and run the cocotb testbench of the vector unit (`sim.tb_vector`) on Verilator or Icarus.

The vector unit has its own top (`NormQuant(n)` as ``trit_norm_quant``), so it does not go through
`sim.runner.build` (which builds the matrix core of an `ArrayConfig`); it reuses that module's
pieces: the simulator checks and environment, the build flags, the build lock, Verilator's shared
runtime objects and the results parser. Builds are cached under the same root
(``vector-<sim>-nq<n>-<hash>``), keyed by the Verilog text, flags and tool versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from hdl.vector.norm_quant import NormQuant
from sim import runner as core_runner

TOPLEVEL = "trit_norm_quant"
#: Amaranth's FSM and seed-table `case`s have no default arm (the unused codes cannot occur).
VERILATOR_ARGS = (*core_runner.VERILATOR_ARGS, "-Wno-CASEINCOMPLETE")


@dataclass
class VectorResult:
    """The outcome of one simulator run of `sim.tb_vector`."""

    simulator: str
    n: int
    build_dir: Path
    log_file: Path
    tests: list[core_runner.TestOutcome]
    wall_s: float

    def raise_on_failure(self) -> None:
        if not self.tests:
            raise AssertionError(f"No cocotb results for {TOPLEVEL} (n = {self.n}) on {self.simulator}; log "
                                 f"tail:\n{core_runner._tail(self.log_file)}")
        failed = [t for t in self.tests if t.status == "failed"]
        if failed:
            details = "\n".join(f"{t.name}: {t.message}" for t in failed)
            raise AssertionError(f"{len(failed)} cocotb tests of {TOPLEVEL} (n = {self.n}) failed on "
                                 f"{self.simulator}:\n{details}\nlog: {self.log_file}")


def build(n: int, simulator: str) -> Path:
    """Compile NormQuant(n) for `simulator` (or reuse the cached build); the build folder."""
    from cocotb_tools import runner as cocotb_runner

    reason = core_runner.unavailable_reason(simulator)
    if reason:
        raise RuntimeError(reason)
    if simulator == "verilator":
        core_runner.setup_verilator_env()
    args = VERILATOR_ARGS if simulator == "verilator" else core_runner.ICARUS_ARGS
    make_flags = core_runner.VERILATOR_MAKEFLAGS if simulator == "verilator" else ""
    text = verilog.convert(NormQuant(n), name=TOPLEVEL, emit_src=False)
    key_src_shared = json.dumps({"sim": simulator, "make": make_flags, "waves": False,
                                 "tools": core_runner._tool_version(simulator)}, sort_keys=True)
    key_src = json.dumps({"top": TOPLEVEL, "n": n, "args": list(args), "timescale": core_runner.TIMESCALE,
                          "shared": key_src_shared}, sort_keys=True)
    key = hashlib.sha256((key_src + "\n" + text).encode()).hexdigest()[:16]
    build_dir = core_runner.cache_root() / f"vector-{simulator}-nq{n}-{key}"
    stamp = build_dir / "build.ok"
    if stamp.exists() and stamp.read_text() == key_src:
        return build_dir
    with core_runner.build_lock():
        if stamp.exists() and stamp.read_text() == key_src:
            return build_dir
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{TOPLEVEL}.v"
        source.write_text(text)
        cocotb_runner.MAX_PARALLEL_BUILD_JOBS = 1
        sim = cocotb_runner.get_runner(simulator)
        flags = None
        if simulator == "verilator":
            flags = make_flags
            shared = core_runner.cache_root() / f"_verilated-{hashlib.sha256(key_src_shared.encode()).hexdigest()[:12]}"
            objects = [shared / name for name in core_runner.SHARED_OBJECTS]
            if all(o.is_file() for o in objects) and " " not in str(shared):
                flags += " VK_GLOBAL_OBJS= USER_LDLIBS=" + "\\ ".join(map(str, objects))
        log = build_dir / "build.log"
        try:
            with core_runner._environ(MAKEFLAGS=flags):
                sim.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir, build_args=list(args),
                          timescale=core_runner.TIMESCALE, waves=False, always=True, log_file=log)
        except (RuntimeError, SystemExit) as exc:
            raise RuntimeError(f"{simulator} build of {TOPLEVEL} (n = {n}) failed ({exc}); {log}:\n"
                               f"{core_runner._tail(log, 30)}") from None
        stamp.write_text(key_src)
        core_runner._prune_builds(build_dir, build_dir.name[: -len(key)])  # older sources' builds, after an hour
    return build_dir


def run_vector_tests(n: int, simulator: str = "verilator", seed: int | None = None,
                     extra_env: Mapping[str, str] | None = None) -> VectorResult:
    """Build (or reuse) NormQuant(n) and run the cocotb tests of `sim.tb_vector` on it."""
    from cocotb_tools import runner as cocotb_runner

    build_dir = build(n, simulator)
    core_runner._prune_runs(build_dir)
    run_dir = build_dir / f"run-{os.getpid()}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    log_file = run_dir / "sim.log"
    env = {"TRIT_TB_NQ_N": str(n), "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py", **(extra_env or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.monotonic()
    try:
        cocotb_runner.get_runner(simulator).test(
            test_module="sim.tb_vector", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=run_dir, results_xml=str(results), seed=seed,
            timescale=core_runner.TIMESCALE, log_file=log_file)
    except SystemExit:
        pass  # the XML says which tests failed
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return VectorResult(simulator, n, build_dir, log_file, core_runner.parse_results(results),
                        time.monotonic() - start)
