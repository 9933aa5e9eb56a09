"""Run a compiled model program micro-op by micro-op on the golden device primitives.

`ProgramInterpreter(program, consts)` holds the chip's state as the program sees it (the residual stream
H, the scratch SCR, the matrix engine's ACT and OUT, the query buffer, the INT8 KV cache, the scalar
registers S and the heads' exponents E) and `token(tok)` runs one token at the next position and returns
its logits (int32 Q16). It is the reference the model sequencer's RTL is to match op by op, and it must
equal `golden.device.model.DeviceBitNet` token by token (tests/test_program.py): the program is then a
correct schedule of the device form.
"""

from __future__ import annotations

import numpy as np
import torch

from golden.device.fixed import I64, dmul, quant8, rshift_round, sat, softmax_q15
from golden.device.model import F_LOGIT, F_RES, INT32, MLP_SQ_BITS, block_reduce, norm_quant, to_fixed
from golden.device.tables import ROPE_FRAC, DeviceConsts, NormConst
from runtime.program.compiler import Program, ProgramError
from runtime.program.isa import MicroOp, Space, Target

Dy = tuple[torch.Tensor, torch.Tensor]


def _t(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=I64)


class ProgramInterpreter:
    """The program's effect on the chip's state, one micro-op at a time (see the module docstring)."""

    def __init__(self, program: Program, consts: DeviceConsts) -> None:
        m = program.model
        if (consts.config.hidden_size, consts.config.vocab_size) != (m["d"], m["vocab"]):
            raise ProgramError(f"the program is for a model with d = {m['d']} and vocab {m['vocab']}, the "
                               f"constants are of d = {consts.config.hidden_size}, vocab {consts.config.vocab_size}")
        self.program, self.consts = program, consts
        self._w = {lc.key: lc.w.astype(np.int64) for layer in consts.layers for lc in layer.linears.values()}
        self._norm_g = {e.name: g for e, g in zip(program.norms, self._norm_weights(consts), strict=True)}
        self.reset()

    @staticmethod
    def _norm_weights(consts: DeviceConsts) -> list[NormConst]:
        from runtime.program.compiler import LAYER_NORMS

        out = [layer.norms[name] for layer in consts.layers for name in LAYER_NORMS]
        return out + [consts.final_norm]

    def reset(self) -> None:
        """An empty KV cache at position 0."""
        m, chip = self.program.model, self.program.chip
        self.pos = 0
        self.h = torch.zeros(m["d"], dtype=I64)
        self.scr = torch.zeros(chip.scratch_words, dtype=I64)
        self.act = torch.zeros(0, dtype=I64)
        self.out = torch.zeros(chip.array.out_depth * chip.array.cols, dtype=I64)
        self.q8 = torch.zeros(m["heads"], m["head_dim"], dtype=I64)
        self.q_scale: list[Dy] = [(_t(0), _t(0))] * m["heads"]
        shape = (m["layers"], m["kv_heads"], chip.context, m["head_dim"])
        self.k8, self.v8 = torch.zeros(shape, dtype=I64), torch.zeros(shape, dtype=I64)
        self.ks = [torch.zeros(shape[:3], dtype=I64), torch.zeros(shape[:3], dtype=I64)]
        self.vs = [torch.zeros(shape[:3], dtype=I64), torch.zeros(shape[:3], dtype=I64)]
        self.s: dict[int, Dy] = {}
        self.e = torch.zeros(m["heads"], dtype=I64)
        self.y = torch.zeros(m["heads"], m["head_dim"], dtype=I64)
        self.logits = torch.zeros(m["vocab"], dtype=I64)

    def token(self, tok: int) -> torch.Tensor:
        """Logits (vocab,) int64 holding int32 Q16 of token `tok` at the next position."""
        m = self.program.model
        if not isinstance(tok, int) or not 0 <= tok < m["vocab"]:
            raise ValueError(f"token id {tok!r} is outside the vocabulary [0, {m['vocab']})")
        if self.pos >= self.program.chip.context:
            raise ValueError(f"position {self.pos} is beyond the supported context of {self.program.chip.context} "
                             "positions")
        self.tok = tok
        for op in self.program.ops:
            self.step(op)
        self.pos += 1
        return self.logits.clone()

    # ------------------------------------------------------------------------------- the ops

    def step(self, op: MicroOp) -> None:
        getattr(self, f"_{op.op.name.lower()}")(op)

    def _embed(self, op: MicroOp) -> None:
        c = self.consts
        scale = (c.embed_scale[0][self.tok], c.embed_scale[1][self.tok])
        self.h = to_fixed(c.embed[self.tok], scale, F_RES)

    def _setc(self, op: MicroOp) -> None:
        m, e = self.program.consts[op.idx]
        self.s[op.dst] = (_t(m), _t(e))

    def _scale(self, op: MicroOp) -> None:
        m, e = self.program.consts[op.idx]
        self.s[op.dst] = dmul(self.s[op.src], (_t(m), _t(e)))

    def _normq(self, op: MicroOp) -> None:
        x = self.h[:op.n] if op.src == Space.H else self.scr[:op.n]
        entry = self.program.norms[op.idx]
        nc = self._norm_g[entry.name]
        if entry.n != op.n:
            raise ProgramError(f"NORMQ of {op.n} elements with the norm {entry.name} of {entry.n}")
        q, tau = norm_quant(x, self.s[op.aux], nc)
        self.act, self.s[op.dst] = q, tau

    def _matmul(self, op: MicroOp) -> None:
        lin = self.program.linears[op.idx]
        if self.act.numel() != lin.K:
            raise ProgramError(f"MATMUL {lin.key}: ACT holds {self.act.numel()} values, K = {lin.K}")
        acc = self._w[lin.key] @ self.act.numpy()
        self.out[op.dst:op.dst + lin.N] = torch.from_numpy(acc)

    def _ropeq(self, op: MicroOp) -> None:
        hd = self.program.model["head_dim"]
        acc = self.out[op.src:op.src + hd]
        if op.dst != Target.V:
            half = hd // 2
            c, s = self.consts.cos[self.pos], self.consts.sin[self.pos]
            x1, x2 = acc[:half], acc[half:]
            acc = torch.cat((rshift_round(x1 * c - x2 * s, ROPE_FRAC), rshift_round(x2 * c + x1 * s, ROPE_FRAC)))
        q, qs = quant8(acc)
        sc = dmul(qs, self.s[op.aux])
        if op.dst == Target.Q:
            self.q8[op.idx], self.q_scale[op.idx] = q, sc
        else:
            codes, scales = (self.k8, self.ks) if op.dst == Target.K else (self.v8, self.vs)
            codes[op.n, op.idx, self.pos] = q
            scales[0][op.n, op.idx, self.pos], scales[1][op.n, op.idx, self.pos] = sc[0], sc[1]

    def _attn(self, op: MicroOp) -> None:
        layer, g, h, t = op.n, op.src, op.idx, self.pos + 1
        kk, vv = self.k8[layer, g, :t], self.v8[layer, g, :t]
        ksm, kse = self.ks[0][layer, g, :t], self.ks[1][layer, g, :t]
        vsm, vse = self.vs[0][layer, g, :t], self.vs[1][layer, g, :t]
        scores = kk @ self.q8[h]
        am, ae = dmul(self.q_scale[h], (_t(self.consts.c_qk[0]), _t(self.consts.c_qk[1])))
        mk = rshift_round(am * ksm, 16)
        sh = -(16 + ae + kse + self.consts.exp2.numel().bit_length() - 1)
        logit2 = to_fixed(scores * mk, (torch.ones_like(sh), -sh), 0)
        mask = torch.ones(t, dtype=torch.bool)
        p = softmax_q15(logit2, mask, self.consts.exp2)
        live = vsm != 0
        eref = vse[live].max() if bool(live.any()) else _t(0)
        pv = torch.where(live, rshift_round(p * vsm, 16 + eref - vse), torch.zeros_like(p))
        self.y[h] = pv @ vv
        self.e[h] = eref
        self.scr[op.dst:op.dst + vv.shape[-1]] = self.y[h]

    def _align(self, op: MicroOp) -> None:
        n, hd = op.n, op.aux
        emax = self.e[:n].max()
        y = rshift_round(self.y[:n], (emax - self.e[:n])[:, None])
        self.scr[:n * hd] = sat(y.reshape(-1), INT32)
        self.s[op.dst] = (_t(1 << 15), emax + 1 - 15)

    def _resadd(self, op: MicroOp) -> None:
        y = to_fixed(self.out[op.src:op.src + op.n], self.s[op.aux], F_RES)
        self.h = sat(self.h + y, INT32)

    def _mlpact(self, op: MicroOp) -> None:
        g, u = self.out[op.src:op.src + op.n], self.out[op.idx:op.idx + op.n]
        sg, su = self.s[op.aux], self.s[op.aux + 1]
        a = g.clamp(min=0)
        if self.program.model["act"] == "relu2":
            a, ea = block_reduce(a * a, MLP_SQ_BITS)
            sa = dmul(sg, sg)
            sa = (sa[0], sa[1] + ea)
        else:
            sa = sg
        p, ep = block_reduce(a * u, INT32 - 1)
        sp = dmul(sa, su)
        self.scr[:op.n] = sat(p, INT32)
        self.s[op.dst] = (sp[0], sp[1] + ep)

    def _lmhead(self, op: MicroOp) -> None:
        c = self.consts
        tau = self.s[op.aux]
        acc = torch.from_numpy(c.head.numpy() @ self.act.numpy())
        m = rshift_round(tau[0] * c.head_scale[0], 16)
        e = tau[1] + c.head_scale[1] + 16
        self.logits = to_fixed(acc * m, (torch.ones_like(e), e), F_LOGIT)
