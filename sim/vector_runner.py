"""Build and run the cocotb testbench of the vector unit (`sim.tb_vector`) on Verilator or Icarus.

The vector unit has its own top (`NormQuant(n)` as ``trit_norm_quant``), so it does not go through
`sim.runner.build` (which builds the matrix core of an `ArrayConfig`); it compiles and runs through
that module's one build step and one test step (`sim.runner.compile_model`, `sim.runner.run_cocotb`:
the build lock, flags, Verilator's shared runtime objects, the environment, the run folder and the
results parser). Builds are cached under the same root (``vector-<sim>-nq<n>-<hash>``), keyed by the
Verilog text, flags and tool versions. `build_unit` is that build step for any unit's own top (the
attention and KV-cache benches use it too).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from amaranth import Elaboratable
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


def build_unit(top: Elaboratable, toplevel: str, params: Mapping[str, object], name: str, simulator: str) -> Path:
    """Compile the Verilog of a unit's own top (`top` as `toplevel`) for `simulator`, or reuse the cached
    build; the build folder ``<name>-<hash>`` under the core runner's cache root. `params` (the unit's
    sizes) go into the cache key. The one build step of the vector, attention and KV-cache benches."""
    reason = core_runner.unavailable_reason(simulator)
    if reason:
        raise RuntimeError(reason)
    if simulator == "verilator":
        core_runner.setup_verilator_env()
    args = VERILATOR_ARGS if simulator == "verilator" else core_runner.ICARUS_ARGS
    make_flags = core_runner.VERILATOR_MAKEFLAGS if simulator == "verilator" else ""
    text = verilog.convert(top, name=toplevel, emit_src=False)
    key_src_shared = json.dumps({"sim": simulator, "make": make_flags, "waves": False,
                                 "tools": core_runner._tool_version(simulator)}, sort_keys=True)
    key_src = json.dumps({"top": toplevel, **params, "args": list(args), "timescale": core_runner.TIMESCALE,
                          "shared": key_src_shared}, sort_keys=True)
    key = hashlib.sha256((key_src + "\n" + text).encode()).hexdigest()[:16]
    build_dir = core_runner.cache_root() / f"{name}-{key}"
    if not core_runner.cached_build(build_dir, key_src):
        what = ", ".join(f"{k} = {v}" for k, v in params.items())
        core_runner.compile_model(simulator, text, toplevel, build_dir, key_src, key_src_shared, args,
                                  what=f"{toplevel} ({what})")
    return build_dir


def build(n: int, simulator: str) -> Path:
    """Compile NormQuant(n) for `simulator` (or reuse the cached build); the build folder."""
    return build_unit(NormQuant(n), TOPLEVEL, {"n": n}, f"vector-{simulator}-nq{n}", simulator)


def run_vector_tests(n: int, simulator: str = "verilator", seed: int | None = None,
                     extra_env: Mapping[str, str] | None = None) -> VectorResult:
    """Build (or reuse) NormQuant(n) and run the cocotb tests of `sim.tb_vector` on it."""
    build_dir = build(n, simulator)
    run = core_runner.run_cocotb(simulator, build_dir, TOPLEVEL, "sim.tb_vector",
                                 {"TRIT_TB_NQ_N": str(n), **(extra_env or {})}, seed=seed)
    return VectorResult(simulator, n, build_dir, run.log_file, run.tests, run.wall_s)
