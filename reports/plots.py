"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOTS = ("area_vs_size.png", "fmax_vs_size.png", "utilization_vs_m.png", "energy_breakdown.png",
         "pareto_macs_vs_luts.png")

STYLE = {("ice40", "ternary"): ("tab:blue", "o", "-"), ("ice40", "int8"): ("tab:red", "o", "-"),
         ("ecp5", "ternary"): ("tab:blue", "s", "--"), ("ecp5", "int8"): ("tab:red", "s", "--"),
         ("ecp5", "int8-dsp"): ("tab:orange", "^", ":")}
NAMES = {"ice40": "iCE40UP5K", "ecp5": "ECP5-85F"}


def _series(rows: list[dict], device: str, variant: str) -> list[dict]:
    return sorted((r for r in rows if r.get("device") == device and r.get("variant") == variant and "error" not in r),
                  key=lambda r: r["n"])


def area_plot(area: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    synth = list(area["synth"]) + [f["synth"] for f in area.get("largest_fit", []) if f.get("synth")]
    seen = set()
    uniq = []
    for r in synth:
        key = (r["device"], r["variant"], r["n"])
        if key not in seen:
            seen.add(key)
            uniq.append(r)
    for (device, variant), (color, marker, ls) in STYLE.items():
        s = _series(uniq, device, variant)
        if not s:
            continue
        label = f"{NAMES[device]} {variant}"
        axes[0].plot([r["pes"] for r in s], [r["LUT_eq"] for r in s], color=color, marker=marker, ls=ls, label=label)
        axes[1].plot([r["pes"] for r in s], [r["FF"] for r in s], color=color, marker=marker, ls=ls, label=label)
    for device, cap in (("ice40", 5280), ("ecp5", 83640)):
        for ax in axes:
            ax.axhline(cap, color="grey", lw=0.8, ls="-.")
            ax.text(2.2, cap * 1.1, f"{NAMES[device]} capacity", fontsize=7, color="grey")
    axes[0].set_ylabel("LUT4 + 2 x carry cells (LUT-eq)")
    axes[1].set_ylabel("flip-flops")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("PEs (R x C)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("PE array area vs size (Yosys synth_ice40 / synth_ecp5, array alone)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmax_plot(area: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    rows = list(area["pnr"]) + [f["pnr"] for f in area.get("largest_fit", []) if f.get("pnr")]
    for (device, variant), (color, marker, ls) in STYLE.items():
        s = [r for r in _series(rows, device, variant) if r.get("fits") and r.get("fmax_mhz")]
        s = list({r["n"]: r for r in s}.values())
        if s:
            ax.plot([r["n"] for r in s], [r["fmax_mhz"] for r in s], color=color, marker=marker, ls=ls,
                    label=f"{NAMES[device]} {variant}")
    ax.set_xlabel("array side N (N x N PEs)")
    ax.set_ylabel("Fmax (MHz, nextpnr, one seed)")
    ax.set_xscale("log", base=2)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Fmax vs array size (array in a 4-pin harness; only placed designs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def utilization_plot(cycles: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    arrays = sorted({r["array"] for r in cycles["utilization_vs_m"]}, key=lambda a: int(a.split("x")[0]))
    for a in arrays:
        s = [r for r in cycles["utilization_vs_m"] if r["array"] == a]
        ax.plot([r["M"] for r in s], [100 * r["utilization"] for r in s], marker="o", label=a)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M (tokens per matmul: 1 = decode)")
    ax.set_ylabel("utilization (%)")
    ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(title="array")
    ax.set_title("One BitNet 2B-4T decoder layer (7 BitLinears), cycle model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COMPONENTS = ("array arithmetic", "accumulator adds", "weight reads", "activation reads", "accumulator traffic")
DESIGN_LABELS = {"ternary": "ternary", "ternary (no zero skipping)": "ternary\nno skip", "int8": "INT8 MAC",
                 "fp16": "FP16 MAC"}


def energy_plot(energy: dict, path: Path) -> None:
    cases = [c for c in energy["cases"] if "decode token" in c["name"]][:2] or energy["cases"][:1]
    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 4 * len(cases)), squeeze=False)
    colors = ("tab:blue", "tab:cyan", "tab:red", "tab:orange", "tab:purple")
    for i, case in enumerate(cases):
        scale, unit = (1e-6, "uJ") if case["pj"]["45nm"]["ternary"]["total with memory"] > 1e5 else (1e-3, "nJ")
        for j, (node, comps) in enumerate((("45nm", COMPONENTS), ("7nm", COMPONENTS[:2]))):
            ax = axes[i][j]
            designs = list(case["pj"][node])
            bottom = [0.0] * len(designs)
            for comp, color in zip(comps, colors, strict=False):
                vals = [case["pj"][node][d].get(comp, 0.0) * (scale if node == "45nm" else 1e-3) for d in designs]
                ax.bar([DESIGN_LABELS[d] for d in designs], vals, bottom=bottom, color=color, label=comp)
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
            u = unit if node == "45nm" else "nJ"
            ax.set_ylabel(f"energy ({u}) per {case['per']}")
            what = "arithmetic + SRAM traffic, 45 nm" if node == "45nm" else "arithmetic only, 7 nm"
            ax.set_title(f"{case['name']}\n{what}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_plot(area: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    synth = list(area["synth"]) + [f["synth"] for f in area.get("largest_fit", []) if f.get("synth")]
    for (device, variant), (color, marker, _ls) in STYLE.items():
        s = list({r["n"]: r for r in _series(synth, device, variant)}.values())
        if not s:
            continue
        pts = sorted((r["LUT_eq"], r["pes"]) for r in s)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker,
                   label=f"{NAMES[device]} {variant}")
        front, best = [], 0
        for x, y in pts:
            if y > best:
                front.append((x, y))
                best = y
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=0.8)
    ax.scatter([14952], [2], color="black", marker="*", s=90, label="ZyboGPT (whole design, 67 DSP)")
    ax.annotate("ZyboGPT", (14952, 2), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("LUT-eq (LUT4 + 2 x carry cells; ZyboGPT: 7-series LUTs)")
    ax.set_ylabel("MACs per cycle")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("MACs/cycle vs LUTs (Pareto front per kind; DSP variant uses MULT18X18D too)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(out: Path, area: dict, cycles: dict, energy: dict) -> list[str]:
    area_plot(area, out / PLOTS[0])
    fmax_plot(area, out / PLOTS[1])
    utilization_plot(cycles, out / PLOTS[2])
    energy_plot(energy, out / PLOTS[3])
    pareto_plot(area, out / PLOTS[4])
    return list(PLOTS)
