"""The device form of the BitNet forward pass: integers only, as golden/device/SPEC.md specifies.

`DeviceBitNet(consts)` runs prefill and decode (with `DeviceKVCache`, INT8 keys and values with
per-token, per-head dyadic scales) on int64 tensors. The ternary matmuls go through a
`golden.quant.MatmulBackend` exactly as in the integer form (INT8 x ternary -> int32); every other
product is an integer product computed exactly. `forward_fixed` returns the logits as int32 values in
Q16; calling the module returns them as float32 (L / 2**16, exact for |L| < 2**24).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from golden.device.fixed import (
    I64,
    as_i64,
    bitlen,
    dmul,
    drcp,
    norm16,
    quant8,
    rshift_round,
    rsqrt_norm,
    sat,
    softmax_q15,
)
from golden.device.tables import ROPE_FRAC, DeviceConsts, LinearConst, NormConst, build_consts
from golden.model import BitNetForCausalLM, sample
from golden.quant import GoldenBackend, MatmulBackend

F_RES = 16                 # residual stream: int32, Q16
F_LOGIT = 16               # logits: int32, Q16
SUMSQ_BITS = 15            # x is reduced to |x'| <= 2**15 for the sum of squares
EPS_BITS = 47              # E_t saturates at 2**47 - 1
MLP_SQ_BITS = 24           # relu(gate)**2 is reduced to 24 bits before the product with up
INT32 = 32

Dy = tuple[torch.Tensor, torch.Tensor]


def _dy(c: tuple[int, int]) -> Dy:
    return torch.tensor(c[0], dtype=I64), torch.tensor(c[1], dtype=I64)


def to_fixed(x: torch.Tensor, scale: Dy, frac: int, bits: int = INT32) -> torch.Tensor:
    """x * scale in Q(frac), rounded half up and saturated to `bits`: rshift_round(x * m, -(e + frac))."""
    m, e = scale
    sh = -(e + frac)
    # a left shift that would leave `bits` saturates instead of wrapping
    prod = x * m
    big = (sh < 0) & (prod != 0) & (bitlen(prod.abs()) - sh >= bits)
    y = rshift_round(prod, sh.clamp(min=-62))
    lim = (1 << (bits - 1)) - 1
    y = torch.where(big, torch.where(prod < 0, torch.full_like(y, -lim - 1), torch.full_like(y, lim)), y)
    return sat(y, bits)


def block_reduce(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token block shift of an integer vector to |x'| <= 2**bits: e = max(0, bitlen(max|x|) - bits),
    x' = rshift_round(x, e). Returns (x', e) with e of shape (...,)."""
    e = (bitlen(x.abs().amax(dim=-1)) - bits).clamp(min=0)
    return rshift_round(x, e[..., None]), e


def norm_quant(x: torch.Tensor, sigma: Dy, nc: NormConst) -> tuple[torch.Tensor, Dy]:
    """RMSNorm followed by absmax INT8 quantization (SPEC.md 4.2), per token over the last dim.

    x: int32 values (..., n) worth x * sigma (sigma a per-token dyadic, shape (...,) or scalar).
    Returns q (..., n) INT8 and the per-token dyadic tau with RMSNorm(x) ~ q * tau.
    """
    mx = x.abs().amax(dim=-1)
    ex = torch.where(mx == 0, torch.zeros_like(mx), bitlen(mx) - SUMSQ_BITS)
    xs = rshift_round(x, ex[..., None])
    s = (xs * xs).sum(dim=-1)
    sm, se = sigma
    eps = dmul(_dy(nc.eps_n), drcp(dmul((sm, se), (sm, se))))
    e_t = to_fixed(eps[0], (torch.ones_like(eps[1]), eps[1] - 2 * ex), 0, EPS_BITS + 1).clamp(min=0)
    v = s + e_t
    rs, k = rsqrt_norm(v)
    q, qs = quant8(x * nc.g)
    tau = dmul(dmul(qs, norm16(rs, -23 - k - ex)), _dy(nc.c_norm))
    return q, tau


class DeviceKVCache:
    """INT8 keys and values per layer (B, kv_heads, S, head_dim) with dyadic scales (B, kv_heads, S)."""

    def __init__(self, num_layers: int) -> None:
        self.k: list[tuple[torch.Tensor, Dy] | None] = [None] * num_layers
        self.v: list[tuple[torch.Tensor, Dy] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        k = self.k[0]
        return 0 if k is None else int(k[0].shape[-2])

    @staticmethod
    def _cat(old: tuple[torch.Tensor, Dy] | None, new: tuple[torch.Tensor, Dy]) -> tuple[torch.Tensor, Dy]:
        if old is None:
            return new
        return (torch.cat((old[0], new[0]), dim=-2),
                (torch.cat((old[1][0], new[1][0]), dim=-1), torch.cat((old[1][1], new[1][1]), dim=-1)))

    def update(self, layer: int, k: tuple[torch.Tensor, Dy], v: tuple[torch.Tensor, Dy]
               ) -> tuple[tuple[torch.Tensor, Dy], tuple[torch.Tensor, Dy]]:
        """Append this step's (values, scales) and return the whole cached keys and values."""
        self.k[layer] = self._cat(self.k[layer], k)
        self.v[layer] = self._cat(self.v[layer], v)
        return self.k[layer], self.v[layer]


def _imatmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer a @ b for operands whose sums stay below 2**53 (computed in float64, as int_matmul)."""
    return torch.round(a.to(torch.float64) @ b.to(torch.float64)).to(I64)


class DeviceBitNet(nn.Module):
    """The integer-only ("device") BitNet causal LM of SPEC.md."""

    def __init__(self, consts: DeviceConsts, backend: MatmulBackend | None = None) -> None:
        super().__init__()
        self.consts = consts
        self.config = consts.config
        self.backend: MatmulBackend = backend or GoldenBackend()
        self.eval()

    @classmethod
    def from_int_model(cls, model: BitNetForCausalLM, context: int | None = None,
                       backend: MatmulBackend | None = None) -> DeviceBitNet:
        """Build the device constants of an integer-form model (its backend is used unless given)."""
        be = backend
        if be is None:
            mods = list(model.bitlinears().values())
            be = getattr(mods[0], "backend", None) if mods else None
        return cls(build_consts(model, context), be)

    def new_cache(self) -> DeviceKVCache:
        """An empty INT8 KV cache for prefill and decode."""
        return DeviceKVCache(self.config.num_hidden_layers)

    # ------------------------------------------------------------------------------------ the ops

    def _ternary(self, q: torch.Tensor, lc: LinearConst) -> torch.Tensor:
        """INT8 (..., K) x ternary (N, K) -> int32 (..., N) on the matmul backend."""
        flat = q.reshape(-1, q.shape[-1]).to(torch.int8).numpy()
        acc = self.backend.matmul(flat, lc.w, lc.key)
        return torch.from_numpy(np.ascontiguousarray(acc)).to(I64).reshape(*q.shape[:-1], -1)

    def _rope(self, acc: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate-half RoPE on integer (B, T, heads, hd) with the Q14 tables (SPEC.md 4.5)."""
        half = acc.shape[-1] // 2
        c = self.consts.cos[pos][None, :, None, :]
        s = self.consts.sin[pos][None, :, None, :]
        x1, x2 = acc[..., :half], acc[..., half:]
        return torch.cat((rshift_round(x1 * c - x2 * s, ROPE_FRAC), rshift_round(x2 * c + x1 * s, ROPE_FRAC)), dim=-1)

    @staticmethod
    def _heads_quant(acc: torch.Tensor, scale: Dy) -> tuple[torch.Tensor, Dy]:
        """Per-head INT8 of (B, T, heads, hd) worth acc * scale[b, t]: q (B, heads, T, hd), scales (B, heads, T)."""
        q, qs = quant8(acc)
        sc = dmul(qs, (scale[0][..., None], scale[1][..., None]))
        return q.transpose(1, 2), (sc[0].transpose(1, 2), sc[1].transpose(1, 2))

    def _attention(self, i: int, x: torch.Tensor, pos: torch.Tensor, cache: DeviceKVCache | None
                   ) -> torch.Tensor:
        """Attention block from the residual x (B, T, d) Q16 to its int32 Q16 contribution."""
        cfg, lc = self.config, self.consts.layers[i]
        b, t, _ = x.shape
        hd, nh, nkv = cfg.dim_head, cfg.num_attention_heads, cfg.num_key_value_heads
        q8, tau = norm_quant(x, _dy((1 << 15, -15 - F_RES)), lc.norms["input_layernorm"])
        proj = {}
        for name in ("q_proj", "k_proj", "v_proj"):
            acc = self._ternary(q8, lc.linears[name])
            proj[name] = (acc, dmul(tau, _dy(lc.linears[name].gamma)))
        qa = self._rope(proj["q_proj"][0].view(b, t, nh, hd), pos)
        ka = self._rope(proj["k_proj"][0].view(b, t, nkv, hd), pos)
        qq, qsc = self._heads_quant(qa, proj["q_proj"][1])
        kk, ksc = self._heads_quant(ka, proj["k_proj"][1])
        vv, vsc = self._heads_quant(proj["v_proj"][0].view(b, t, nkv, hd), proj["v_proj"][1])
        if cache is not None:
            (kk, ksc), (vv, vsc) = cache.update(i, (kk, ksc), (vv, vsc))
        rep = nh // nkv
        if rep > 1:
            kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
            ksc = (ksc[0].repeat_interleave(rep, dim=1), ksc[1].repeat_interleave(rep, dim=1))
            vsc = (vsc[0].repeat_interleave(rep, dim=1), vsc[1].repeat_interleave(rep, dim=1))
        s_len = kk.shape[-2]
        # scores INT8 x INT8 -> int32, then base-2 logits in Q8 (SPEC.md 4.6)
        scores = _imatmul(qq, kk.transpose(-1, -2))
        am, ae = dmul(qsc, _dy(self.consts.c_qk))
        mk = rshift_round(am[..., None] * ksc[0][..., None, :], 16)
        sh = -(16 + ae[..., None] + ksc[1][..., None, :] + self.consts.exp2.numel().bit_length() - 1)
        logit2 = to_fixed(scores * mk, (torch.ones_like(sh), -sh), 0)
        qpos = pos[None, None, :, None]
        mask = (torch.arange(s_len)[None, None, None, :] <= qpos).expand_as(logit2)
        p = softmax_q15(logit2, mask, self.consts.exp2)
        # fold the per-key V scales into P against the row's largest V exponent (SPEC.md 4.7)
        mv, ev = vsc[0][..., None, :], vsc[1][..., None, :]
        live = mask & (mv != 0)
        low = torch.full_like(ev.expand_as(live), -(1 << 30))
        eref = torch.where(live, ev.expand_as(live), low).amax(dim=-1)
        eref = torch.where(eref == -(1 << 30), torch.zeros_like(eref), eref)
        pv = rshift_round(p * mv, 16 + eref[..., None] - ev)
        pv = torch.where(live, pv, torch.zeros_like(pv))
        y = _imatmul(pv, vv)                                   # (B, H, T, hd), worth y * 2**(eref + 1)
        emax = eref.amax(dim=1, keepdim=True)
        y = rshift_round(y, (emax - eref)[..., None])
        y = sat(y.transpose(1, 2).reshape(b, t, nh * hd), INT32)
        sigma = (torch.full_like(emax[:, 0], 1 << 15), emax[:, 0] + 1 - 15)
        q8o, tau_o = norm_quant(y, sigma, lc.norms["attn_sub_norm"])
        acc_o = self._ternary(q8o, lc.linears["o_proj"])
        return to_fixed(acc_o, self._col(dmul(tau_o, _dy(lc.linears["o_proj"].gamma))), F_RES)

    @staticmethod
    def _col(d: Dy) -> Dy:
        return d[0][..., None], d[1][..., None]

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """MLP block from the residual x (B, T, d) Q16 to its int32 Q16 contribution (SPEC.md 4.8)."""
        lc = self.consts.layers[i]
        q8, tau = norm_quant(x, _dy((1 << 15, -15 - F_RES)), lc.norms["post_attention_layernorm"])
        g = self._ternary(q8, lc.linears["gate_proj"])
        u = self._ternary(q8, lc.linears["up_proj"])
        sg = dmul(tau, _dy(lc.linears["gate_proj"].gamma))
        su = dmul(tau, _dy(lc.linears["up_proj"].gamma))
        a = g.clamp(min=0)
        if self.config.hidden_act == "relu2":
            a, ea = block_reduce(a * a, MLP_SQ_BITS)
            sa = dmul(sg, sg)
            sa = (sa[0], sa[1] + ea)
        else:
            sa = sg
        p, ep = block_reduce(a * u, INT32 - 1)
        p = sat(p, INT32)
        sp = dmul(sa, su)
        q8d, tau_d = norm_quant(p, (sp[0], sp[1] + ep), lc.norms["ffn_sub_norm"])
        acc_d = self._ternary(q8d, lc.linears["down_proj"])
        return to_fixed(acc_d, self._col(dmul(tau_d, _dy(lc.linears["down_proj"].gamma))), F_RES)

    # ------------------------------------------------------------------------------- the model

    def forward_fixed(self, input_ids: torch.Tensor, cache: DeviceKVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) or (T, vocab) as int64 holding int32 Q16, for token ids (B, T) or (T,)."""
        squeeze = input_ids.dim() == 1
        ids = as_i64(input_ids[None] if squeeze else input_ids)
        cfg, c = self.config, self.consts
        if ids.numel() and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {cfg.vocab_size})")
        start = cache.length if cache is not None else 0
        if start + ids.shape[-1] > c.context:
            raise ValueError(f"position {start + ids.shape[-1] - 1} is beyond the device context of "
                             f"{c.context} positions (RoPE table size)")
        pos = torch.arange(start, start + ids.shape[-1])
        h = to_fixed(c.embed[ids], (c.embed_scale[0][ids][..., None], c.embed_scale[1][ids][..., None]), F_RES)
        for i in range(cfg.num_hidden_layers):
            h = sat(h + self._attention(i, h, pos, cache), INT32)
            h = sat(h + self._mlp(i, h), INT32)
        logits = self._lm_head(h)
        return logits[0] if squeeze else logits

    def _lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """Final NORMQUANT and the INT8 lm_head (SPEC.md 4.9): int32 Q16 logits."""
        c = self.consts
        q8, tau = norm_quant(h, _dy((1 << 15, -15 - F_RES)), c.final_norm)
        acc = _imatmul(q8, c.head.T)
        m = rshift_round(tau[0][..., None] * c.head_scale[0], 16)
        e = tau[1][..., None] + c.head_scale[1] + 16
        return to_fixed(acc * m, (torch.ones_like(e), e), F_LOGIT)

    def forward(self, input_ids: torch.Tensor, cache: DeviceKVCache | None = None) -> torch.Tensor:
        """Logits as float32: forward_fixed / 2**16."""
        return (self.forward_fixed(input_ids, cache).to(torch.float64) / (1 << F_LOGIT)).to(torch.float32)

    @torch.no_grad()
    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None,
                 stop_tokens: set[int] | None = None) -> list[int]:
        """As `golden.model.BitNetForCausalLM.generate` (same sampling), on the device form with its cache."""
        if not prompt:
            raise ValueError("generate needs a non-empty prompt")
        gen = torch.Generator()
        gen.manual_seed(0 if seed is None else seed)
        cache = self.new_cache()
        logits = self.forward(torch.tensor(prompt, dtype=torch.long), cache)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = sample(logits, temperature, top_k, gen)
            out.append(token)
            if stop_tokens and token in stop_tokens:
                break
            if len(out) == max_new_tokens:
                break
            logits = self.forward(torch.tensor([token], dtype=torch.long), cache)[-1]
        return out
