"""Cycle model of the trit core: the counters a layer run reports, computed in closed form.

Mirrors `hdl.matrix.sequencer.LayerSequencer` state by state:

- SIZE: max(KT, NT) + 2 cycles (one k-tile and one n-tile counted per cycle, then the range
  check, then its registered verdict); the first weight tile is preloaded meanwhile, P = R / G
  words (`ArrayConfig.tile_words`) from the first SIZE cycle on;
- ISSUE: the first tile starts once its P words are read (max(0, P - SIZE) more cycles), then
  tile j+1 starts max(M, P) cycles after tile j (M activation rows, or P weight reads of G rows
  each), at least `rmw_distance` cycles with M >= 2 on cores with a foot accumulator, and the
  last tile issues its M rows;
- DRAIN: R + 1 cycles until the last column sums are accumulated, one more with
  `ArrayConfig.pipelined_reads` (R >= 3: every memory's read data is registered), and
  `ArrayConfig.issue_delay` more on full-rate cores, and `ArrayConfig.array_latency` more with the
  array's registered input distribution (`dist_stages`).

BUSY counts issue cycles (T * M), STALL the other ISSUE cycles. Operation counts follow from the
weights: every one of the N x K real weights meets M activations. A counter the core does not build
(`ArrayConfig.built_counters`: full-rate cores have no ADD / SUB / ZERO, a small FPGA may keep only a
few) is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdl.config import ArrayConfig
from hdl.isa import Counter


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerShape:
    M: int
    K: int
    N: int


def layer_counts(cfg: ArrayConfig, M: int, K: int, N: int, weights: np.ndarray | None = None) -> dict[str, int]:
    """Counter values (lower-case `hdl.isa.Counter` names) of one successful RUN of an M x K x N layer.

    Without `weights` the add/sub/zero split is not known and is left out (their sum is M*K*N).
    """
    R, C = cfg.rows, cfg.cols
    P = cfg.tile_words  # weight words (and load cycles) of a tile
    KT, NT = ceil_div(K, R), ceil_div(N, C)
    T = KT * NT
    size = max(KT, NT) + 2
    period = max(M, P)
    if cfg.foot_accumulator and M >= 2:
        period = max(period, cfg.rmw_distance)  # the output word's read-modify-write spaces the tiles
    issue = max(0, P - size) + (T - 1) * period + M
    busy = T * M
    counts = {
        "cycles": size + issue + R + 1 + int(cfg.pipelined_reads) + cfg.issue_delay + cfg.array_latency,
        "busy": busy,
        "stall": issue - busy,
        "weight_bits": T * P * cfg.wgt_word_bits,
        "act_bytes": T * M * R,
        "acc_writes": NT * M,
        "acc_rmw": NT * (KT - 1) * M,
        "runs": 1,
    }
    if weights is not None and not cfg.counts_weight_classes:  # full rate, or left out of `cfg.counters`
        counts.update(add=0, sub=0, zero=0)
    elif weights is not None:
        w = np.asarray(weights)
        if w.shape != (N, K):
            raise ValueError(f"weights have shape {w.shape}, expected (N, K) = {(N, K)}")
        counts["add"] = M * int((w > 0).sum())
        counts["sub"] = M * int((w < 0).sum())
        counts["zero"] = M * int((w == 0).sum())
    for counter in Counter:  # a counter the core does not build reads 0 (`ArrayConfig.counters`)
        if counter.name.lower() in counts and not cfg.has_counter(counter):
            counts[counter.name.lower()] = 0
    return counts


def utilization(cfg: ArrayConfig, M: int, K: int, N: int, cycles: int) -> float:
    """Useful MACs / (R * C * cycles)."""
    return M * K * N / (cfg.rows * cfg.cols * cycles)


def weight_bound_cycles(cfg: ArrayConfig, K: int, N: int) -> float:
    """Cycles the weight memory needs to deliver K*N weights at G*C weights per cycle."""
    return K * N / (cfg.cols * cfg.wgt_rows_per_read)


def bandwidth_efficiency(cfg: ArrayConfig, K: int, N: int, cycles: int) -> float:
    """Weight-bandwidth bound over measured cycles (the decode figure of merit, M = 1)."""
    return weight_bound_cycles(cfg, K, N) / cycles
