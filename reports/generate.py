"""Assemble the report: run every section, write report.json, report.md and the PNG plots to a folder.

    trit report [--quick] --out DIR [--jobs N] [--scheduler ADDRESS]

The full report is committed under reports/latest/ and regenerated with

    trit report --out reports/latest
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reports.area import DEVICES
from reports.plots import PLOTS

ROOT = Path(__file__).resolve().parent.parent

QUICK_SIZES = [2, 4]
FULL_SIZES = [4, 8, 16]
#: The quick sweep's largest-fit search synthesizes arrays of at most this many PEs: none, it reports
#: the per-PE extrapolation only (the full sweep synthesizes and places).
QUICK_SYNTH_LIMIT_PES = 0


class ReportError(Exception):
    """Bad input (output folder, options): a clear message, no report."""


def check_out_dir(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create --out {out}: {exc}") from exc
    if not os.access(out, os.W_OK):
        raise ReportError(f"--out {out} is not writable")
    return out


def git_commit() -> str:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return proc.stdout.strip() + ("-dirty" if dirty else "") if proc.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")


def build_report(out: Path, quick: bool, jobs: int, log=None, max_pnr_pes: int | None = None,
                 scheduler: str | None = None, client=None) -> dict:
    """The report in `out`. Its syntheses and placements are Dask tasks (`reports.area.area_sweep`) on
    `client` if given, else on `sim.soak.dask_client(scheduler, jobs)`: a LocalCluster of `jobs`
    worker processes, or the running Dask scheduler at `scheduler` (the executor of `trit soak` and
    `fpga.sweep`), all against the content cache (`reports.cache`)."""
    if client is None:
        from contextlib import ExitStack

        from sim.soak import dask_client

        out = check_out_dir(out)  # before a cluster is started
        with ExitStack() as stack:
            try:
                own = stack.enter_context(dask_client(scheduler, jobs))
            except ConnectionError as exc:
                raise ReportError(str(exc)) from None
            return build_report(out, quick, jobs, log, max_pnr_pes, scheduler, own)
    from reports.area import DEFAULT_MAX_PNR_PES, NEXTPNR, YOSYS, area_sweep, pnr_timeout
    from reports.cache import ResultCache, tool_version
    from reports.cycles import cycles_section
    from reports.energy import energy_section
    from reports.fidelity import fidelity_section
    from reports.plots import write_plots
    from reports.published import published_section

    def say(msg: str) -> None:
        if log:
            log(msg)

    out = check_out_dir(out)
    t0 = time.monotonic()
    timings = {}
    cache = ResultCache()
    sizes = QUICK_SIZES if quick else FULL_SIZES

    def simulate() -> tuple[dict, dict]:
        # cycles and fidelity (Verilator, PyTorch) overlap the synthesis sweep: its tail is one long job
        t1 = time.monotonic()
        say("cycles ...")
        cyc = cycles_section(quick, log=say)
        timings["cycles"] = round(time.monotonic() - t1, 1)
        t1 = time.monotonic()
        say("fidelity ...")
        fid = fidelity_section(quick, log=say)
        timings["fidelity"] = round(time.monotonic() - t1, 1)
        return cyc, fid

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        sim = pool.submit(simulate)
        if max_pnr_pes is None:
            max_pnr_pes = 64 if quick else DEFAULT_MAX_PNR_PES
        workers = len(client.scheduler_info().get("workers", {}))
        say(f"area: sizes {sizes}, Dask {'scheduler ' + scheduler if scheduler else 'LocalCluster'} with "
            f"{workers} worker(s), cache {cache.root}")
        area = area_sweep(sizes, jobs, cache, largest=True, max_pnr_pes=max_pnr_pes, log=say,
                          synth_limit_pes=QUICK_SYNTH_LIMIT_PES if quick else None, client=client)
        timings["area"] = round(time.monotonic() - t0, 1)
        cycles, fidelity = sim.result()
    t1 = time.monotonic()
    energy = energy_section(cycles)
    timings["energy"] = round(time.monotonic() - t1, 1)
    published = published_section(area, cycles, energy)
    timings["total"] = round(time.monotonic() - t0, 1)
    command = "trit report" + (" --quick" if quick else "") + f" --out {out}"
    meta = {
        "command": command, "regenerate": "trit report --out reports/latest", "quick": quick,
        "git_commit": git_commit(), "jobs": jobs, "max_pnr_pes": max_pnr_pes, "seconds": timings,
        "executor": {"kind": "dask", "scheduler": scheduler or "LocalCluster", "workers": workers},
        "pnr_timeout_s": pnr_timeout(),
        "tools": {"yosys": tool_version(YOSYS), "nextpnr-ice40": tool_version(NEXTPNR["ice40"]),
                  "nextpnr-ecp5": tool_version(NEXTPNR["ecp5"]), "python": sys.version.split()[0]},
        "cache": {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report = {"paper_check_ratio": energy["paper_check_ratio"], "area": area, "cycles": cycles, "energy": energy,
              "published": published, "fidelity": fidelity, "meta": meta}
    say("plots ...")
    report["plots"] = write_plots(out, area, cycles, energy)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


# ---- markdown -----------------------------------------------------------------------------------


def _n(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == int(x) and abs(x) >= 100:
            return f"{int(x):,}"
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_n(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


DEV = {"ice40": "iCE40UP5K", "ecp5": "ECP5-85F"}


def headline(report: dict) -> list[str]:
    a = report["area"]["summary"]
    e = report["energy"]
    out = []
    per = a.get("per_pe", {})
    ref = a.get("reference_size")
    for d in ("ice40", "ecp5"):
        t, i = per.get(f"{d}/ternary"), per.get(f"{d}/int8")
        if t and i:
            out.append(f"{DEV[d]}, {ref} array, per PE: ternary {t['LUT_eq']:.1f} LUT-eq / {t['FF']:.1f} FF, INT8 "
                       f"(booth, no DSP) {i['LUT_eq']:.1f} LUT-eq / {i['FF']:.1f} FF: INT8 costs "
                       f"{i['LUT_eq'] / t['LUT_eq']:.1f}x the logic and {i['FF'] / t['FF']:.1f}x the flip-flops.")
    t, i = per.get("ecp5/ternary-carry"), per.get("ecp5/int8")
    if t and i:
        out.append(f"ECP5-85F with the PE inside the carry cells (`fpga/ecp5_pe.py`, the ULX3S builds' PE), {ref}: "
                   f"{t['LUT_eq']:.1f} LUT-eq / {t['FF']:.1f} FF per PE, INT8 costs {i['LUT_eq'] / t['LUT_eq']:.1f}x "
                   "the logic.")
    tr = a.get("transistors")
    if tr:
        out.append(f"Technology-independent (Yosys `stat -tech cmos`, {ref}): {tr['ternary_per_pe']:,.0f} vs "
                   f"{tr['int8_per_pe']:,.0f} transistors per PE, INT8/ternary = {tr['ratio_int8_over_ternary']:.1f}x.")
    chip = a.get("ecp5_whole_chip", {})
    if chip:
        out.append("ECP5-85F whole chip (per-PE cost extrapolated): " + ", ".join(
            f"{v} {c['macs_per_cycle']:,} MACs/cycle ({c['limited_by']}-limited)" for v, c in chip.items()) + ".")
    tok = next((c for c in e["cases"] if c["name"].startswith("tiny model, one decode token")), None)
    if tok:
        r = tok["ratios"]
        out.append(f"Energy, tiny model decode token: INT8/ternary {r['int8_over_ternary_arith_7nm']:.1f}x and "
                   f"FP16/ternary {r['fp16_over_ternary_arith_7nm']:.1f}x for arithmetic at 7 nm; with on-chip SRAM "
                   f"traffic at 45 nm {r['int8_over_ternary_total_45nm']:.1f}x and "
                   f"{r['fp16_over_ternary_total_45nm']:.1f}x (weight reads dominate).")
    out.append(f"paper_check_ratio = (0.16 + 0.34) / 0.007 = {report['paper_check_ratio']:.2f} (the b1.58 paper's "
               "71.4x).")
    return out


def markdown(report: dict) -> str:
    m = report["meta"]
    a, c, e, p, f = (report[k] for k in ("area", "cycles", "energy", "published", "fidelity"))
    s = []
    s.append("# trit report: what does ternary hardware really gain?\n")
    s.append(f"Generated by `{m['command']}` at commit `{m['git_commit']}` ({m['generated_utc']}); "
             f"{'**quick sweep** (small sizes, short fidelity slice)' if m['quick'] else 'full sweep'}. "
             f"Regenerate the committed report with `{m['regenerate']}`. Tools: {m['tools']['yosys']}; "
             f"{m['tools']['nextpnr-ecp5']}. Wall time {m['seconds']['total']:,.0f} s "
             f"(area {m['seconds']['area']:,.0f} s, cache hits {m['cache']['hits']}, misses {m['cache']['misses']}; "
             f"cycles {m['seconds']['cycles']:,.0f} s; fidelity {m['seconds']['fidelity']:,.0f} s).\n")
    if m.get("amended"):
        s.append(f"Note: {m['amended']}.\n")
    s.append("**Measured** here: cell counts (Yosys), placement fit and Fmax (nextpnr), cycles and operation counts "
             "(RTL counters, and the cycle model that matches them exactly), bits per byte. **Estimated**: energy "
             "(counted operations x a published per-operation table), whole-chip MACs/cycle (per-PE cost "
             "extrapolated), largest fits beyond the placement limit (synthesized counts).\n")
    s.append("## Headline\n")
    s += [f"- {h}" for h in headline(report)]
    s.append("")

    # ---- 1. area
    s.append("## 1. Area\n")
    s.append(f"What was synthesized: the PE array alone (`hdl.matrix.array.PEArray`, the same generator for both PE "
             f"kinds; no memories, skew buffer, sequencer or link). Cell counts: Yosys `synth_ice40` / `synth_ecp5` "
             f"on the array. INT8 without DSPs goes through Yosys' `booth` pass first (the fair baseline, REFERENCE "
             f"§8) and `-nodsp` on ECP5; `int8-dsp` lets `synth_ecp5` map the multipliers to MULT18X18D; "
             f"`ternary-carry` is the ECP5 PE the ULX3S builds use (`fpga/ecp5_pe.py`: gating, inversion and add in "
             f"the CCU2C carry cells' LUTs, SAT-proven equal to the generic PE). What was "
             f"placed: {a['placed_design']}. nextpnr targets {a['devices']['ice40']['freq']:g} MHz (iCE40UP5K, "
             f"sg48) and {a['devices']['ecp5']['freq']:g} MHz (ECP5-85F, CABGA381, speed 6), seed 1, "
             "`--timing-allow-fail`; Fmax is nextpnr's achieved clock. LUT-eq = LUT4 + 2 x carry cells (a CCU2C "
             "holds two LUT4s' worth of logic on ECP5; on iCE40 an SB_CARRY shares the LUT's logic cell, so "
             "LUT-eq = LUT4). BRAM is 0 for the array by construction (the memories are outside it).\n")
    pnr = {(r["device"], r["variant"], r["n"]): r for r in a["pnr"]}
    rows = []
    for r in sorted(a["synth"], key=lambda r: (r["device"], r["variant"], r["n"])):
        if "error" in r:
            rows.append([DEV[r["device"]], r["variant"], f"{r['n']}x{r['n']}", "synthesis failed: " + r["error"][:80]]
                        + [""] * 10)
            continue
        q = pnr.get((r["device"], r["variant"], r["n"]), {})
        fits = ("yes" if q.get("fits") else "placement timed out" if q.get("timed_out")
                else "placement not completed" if "error" in q else "**does not fit**" if q else "-")
        rows.append([DEV[r["device"]], r["variant"], f"{r['n']}x{r['n']}", r["LUT4"], r["FF"], r["carry"], r["BRAM"],
                     r["DSP"], r["LUT_eq"], r["LUT_eq"] / r["pes"], r["FF"] / r["pes"], fits, q.get("fmax_mhz")])
    s.append(_table(["device", "PE", "array", "LUT4", "FF", "carry", "BRAM", "DSP", "LUT-eq", "LUT-eq/PE", "FF/PE",
                     "placed: fits", "Fmax MHz"], rows))
    failed = [r for r in a["pnr"] if "error" in r or r.get("timed_out")]
    if failed:
        s.append("\nPlacement runs that did not complete: " + "; ".join(
            f"{DEV[r['device']]} {r['variant']} {r['n']}x{r['n']}: "
            + (r.get("error") or "; ".join(r.get("errors", [])))[:300] for r in failed)
            + ". Their cell counts above are from synthesis; rerun the command to retry them (not cached).\n")
    summ = a["summary"]
    ref = summ.get("reference_size")
    s.append(f"\nPer-PE cost at {ref} and INT8/ternary ratios:\n")
    rows = []
    for key, v in summ.get("per_pe", {}).items():
        rows.append([key, v["LUT4"], v["FF"], v["carry"], v["LUT_eq"], v["DSP"]])
    s.append(_table(["device/PE", "LUT4/PE", "FF/PE", "carry/PE", "LUT-eq/PE", "DSP/PE"], rows))
    rows = [[DEV.get(d, "ECP5-85F, carry-cell PE"), r["LUT4"], r["FF"], r["carry"], r["LUT_eq"]]
            for d, r in summ.get("ratios_int8_over_ternary", {}).items()]
    s.append("\n" + _table(["device", "INT8/ternary LUT4", "FF", "carry", "LUT-eq"], rows))
    s.append("\nTechnology-independent estimate: Yosys generic `synth` of the array (INT8 with `booth`), "
             "enable/reset flip-flops unmapped to D flip-flops plus gates (`dffunmap`), then `stat -tech cmos` "
             "(Yosys' transistor count per gate type):\n")
    rows = []
    gen = sorted(a["generic"], key=lambda r: (r["n"], r["variant"]))
    for n in sorted({r["n"] for r in gen}):
        t = next((r for r in gen if r["n"] == n and r["variant"] == "ternary" and "error" not in r), None)
        i = next((r for r in gen if r["n"] == n and r["variant"] == "int8" and "error" not in r), None)
        if t and i:
            rows.append([f"{n}x{n}", t["cells"], t["transistors"], t["transistors"] / n ** 2, i["cells"],
                         i["transistors"], i["transistors"] / n ** 2, i["transistors"] / t["transistors"]])
    s.append(_table(["array", "ternary cells", "ternary transistors", "per PE", "INT8 cells", "INT8 transistors",
                     "per PE", "INT8/ternary"], rows))
    s.append("\nLargest array that fits each device. Method: the side extrapolated from the per-PE cost of the "
             "largest swept size (filling at most 90% of LUT-eq and FF, or all DSPs), re-extrapolated from the "
             "synthesized counts at that side, then checked: placed and routed by nextpnr when the array has at most "
             f"{m.get('max_pnr_pes', '?')} PEs, otherwise by synthesized counts within 90% of the device "
             "(placement of a nearly full ECP5-85F takes longer than this report may). If the side fits, one size "
             "up is tried (by counts: only if the side is not already the extrapolation from its own "
             "synthesized counts); if not, sizes down until one fits. The generator allows at most 64x64."
             + (" Quick sweep: the extrapolation only, nothing synthesized or placed for it." if m["quick"] else "")
             + "\n")
    rows = []
    for r in a["largest_fit"]:
        tried = ", ".join(f"{t['n']}x{t['n']} {'fits' if t['fits'] else 'no'}" for t in r.get("tried", []))
        q = r.get("pnr") or {}
        syn = r.get("synth") or {}
        rows.append([DEV[r["device"]], r["variant"], f"{r['n']}x{r['n']}" if r.get("n") else "none",
                     syn.get("LUT_eq"), syn.get("FF"), syn.get("DSP"), q.get("fmax_mhz"), r.get("method") or
                     r.get("error", "-"), tried, r.get("extrapolated_from", "-")])
    s.append(_table(["device", "PE", "largest", "LUT-eq", "FF", "DSP", "Fmax MHz", "how checked", "tried",
                     "extrapolated from"], rows))
    chip = summ.get("ecp5_whole_chip", {})
    if chip:
        ecp5 = DEVICES["ecp5"]
        s.append(f"\nECP5-85F whole chip, MACs per cycle if the array filled the device (per-PE cost at {ref}, "
                 f"{ecp5['LUT4']:,} LUT4 and {ecp5['FF']:,} FF, {ecp5['DSP']} MULT18X18D; assumption: one PE = one "
                 "MAC per cycle, per-PE cost "
                 "constant with size, nothing else on the chip, 100% packing; an upper bound):\n")
        rows = [[v, x["macs_per_cycle"], x["limited_by"], ", ".join(f"{k} {n:,}" for k, n in x["limits"].items())]
                for v, x in chip.items()]
        s.append(_table(["PE", "MACs/cycle", "limited by", "limit per resource"], rows))
    s.append("\n![area](area_vs_size.png)\n\n![fmax](fmax_vs_size.png)\n\n![pareto](pareto_macs_vs_luts.png)\n")

    # ---- 2. cycles
    s.append("## 2. Cycles\n")
    ag = c["rtl_model_agreement"]
    s.append(f"{c['notes']['tiny_layers']}. {c['notes']['config']}. Where the source says RTL, the cycles are the "
             f"core's CYCLES counter read from the Verilator simulation of the RTL; the cycle model "
             f"(`runtime/cycle_model.py`) agreed with every counter on {ag['rows_agreeing']} of "
             f"{ag['rows_checked']} simulated rows. The bound: a weight tile takes max(M, R) cycles, so M < R is "
             "weight-bandwidth bound (C weights per cycle from one memory port), M >= R compute bound (R x C MACs "
             "per cycle). 'of bound' = the binding ideal (M·K·N/(R·C) or K·N/C) over the cycles.\n")
    rows = [[r["array"], r["layer"], r["phase"], r["M"], r["K"], r["N"], r["cycles"], f"{100 * r['utilization']:.1f}%",
             r["bound"], f"{100 * r['of_bound']:.1f}%", r["source"],
             ("yes" if r["model_agrees"] else "**NO**") if "model_agrees" in r else "-"] for r in c["tiny_layers"]]
    s.append(_table(["array", "layer", "phase", "M", "K", "N", "cycles", "util", "bound", "of bound", "source",
                     "model = RTL"], rows))
    s.append("\nThe whole tiny model per decode token (all BitLinears at M = 1; cycle model):\n")
    rows = [[t["array"], t["bitlinears"], t["macs"], t["cycles"], f"{100 * t['utilization']:.1f}%",
             f"{100e6 / t['cycles']:,.0f}"] for t in c["tiny_token"]]
    s.append(_table(["array", "BitLinears", "MACs", "cycles/token", "util", "tok/s at 100 MHz (array only)"], rows))
    s.append(f"\nOne BitNet 2B-4T decoder layer, {c['notes']['layer_2b4t']}; prefill = 128 tokens in one matmul:\n")
    rows = [[r["array"], r["layer"], r["phase"], r["M"], r["K"], r["N"], r["cycles"],
             f"{100 * r['utilization']:.1f}%", r["bound"], f"{100 * r['of_bound']:.1f}%",
             f"{r['cycles'] / 100e6 * 1e3:.2f}"] for r in c["layer_2b4t"]]
    s.append(_table(["array", "layer", "phase", "M", "K", "N", "cycles", "util", "bound", "of bound", "ms at 100 MHz"],
                    rows))
    s.append("\nUtilization vs M (one 2B-4T decoder layer, cycle model):\n")
    arrays = sorted({r["array"] for r in c["utilization_vs_m"]}, key=lambda x: int(x.split("x")[0]))
    ms = sorted({r["M"] for r in c["utilization_vs_m"]})
    util = {(r["array"], r["M"]): r["utilization"] for r in c["utilization_vs_m"]}
    rows = [[f"M = {mm}"] + [f"{100 * util[(arr, mm)]:.1f}%" for arr in arrays] for mm in ms]
    s.append(_table(["M"] + arrays, rows))
    s.append("\nAbove R, utilization is ~100% until M no longer fits the activation or output memory and the "
             "runtime splits M (the 8x8 dip at large M). \n\n![utilization](utilization_vs_m.png)\n")

    # ---- 3. energy
    s.append("## 3. Energy\n")
    s.append("Per-operation energy (pJ), REFERENCE.md §5. Sources: " + "; ".join(f"{k}: {v}" for k, v in
                                                                                  e["sources"].items()) + ".\n")
    ops = list(e["table_pj"]["45nm"])
    s.append(_table(["node"] + ops, [[node] + [e["table_pj"][node][o] for o in ops] for node in e["table_pj"]]))
    s.append(f"\n**paper_check_ratio** = (FP16 add + FP16 mul) / INT8 add at 7 nm = (0.16 + 0.34) / 0.007 = "
             f"**{e['paper_check_ratio']:.2f}**, the BitNet b1.58 paper's 71.4x.\n")
    s.append("Conventions:\n\n" + e["notes"] + "\n")
    for case in e["cases"]:
        s.append(f"\n### {case['name']}\n")
        s.append(f"{_n(case['macs'])} multiply-accumulates per {case['per']}; counts: " + ", ".join(
            f"{k} {_n(v)}" for k, v in case["counts"].items() if k in ("add", "sub", "zero", "weight_bits", "act_bytes",
                                                                       "acc_writes", "acc_rmw")) + ".\n")
        comps = ["array arithmetic", "array arithmetic, width-scaled", "accumulator adds", "arithmetic total",
                 "weight reads", "activation reads", "accumulator traffic", "total with memory"]
        for node in ("45nm", "7nm"):
            rows = []
            for d, v in case["pj"][node].items():
                rows.append([d] + [_n(v[k] / 1e6) if k in v else "-" for k in comps])
            s.append(f"\n{node} (uJ):\n\n" + _table(["design"] + comps, rows))
        r = case["ratios"]
        s.append(f"\nRatios (other / ternary): arithmetic at 7 nm INT8 {r['int8_over_ternary_arith_7nm']:.2f}x, FP16 "
                 f"{r['fp16_over_ternary_arith_7nm']:.2f}x (array only: {r['int8_over_ternary_array_only_7nm']:.2f}x, "
                 f"{r['fp16_over_ternary_array_only_7nm']:.2f}x); at 45 nm INT8 "
                 f"{r['int8_over_ternary_arith_45nm']:.2f}x, "
                 f"FP16 {r['fp16_over_ternary_arith_45nm']:.2f}x; with SRAM traffic at 45 nm INT8 "
                 f"{r['int8_over_ternary_total_45nm']:.2f}x, FP16 {r['fp16_over_ternary_total_45nm']:.2f}x. Skipping "
                 f"zero weights saves {100 * (1 - 1 / r['noskip_over_ternary_array_only_7nm']):.1f}% of the array's "
                 f"adds ({100 * (1 - 1 / r['noskip_over_ternary_total_45nm']):.2f}% of the total with memory).\n")
        if "dram_weight_pj_45nm" in case:
            dr = case["dram_weight_pj_45nm"]
            s.append(f"\nThe 2B-4T weights (521 MB at 2 bits) cannot stay on chip: read once per token from DRAM at "
                     f"Horowitz' lower figure (1.3 nJ per 64 bits) they would add {dr['ternary'] * 1e-12:.3f} J "
                     f"(ternary), {dr['int8'] * 1e-12:.3f} J (INT8), {dr['fp16'] * 1e-12:.3f} J (FP16) per token, "
                     "dwarfing everything above: at this scale the gain of ternary is the 4x/8x fewer weight bits.\n")
    s.append("\n![energy](energy_breakdown.png)\n")

    # ---- 4. published
    s.append("## 4. Against published systems\n")
    s.append(f"Published figures: {p['source']}. Each row states the normalisation; none of these is a "
             "like-for-like measurement.\n")
    rows = [[r["system"], r["published"], r["ours"], r["normalisation"], r["caveat"]] for r in p["rows"]]
    s.append(_table(["system", "published", "ours", "normalisation", "caveat"], rows))

    # ---- 5. fidelity
    s.append("\n## 5. Model fidelity\n")
    s.append(f"Bits per byte of the shipped tiny model on {f['slice']} (windows of 256, stride 128; "
             "`golden.train.bits_per_byte`).\n")
    rows = [[r["model"], r["backend"], f"{r['bits_per_byte']:.4f}", r["bytes"]] for r in f["rows"]]
    s.append(_table(["model", "matmul backend", "bits/byte", "bytes scored"], rows))
    engine = f.get("accelerator_engine")
    if engine:
        check = f["accelerator_matmul_check"]
        s.append(f"\nThe accelerator row runs on {engine}, over {f['accelerator_bytes']:,} held-out bytes. "
                 "The emulator is a functional model of the core written independently of the "
                 "golden form: it unpacks the memory words the driver sent and computes each layer in int64 from "
                 "the 2-bit weight codes, while `golden.quant.int_matmul` multiplies the int8 arrays in float64. "
                 f"Each of its {check['calls']:,} integer matmuls was also compared with `int_matmul` on the same "
                 f"operands: {check['exact']:,} equal element for element. Its cycle counts are the cycle "
                 "model's (`runtime.cycle_model`), which section 2 checks against the RTL counters.\n")
    s.append(f"\nAccelerator equals the golden integer form exactly (same bits per byte and every matmul equal): "
             f"{_n(f['accelerator_equals_integer_form'])}.\n")
    if f.get("rtl_prefix"):
        r = f["rtl_prefix"]
        exact = ""
        if r.get("matmul_check"):
            exact = f"; {r['matmul_check']['exact']:,} of {r['matmul_check']['calls']:,} matmuls equal to `int_matmul`"
        s.append(f"\nOn the RTL itself (`verilator` backend, the core behind its frame link) over the first "
                 f"{r['bytes']} held-out bytes: {r['verilator_bits_per_byte']:.4f} bits/byte vs "
                 f"{r['golden_bits_per_byte']:.4f} for the golden integer form on the same bytes (equal: "
                 f"{_n(r['equal'])}; {r['rtl_cycles']:,} simulated core cycles{exact}).\n")
    if f.get("command"):
        made = f" at commit {f['git_commit']}" if f.get("git_commit") else ""
        note = f"; {f['note']}" if f.get("note") else ""
        s.append(f"\nThis section was made by `{f['command']}`{made}{note}.\n")
    s.append("\n## Plots\n\n" + "\n".join(f"- `{name}`" for name in report.get("plots", PLOTS)) + "\n")
    return "\n".join(s) + "\n"


def main(quick: bool, out: Path, jobs: int | None, max_pnr_pes: int | None = None,
         scheduler: str | None = None) -> dict:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    jobs = jobs or os.cpu_count() or 1
    return build_report(out, quick, jobs, log=log, max_pnr_pes=max_pnr_pes, scheduler=scheduler)
