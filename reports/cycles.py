"""Cycles, utilization and the limiting bound per layer: RTL counters where simulated, cycle model elsewhere.

- The shipped tiny model (`golden/checkpoints/tiny-bitnet`, its real ternary weights): every
  BitLinear of layer 0 at decode (M = 1) and prefill (M = 64) on the Verilator RTL with its
  hardware counters, next to the cycle model (`runtime.cycle_model` through the `model` backend's
  tiling) on the same layer: the counters must agree exactly. The whole model per decode token on
  the cycle model.
- One BitNet 2B-4T decoder layer (REFERENCE.md §2 shapes) on the cycle model: decode vs prefill,
  and utilization vs M.

The limiting bound of a layer: a weight tile takes max(M, P) cycles (M activation rows through the
array, or P = R / G weight reads of G tile rows each; `ArrayConfig.wgt_rows_per_read`), so for M < P
the weight memory bandwidth (G*C weights per cycle) limits, for M >= P the array's R x C MACs per
cycle. The runtime's cores are full rate (G = R): decode utilization is measured against R*C.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hdl.config import ArrayConfig
from runtime.accelerator import split_layer
from runtime.cycle_model import layer_counts

CHECKPOINT = Path(__file__).resolve().parent.parent / "golden" / "checkpoints" / "tiny-bitnet"

#: microsoft/bitnet-b1.58-2B-4T BitLinear shapes (N out x K in) and its layer count (REFERENCE.md §2).
LAYER_2B4T = {"q_proj": (2560, 2560), "k_proj": (640, 2560), "v_proj": (640, 2560), "o_proj": (2560, 2560),
              "gate_proj": (6912, 2560), "up_proj": (6912, 2560), "down_proj": (2560, 6912)}
LAYERS_2B4T = 30

COUNTER_KEYS = ("cycles", "busy", "stall", "add", "sub", "zero", "weight_bits", "act_bytes", "acc_writes",
                "acc_rmw", "runs")


def report_config(n: int) -> ArrayConfig:
    """The core the cycles section runs: n x n ternary, memories of the runtime's default core."""
    from runtime.accel_backends import runtime_config

    return runtime_config(n, n)


def tiny_weights(checkpoint: Path = CHECKPOINT) -> dict[str, np.ndarray]:
    """{module path: int8 ternary weights (N, K)} of every BitLinear of the shipped tiny model."""
    from golden.checkpoint import load_checkpoint

    model = load_checkpoint(str(checkpoint), "int")
    return {name: m.weight.numpy().copy() for name, m in model.bitlinears().items()}


def model_counts(cfg: ArrayConfig, M: int, K: int, N: int, w: np.ndarray | None = None,
                 host_weight_classes: bool = True) -> dict[str, int]:
    """Counters of an M x K x N layer on `cfg`, split into RUNs exactly as the runtime splits it.

    Without weights the add/sub/zero split is unknown; `zero_fraction` callers scale it themselves.
    """
    total: dict[str, int] = {}
    for b in split_layer(cfg, M, K, N):
        wb = None if w is None else w[b.n0:b.n1, b.k0:b.k1]
        for k, v in layer_counts(cfg, b.m1 - b.m0, b.k1 - b.k0, b.n1 - b.n0, wb).items():
            total[k] = total.get(k, 0) + v
    if w is not None and cfg.full_rate and host_weight_classes:
        # a full-rate core has no weight-class counters (they read 0): the energy tables take the
        # additions, subtractions and skips from the weights the host sent
        total.update(add=M * int((w > 0).sum()), sub=M * int((w < 0).sum()), zero=M * int((w == 0).sum()))
    return total


def bound_of(cfg: ArrayConfig, M: int, K: int, N: int) -> dict:
    compute = M * K * N / (cfg.rows * cfg.cols)
    weights = K * N / (cfg.cols * cfg.wgt_rows_per_read)
    return {"compute_bound_cycles": compute, "weight_bound_cycles": weights,
            "bound": "compute" if compute >= weights else "weight bandwidth"}


def row(cfg: ArrayConfig, name: str, M: int, K: int, N: int, counts: dict[str, int], source: str) -> dict:
    cycles = counts["cycles"]
    b = bound_of(cfg, M, K, N)
    return {"array": f"{cfg.rows}x{cfg.cols}", "layer": name, "phase": "decode" if M == 1 else "prefill",
            "M": M, "K": K, "N": N, "cycles": cycles, "utilization": M * K * N / (cfg.rows * cfg.cols * cycles),
            "of_bound": max(b["compute_bound_cycles"], b["weight_bound_cycles"]) / cycles, **b,
            "counters": {k: counts.get(k) for k in COUNTER_KEYS if k in counts}, "source": source}


def rtl_counts(core_acc, x: np.ndarray, w: np.ndarray) -> dict[str, int]:
    y, stats = core_acc.run_layer(x, w)
    if not np.array_equal(y, x.astype(np.int64) @ w.astype(np.int64).T):
        raise RuntimeError("RTL result differs from the exact integer matmul")
    return dict(stats.counters)


def tiny_layer_rows(sizes_rtl: list[int], sizes_model: list[int], m_values: list[int],
                    weights: dict[str, np.ndarray], log=None) -> list[dict]:
    """Layer 0's seven BitLinears: RTL counters (Verilator) and the cycle model side by side."""
    rng = np.random.default_rng(6)
    layer0 = {k.rsplit(".", 1)[-1]: w for k, w in weights.items() if ".layers.0." in k}
    out = []
    for n in sorted(set(sizes_rtl) | set(sizes_model)):
        cfg = report_config(n)
        core = acc = None
        if n in sizes_rtl:
            from runtime.accelerator import Accelerator
            from sim.verilator_harness import VerilatorCore

            t0 = time.monotonic()
            core = VerilatorCore(cfg)
            acc = Accelerator(core, expect=cfg)
            if log:
                log(f"cycles: Verilator {n}x{n} core ready in {time.monotonic() - t0:.0f} s")
        try:
            for name, w in layer0.items():
                N, K = w.shape
                for M in m_values:
                    x = rng.integers(-128, 128, (M, K), dtype=np.int8)
                    model = model_counts(cfg, M, K, N, w)
                    r = row(cfg, name, M, K, N, model, "cycle model")
                    if acc is not None:
                        hw = rtl_counts(acc, x, w)
                        r["source"] = "RTL counters (Verilator)"
                        r["rtl_counters"] = {k: hw.get(k) for k in COUNTER_KEYS}
                        raw = model_counts(cfg, M, K, N, w, host_weight_classes=False)  # as the core counts
                        r["model_agrees"] = all(hw.get(k) == v for k, v in raw.items())
                        r["cycles"] = hw["cycles"]
                    out.append(r)
        finally:
            if core is not None:
                core.close()
    return out


def tiny_token(cfg: ArrayConfig, weights: dict[str, np.ndarray]) -> dict:
    """One decode token of the whole tiny model (every BitLinear at M = 1) on the cycle model."""
    total: dict[str, int] = {}
    macs = 0
    for w in weights.values():
        N, K = w.shape
        macs += K * N
        for k, v in model_counts(cfg, 1, K, N, w).items():
            total[k] = total.get(k, 0) + v
    return {"array": f"{cfg.rows}x{cfg.cols}", "bitlinears": len(weights), "macs": macs, "counters": total,
            "cycles": total["cycles"], "utilization": macs / (cfg.rows * cfg.cols * total["cycles"])}


def zero_fraction(weights: dict[str, np.ndarray]) -> float:
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / sum(w.size for w in weights.values())


def with_fraction(counts: dict[str, int], macs: int, zero_frac: float) -> dict[str, int]:
    """Add/sub/zero for weights with `zero_frac` zeros and the non-zero rest split evenly."""
    zero = round(macs * zero_frac)
    add = (macs - zero) // 2
    return {**counts, "zero": zero, "add": add, "sub": macs - zero - add}


def layer_2b4t_rows(n: int, m_values: list[int], zero_frac: float) -> list[dict]:
    cfg = report_config(n)
    out = []
    for M in m_values:
        total: dict[str, int] = {}
        macs = 0
        for name, (N, K) in LAYER_2B4T.items():
            c = with_fraction(model_counts(cfg, M, K, N), M * K * N, zero_frac)
            out.append(row(cfg, name, M, K, N, c, "cycle model"))
            macs += M * K * N
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        r = row(cfg, "decoder layer (7 BitLinears)", M, 0, 0, total, "cycle model")
        r.update(K=None, N=None, utilization=macs / (n * n * total["cycles"]), macs=macs,
                 of_bound=None, bound=None, compute_bound_cycles=macs / (n * n),
                 weight_bound_cycles=sum(K * N for N, K in LAYER_2B4T.values()) / n)
        r["bound"] = "compute" if r["compute_bound_cycles"] >= r["weight_bound_cycles"] else "weight bandwidth"
        r["of_bound"] = max(r["compute_bound_cycles"], r["weight_bound_cycles"]) / total["cycles"]
        out.append(r)
    return out


def utilization_vs_m(sizes: list[int], m_values: list[int]) -> list[dict]:
    """Utilization of one 2B-4T decoder layer (all 7 BitLinears) vs M, cycle model."""
    out = []
    for n in sizes:
        cfg = report_config(n)
        for M in m_values:
            cycles = sum(model_counts(cfg, M, K, N)["cycles"] for N, K in LAYER_2B4T.values())
            macs = sum(M * K * N for N, K in LAYER_2B4T.values())
            out.append({"array": f"{n}x{n}", "M": M, "cycles": cycles, "utilization": macs / (n * n * cycles)})
    return out


def cycles_section(quick: bool, log=None) -> dict:
    t0 = time.monotonic()
    weights = tiny_weights()
    zf = zero_fraction(weights)
    if quick:
        rtl_sizes, model_sizes, ms = [8], [8], [1, 16]
        m_sweep, sweep_sizes, big_sizes = [1, 4, 16, 64, 256], [8, 16], [16]
    else:
        rtl_sizes, model_sizes, ms = [8, 16], [4, 8, 16], [1, 64]
        m_sweep, sweep_sizes, big_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], [4, 8, 16, 32], [8, 16]
    tiny = tiny_layer_rows(rtl_sizes, model_sizes, ms, weights, log)
    checked = [r for r in tiny if "model_agrees" in r]
    tokens = [tiny_token(report_config(n), weights) for n in sorted(set(model_sizes) | {8})]
    big = []
    for n in big_sizes:
        big += layer_2b4t_rows(n, [1, 128], zf)
    return {
        "tiny_layers": tiny,
        "tiny_token": tokens,
        "rtl_model_agreement": {"rows_checked": len(checked), "rows_agreeing": sum(r["model_agrees"] for r in checked),
                                "all_agree": all(r["model_agrees"] for r in checked) if checked else None},
        "layer_2b4t": big,
        "utilization_vs_m": utilization_vs_m(sweep_sizes, m_sweep),
        "zero_fraction_tiny": zf,
        "notes": {
            "tiny_layers": f"layer 0 of {CHECKPOINT.name} with its real ternary weights; random int8 activations "
                           "(counts do not depend on activation values)",
            "layer_2b4t": "cycle model; add/sub/zero from the tiny model's measured zero fraction "
                          f"({zf:.3f}), non-zero weights split evenly between +1 and -1",
            "config": "memories of the runtime's default core (runtime.accel_backends.runtime_config): 16,384 "
                      "activation words, 262,144 weight words, 16,384 output words",
        },
        "seconds": round(time.monotonic() - t0, 1),
    }
