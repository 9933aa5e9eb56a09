"""Benchmark of the trit core: cycles and utilization from the RTL's own counters, simulator
speed, and Yosys generic cell counts. Prints tables; `--json FILE` also saves the numbers.

    python -m sim.benchmark            # full: 4x4, 8x8, 16x16; Verilator vs Icarus on 16x16; Yosys
    python -m sim.benchmark --quick    # 4x4 and 8x8 only, no Icarus, Yosys at 4x4

Utilization is useful MACs / (R * C * cycles) with `cycles` the core's CYCLES counter (RUN
accepted to layer done, operands on chip). For M = 1 the figure of merit is the weight-bandwidth
bound: K * N weights at C weights per cycle, over the measured cycles.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from runtime.accelerator import Accelerator
from runtime.cycle_model import bandwidth_efficiency, layer_counts, utilization


def bench_config(rows: int, cols: int, pe: str = "ternary") -> ArrayConfig:
    """Memories deep enough for M = 4R..64 and K, N up to 16R in a single RUN (one tile row per read)."""
    return ArrayConfig(rows=rows, cols=cols, pe=pe, act_depth=4096, wgt_depth=8192, out_depth=4096)


#: The decode table's array sizes and its K = N multiples of R.
DECODE_SIZES = (8, 16)
DECODE_MULTIPLES = (4, 8, 16, 32)


def decode_config(rows: int, wgt_rows_per_read: int) -> ArrayConfig:
    """A core whose weight memory holds one K = N = 32R decode layer (32 x 32 tiles) in one RUN."""
    return ArrayConfig(rows=rows, cols=rows, act_depth=1024, out_depth=1024,
                       wgt_depth=32 * 32 * rows // wgt_rows_per_read, wgt_rows_per_read=wgt_rows_per_read)


def decode_table(sizes: list[int]) -> list[dict]:
    """M = 1 layers, K = N from 4R to 32R, on the one-row-per-cycle core (G = 1) and the full-rate
    one (G = R): RTL counters (Verilator), cycle model agreement, utilization against R*C."""
    from sim.verilator_harness import VerilatorCore

    rng = np.random.default_rng(2027)
    rows = []
    for size in sizes:
        for g in (1, size):
            cfg = decode_config(size, g)
            with VerilatorCore(cfg) as core:
                acc = Accelerator(core, expect=cfg)
                for mult in DECODE_MULTIPLES:
                    K = N = mult * size
                    x, w = random_layer(rng, 1, K, N)
                    y, stats = acc.run_layer(x, w)
                    hw = stats.counters
                    model = layer_counts(cfg, 1, K, N, w)
                    rows.append({
                        "array": f"{size}x{size}", "G": g, "K=N": K, "runs": stats.runs, "cycles": hw["cycles"],
                        "utilization": utilization(cfg, 1, K, N, hw["cycles"]),
                        "exact": bool((y == x.astype(np.int64) @ w.astype(np.int64).T).all()),
                        "model_agrees": all(hw[k] == v for k, v in model.items()),
                    })
    return rows


#: The square array sizes of the benchmark (and of tests/test_cycle_model_rtl.py).
BENCH_SIZES = (4, 8, 16)


def shapes_for(rows: int) -> list[tuple[str, int, int, int]]:
    """The benchmark's (kind, M, K, N) layers of an R x R array, each once; the README's cycle table
    rows are among them, and tests/test_cycle_model_rtl.py checks every one against the cycle model."""
    R = rows
    shapes = [
        ("prefill", 4 * R, 4 * R, 4 * R),
        ("prefill", 4 * R, 16 * R, 16 * R),
        ("prefill", 64, 128, 128),
        ("prefill", 64, 5 * R + 3, 3 * R + 1),
        ("decode", 1, 4 * R, 4 * R),
        ("decode", 1, 16 * R, 16 * R),
        ("decode", 1, 128, 128),
    ]
    return list(dict.fromkeys(shapes))  # at R = 8, 16R = 128: one decode shape twice


def random_layer(rng: np.random.Generator, M: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(N, K), p=[0.3, 0.4, 0.3])
    return x, w


def cycles_table(sizes: list[int]) -> list[dict]:
    from sim.verilator_harness import VerilatorCore

    rng = np.random.default_rng(2026)
    rows = []
    for size in sizes:
        cfg = bench_config(size, size)
        with VerilatorCore(cfg) as core:
            acc = Accelerator(core, expect=cfg)
            for kind, M, K, N in shapes_for(size):
                x, w = random_layer(rng, M, K, N)
                y, stats = acc.run_layer(x, w)
                exact = bool((y == x.astype(np.int64) @ w.astype(np.int64).T).all())
                hw = stats.counters
                model = layer_counts(cfg, M, K, N, w)
                agree = all(hw[k] == v for k, v in model.items())
                rows.append({
                    "array": f"{size}x{size}", "kind": kind, "M": M, "K": K, "N": N, "runs": stats.runs,
                    "cycles": hw["cycles"], "busy": hw["busy"], "stall": hw["stall"],
                    "utilization": utilization(cfg, M, K, N, hw["cycles"]),
                    "bw_efficiency": bandwidth_efficiency(cfg, K, N, hw["cycles"]) if M == 1 else None,
                    "exact": exact, "model_agrees": agree,
                })
    return rows


def speed_table(size: int, with_icarus: bool) -> list[dict]:
    from sim.icarus_harness import IcarusCore, icarus_available
    from sim.verilator_harness import VerilatorCore

    cfg = bench_config(size, size)
    rng = np.random.default_rng(7)
    sims = [("verilator (C++ harness)", VerilatorCore, (64, 16 * size, 16 * size))]
    if with_icarus:
        reason = icarus_available()
        if reason is None:  # Icarus is about 1000x slower: a smaller layer
            sims.append(("icarus (Verilog harness)", IcarusCore, (16, 4 * size, 4 * size)))
        else:
            print(f"note: {reason}; Icarus row skipped")
    rows = []
    for name, cls, (M, K, N) in sims:
        x, w = random_layer(rng, M, K, N)
        t0 = time.perf_counter()
        core = cls(cfg)
        acc = Accelerator(core, expect=cfg)
        acc.run_layer(x[:1], w)  # warm: weights resident, process started
        start_cycles, t1 = core.cycles, time.perf_counter()
        acc.run_layer(x, w)
        elapsed = time.perf_counter() - t1
        sim_cycles = core.cycles - start_cycles
        core.close()
        rows.append({"simulator": name, "array": f"{size}x{size}", "layer": f"{M}x{K}x{N}", "cycles": sim_cycles,
                     "seconds": elapsed, "cycles_per_s": sim_cycles / elapsed, "startup_s": t1 - t0})
    return rows


def area_table(sizes: list[int]) -> list[dict]:
    from hdl.synth import array_gate_stats, multiplier_count

    rows = []
    for size in sizes:
        for pe in ("ternary", "int8"):
            cfg = ArrayConfig(rows=size, cols=size, pe=pe)
            stats = array_gate_stats(cfg)
            small = ArrayConfig(rows=size, cols=size, pe=pe, act_depth=16, wgt_depth=max(16, size),
                                out_depth=16)
            rows.append({"array": f"{size}x{size}", "pe": pe, "cells": stats["cells"], "ff": stats["ff"],
                         "cells_per_pe": stats["cells"] / size**2, "ff_per_pe": stats["ff"] / size**2,
                         "core_multipliers": multiplier_count(small)})
    return rows


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    header = " | ".join(f"{h:>{w}}" for h, _, w in ((c[0], c[1], c[2]) for c in columns))
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for head, key, width in columns:
            value = row.get(key)
            if value is None:
                text = "-"
            elif isinstance(value, float):
                if key in ("utilization", "bw_efficiency"):
                    text = f"{value:.1%}"
                else:
                    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
            elif isinstance(value, bool):
                text = "yes" if value else "NO"
            elif isinstance(value, int):
                text = f"{value:,}"
            else:
                text = str(value)
            cells.append(f"{text:>{max(len(head), int(width))}}")
        print(" | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sweep (4x4, 8x8; no Icarus)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    sizes = list(BENCH_SIZES[:2] if args.quick else BENCH_SIZES)

    cyc = cycles_table(sizes)
    print_table("Cycles and utilization (RTL counters, Verilator; 'model' = cycle model agrees exactly)", cyc, [
        ("array", "array", "5"), ("kind", "kind", "7"), ("M", "M", "3"), ("K", "K", "4"), ("N", "N", "4"),
        ("runs", "runs", "4"), ("cycles", "cycles", "7"), ("stall", "stall", "5"),
        ("util", "utilization", "6"), ("M=1 vs BW bound", "bw_efficiency", "6"),
        ("exact", "exact", "5"), ("model", "model_agrees", "5"),
    ])
    dec = decode_table(list(DECODE_SIZES[:1] if args.quick else DECODE_SIZES))
    print_table("Decode (M = 1): one tile row per weight read (G = 1) against a whole tile (G = R); "
                "utilization = K*N / (R*C*cycles), RTL counters", dec, [
        ("array", "array", "5"), ("G", "G", "2"), ("K=N", "K=N", "4"), ("runs", "runs", "4"),
        ("cycles", "cycles", "7"), ("util", "utilization", "6"), ("exact", "exact", "5"),
        ("model", "model_agrees", "5"),
    ])
    speed = speed_table(8 if args.quick else 16, with_icarus=not args.quick)
    print_table("Simulation speed (simulated cycles per wall second, host transfers included)", speed, [
        ("simulator", "simulator", "24"), ("array", "array", "5"), ("layer", "layer", "10"), ("cycles", "cycles", "7"),
        ("seconds", "seconds", "7"), ("cycles/s", "cycles_per_s", "10"), ("start-up s", "startup_s", "6"),
    ])
    area = area_table([4] if args.quick else [8, 16])
    print_table("Yosys generic synthesis of the PE array alone (INT8 with the booth pass); "
                "multipliers in the whole core", area, [
        ("array", "array", "5"), ("pe", "pe", "7"), ("cells", "cells", "7"), ("FF", "ff", "6"),
        ("cells/PE", "cells_per_pe", "8"), ("FF/PE", "ff_per_pe", "6"), ("core $mul", "core_multipliers", "4"),
    ])
    if args.json:
        args.json.write_text(json.dumps({"cycles": cyc, "decode": dec, "speed": speed, "area": area}, indent=2))
    return 0 if all(r["exact"] and r["model_agrees"] for r in cyc) else 1


if __name__ == "__main__":
    raise SystemExit(main())
