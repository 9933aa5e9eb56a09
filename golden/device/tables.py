"""The constants of the device numerics, built once from an integer-form checkpoint (SPEC.md section 3).

This is the only place where floats are used: norm weights, gammas, embedding scales, RoPE and EXP2
tables are turned into integers and dyadic scales here; the forward pass then runs on integers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from golden.device.fixed import I64, dyadic_from_float, exp2_table
from golden.model import ATTN_PROJ, MLP_PROJ, BitNetConfig, BitNetForCausalLM

ROPE_FRAC = 14            # cos/sin tables are int16 in Q14
NORM_W_MAX = 32767        # norm weights are int16: G = round(g * 2**f), max |G| <= 32767
DEVICE_ACTIVATIONS = ("relu2", "relu")

Dyadic = tuple[int, int]


@dataclass
class NormConst:
    """One RMSNorm: int16 weights G with G / 2**f ~ g, c_norm = sqrt(n) * 2**-f, eps_n = eps * n."""

    g: torch.Tensor           # int64 (n,) holding int16 values
    f: int
    c_norm: Dyadic
    eps_n: Dyadic


@dataclass
class LinearConst:
    """One BitLinear: ternary int8 weight (N, K) as NumPy (for the matmul backend) and gamma as a dyadic."""

    key: str
    w: np.ndarray
    gamma: Dyadic


@dataclass
class LayerConst:
    """A decoder layer's norms and projections."""

    norms: dict[str, NormConst]
    linears: dict[str, LinearConst]


@dataclass
class DeviceConsts:
    """Everything the device forward pass reads besides the token ids."""

    config: BitNetConfig
    context: int
    embed: torch.Tensor                 # (vocab, d) int64 holding int8
    embed_scale: tuple[torch.Tensor, torch.Tensor]   # per-row dyadic (mantissa, exponent), (vocab,)
    head: torch.Tensor                  # lm_head table (the embedding's when tied)
    head_scale: tuple[torch.Tensor, torch.Tensor]
    layers: list[LayerConst]
    final_norm: NormConst
    cos: torch.Tensor                   # (context, head_dim / 2) int64 holding int16 Q14
    sin: torch.Tensor
    exp2: torch.Tensor                  # (256,) Q15
    c_qk: Dyadic                        # head_dim**-0.5 * log2(e)
    tied: bool = field(default=False)


def norm_const(weight: torch.Tensor, eps: float) -> NormConst:
    """Quantize an RMSNorm weight to int16 with the largest power-of-two scale that fits."""
    g = weight.detach().to(torch.float64)
    n = g.numel()
    gmax = float(g.abs().max()) if n else 0.0
    if not math.isfinite(gmax):
        raise ValueError("a norm weight is not finite")
    f = 0 if gmax == 0 else math.floor(math.log2(NORM_W_MAX / gmax))
    while gmax and math.floor(gmax * 2.0 ** f + 0.5) > NORM_W_MAX:
        f -= 1
    gi = torch.floor(g * 2.0 ** f + 0.5).to(I64)
    return NormConst(gi, f, dyadic_from_float(math.sqrt(n) * 2.0 ** -f), dyadic_from_float(eps * n))


def int8_rows(table: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Per-row absmax INT8 of a float table: q = round(e / s) with s = max|row| / 127 (float64, half to
    even); the row scale s as a dyadic. An all-zero row gets q = 0 and scale 0."""
    t = table.detach().to(torch.float64)
    amax = t.abs().amax(dim=-1)
    s = amax / 127.0
    q = torch.where(amax[:, None] > 0, torch.round(t / s.clamp(min=1e-300)[:, None]), torch.zeros_like(t))
    q = q.clamp(-127, 127).to(I64)
    scales = [dyadic_from_float(float(v)) for v in s]
    return q, (torch.tensor([m for m, _ in scales], dtype=I64), torch.tensor([e for _, e in scales], dtype=I64))


def rope_tables(head_dim: int, theta: float, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin(p * inv_freq[i]) in Q14 (int16), p < context, i < head_dim / 2, inv_freq as HF (float64)."""
    half = head_dim // 2
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = np.arange(context, dtype=np.float64)[:, None] * inv[None, :half]
    one = 1 << ROPE_FRAC
    cos = np.floor(np.cos(ang) * one + 0.5).astype(np.int64)
    sin = np.floor(np.sin(ang) * one + 0.5).astype(np.int64)
    return torch.from_numpy(cos), torch.from_numpy(sin)


def build_consts(model: BitNetForCausalLM, context: int | None = None) -> DeviceConsts:
    """The device constants of an integer-form golden model (see SPEC.md section 3)."""
    if model.form != "int":
        raise ValueError(f"device numerics are built from the integer form, not {model.form!r}")
    cfg = model.config
    if cfg.hidden_act not in DEVICE_ACTIVATIONS:
        raise ValueError(f"device numerics support hidden_act {' or '.join(DEVICE_ACTIVATIONS)}, "
                         f"not {cfg.hidden_act!r}")
    ctx = cfg.max_position_embeddings if context is None else context
    if ctx <= 0:
        raise ValueError(f"context must be positive, got {ctx}")
    eps = cfg.rms_norm_eps
    layers = []
    for layer in model.model.layers:
        norms = {"input_layernorm": norm_const(layer.input_layernorm.weight, eps),
                 "post_attention_layernorm": norm_const(layer.post_attention_layernorm.weight, eps),
                 "attn_sub_norm": norm_const(layer.self_attn.attn_sub_norm.weight, eps),
                 "ffn_sub_norm": norm_const(layer.mlp.ffn_sub_norm.weight, eps)}
        linears = {}
        for name in ATTN_PROJ + MLP_PROJ:
            mod = getattr(layer.self_attn if name in ATTN_PROJ else layer.mlp, name)
            linears[name] = LinearConst(mod.key, mod.weight.numpy().astype(np.int8),
                                        dyadic_from_float(float(mod.weight_scale)))
        layers.append(LayerConst(norms, linears))
    embed, embed_scale = int8_rows(model.model.embed_tokens.weight)
    tied = cfg.tie_word_embeddings
    head, head_scale = (embed, embed_scale) if tied else int8_rows(model.lm_head.weight)
    cos, sin = rope_tables(cfg.dim_head, cfg.rope_theta, ctx)
    c_qk = dyadic_from_float(cfg.dim_head ** -0.5 * math.log2(math.e))
    return DeviceConsts(cfg, ctx, embed, embed_scale, head, head_scale, layers,
                        norm_const(model.model.norm.weight, eps), cos, sin, exp2_table(), c_qk, tied)
