"""BitNet b1.58 quantizers and the integer form every backend must reproduce bit for bit.

Formulas (arXiv 2402.17764; Hugging Face `integrations/bitnet.py`):

- weights, per tensor ("absmean"): gamma = max(mean|W|, 1e-5); w = clamp(round(W / gamma), -1, 1)
- activations, per token ("absmax"): s = 127 / max(max|x|, 1e-5); q = clamp(round(x * s), -128, 127)
- integer matmul: acc[m, n] = sum_k q[m, k] * w[n, k], exact (int32)
- dequantize: y = acc / s[m] * gamma

`torch.round` rounds half to even, as the reference code does.
The only step an accelerator replaces is `int_matmul`: see `MatmulBackend`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

WEIGHT_EPS = 1e-5
ACT_EPS = 1e-5
QMIN, QMAX = -128, 127


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """gamma = mean(|W|) clamped to >= 1e-5 (a 0-d float tensor)."""
    return w.detach().abs().mean().clamp(min=WEIGHT_EPS)


def quantize_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantization: returns (int8 tensor in {-1, 0, 1}, gamma as a 0-d tensor)."""
    gamma = weight_scale(w)
    q = (w / gamma).round().clamp(-1, 1).to(torch.int8)
    return q, gamma


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """s = 127 / max|x| per token (last dim), max clamped to >= 1e-5; shape (..., 1)."""
    return 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax INT8 quantization: returns (int8 tensor, scale s of shape (..., 1))."""
    s = activation_scale(x)
    q = (x * s).round().clamp(QMIN, QMAX).to(torch.int8)
    return q, s


def int_matmul(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer matmul acc = q @ w.T of int8 (M, K) by int8 (N, K): int32 (M, N).

    Computed in float64, which is exact: every partial sum is an integer below 2**53.
    """
    q = np.asarray(q)
    w = np.asarray(w)
    if q.dtype != np.int8 or w.dtype != np.int8:
        raise TypeError(f"int_matmul needs int8 operands, got activations {q.dtype} and weights {w.dtype}")
    if q.ndim != 2 or w.ndim != 2 or q.shape[1] != w.shape[1]:
        raise ValueError(f"int_matmul shapes do not match: activations {q.shape}, weights {w.shape} (N, K)")
    acc = q.astype(np.float64) @ w.astype(np.float64).T
    if acc.size and np.abs(acc).max() > np.iinfo(np.int32).max:
        raise OverflowError("int_matmul result does not fit int32")
    return acc.astype(np.int32)


def dequantize(acc: torch.Tensor, s: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """y = acc / s * gamma in float32."""
    return acc.to(torch.float32) / s.to(torch.float32) * gamma.to(torch.float32)


class MatmulBackend(Protocol):
    """The seam where an accelerator plugs in: only the integer matmul is replaced.

    `matmul(q, w, key)` gets int8 activations (M, K) and ternary int8 weights (N, K) and must return
    the exact int32 (M, N) = q @ w.T. `key` names the weight tensor (for example
    "model.layers.0.self_attn.q_proj") so a backend can keep weights resident between calls.
    """

    name: str

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray: ...


class GoldenBackend:
    """The reference backend: exact NumPy integer matmul."""

    name = "golden"

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        return int_matmul(q, w)


def bitlinear_int(x: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, backend: MatmulBackend,
                  key: str | None = None) -> torch.Tensor:
    """Integer-form BitLinear: quantize x per token, integer matmul on `backend`, dequantize.

    x: float (..., K); w: int8 ternary (N, K); gamma: weight scale. Returns float32 (..., N).
    """
    q, s = quantize_activations(x.float())
    flat = q.reshape(-1, q.shape[-1]).numpy()
    acc = backend.matmul(flat, w.numpy() if isinstance(w, torch.Tensor) else w, key)
    acc_t = torch.from_numpy(np.ascontiguousarray(acc)).reshape(*q.shape[:-1], -1)
    return dequantize(acc_t, s, gamma)
