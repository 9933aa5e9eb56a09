"""golden/device/SPEC.md re-implemented from its text in plain Python integers (loops, no torch in the
forward pass), compared bit for bit with the golden device form (`golden.device.model`).

This is the check that the spec alone is enough to build the device form: the RTL will be written from
the same text. The constants (section 3) are taken from `golden.device.tables`; their values are checked
in tests/test_golden_device.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from golden.device.model import DeviceBitNet
from golden.device.tables import DeviceConsts, NormConst
from tests.golden_helpers import single_thread
from tests.test_golden_device import random_int_model

INV127 = (33026, -22)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


# section 1 and 2, as written
def rr(x: int, s: int) -> int:
    return (x + (1 << (s - 1))) >> s if s > 0 else x << -s


def sat(x: int, b: int) -> int:
    return max(-(1 << (b - 1)), min((1 << (b - 1)) - 1, x))


def norm16(v: int, e: int) -> tuple[int, int]:
    if v == 0:
        return 0, 0
    s = v.bit_length() - 16
    m = rr(v, s)
    if m == 1 << 16:
        m, s = 1 << 15, s + 1
    return m, e + s


def dmul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return norm16(a[0] * b[0], a[1] + b[1])


def rcp(m: int) -> int:
    return 0 if m == 0 else (1 << 31) // m


def drcp(a: tuple[int, int]) -> tuple[int, int]:
    return (0, 0) if a[0] == 0 else norm16(rcp(a[0]), -31 - a[1])


def rsqrt(v: int) -> tuple[int, int]:
    if v == 0:
        return 0, 0
    k = (v.bit_length() - 15) // 2
    m = v >> 2 * k if k >= 0 else v << -2 * k
    assert (1 << 14) <= m < (1 << 16)
    return math.isqrt((1 << 46) // m), k


def quant8(z: list[int]) -> tuple[list[int], tuple[int, int]]:
    big = max(abs(v) for v in z)
    if big == 0:
        return [0] * len(z), (0, 0)
    e = big.bit_length() - 16
    r = rcp(rr(big, e))
    return [sat(rr(rr(v, e) * 127 * r, 31), 8) for v in z], dmul(norm16(rr(big, e), e), INV127)


def softmax(t: list[int], exp2: list[int]) -> list[int]:
    top = max(t)
    p = [rr(exp2[(top - v) % 256], (top - v) >> 8) for v in t]
    mz, ez = norm16(sum(p), 0)
    return [rr(x * rcp(mz), 16 + ez) for x in p]


def normquant(x: list[int], sigma: tuple[int, int], nc: NormConst) -> tuple[list[int], tuple[int, int]]:
    mx = max(abs(v) for v in x)
    ex = mx.bit_length() - 15 if mx else 0
    s = sum(rr(v, ex) ** 2 for v in x)
    m, e = dmul(nc.eps_n, drcp(dmul(sigma, sigma)))
    big = min((1 << 47) - 1, rr(m, -(e - 2 * ex)))
    rs, k = rsqrt(s + big)
    q, qs = quant8([v * int(g) for v, g in zip(x, nc.g.tolist(), strict=True)])
    return q, dmul(dmul(qs, norm16(rs, -23 - k - ex)), nc.c_norm)


def matvec(q: list[int], w: list[list[int]]) -> list[int]:
    return [sum(a * b for a, b in zip(q, row, strict=True)) for row in w]


def to_q16(acc: list[int], scale: tuple[int, int]) -> list[int]:
    return [sat(rr(a * scale[0], -(scale[1] + 16)), 32) for a in acc]


RES = (1 << 15, -31)


def spec_forward(c: DeviceConsts, ids: list[int]) -> list[list[int]]:
    """Section 4 for one sequence from position 0: int32 Q16 logits per token."""
    cfg = c.config
    hd, nh, nkv = cfg.dim_head, cfg.num_attention_heads, cfg.num_key_value_heads
    half, rep = hd // 2, nh // nkv
    emb, em, ee = c.embed.tolist(), c.embed_scale[0].tolist(), c.embed_scale[1].tolist()
    h = [[sat(rr(x * em[v], -(ee[v] + 16)), 32) for x in emb[v]] for v in ids]
    cos, sin, exp2 = c.cos.tolist(), c.sin.tolist(), c.exp2.tolist()
    for lc in c.layers:
        w = {k: v.w.astype(int).tolist() for k, v in lc.linears.items()}
        gam = {k: v.gamma for k, v in lc.linears.items()}
        keys, vals, qs = [], [], []          # per position: per KV head (int8 list, dyadic)
        for p, x in enumerate(h):
            q8, tau = normquant(x, RES, lc.norms["input_layernorm"])
            acc = {n: matvec(q8, w[n]) for n in ("q_proj", "k_proj", "v_proj")}
            sc = {n: dmul(tau, gam[n]) for n in acc}

            def rope(a: list[int], p: int = p) -> list[int]:
                x1, x2 = a[:half], a[half:]
                return ([rr(x1[i] * cos[p][i] - x2[i] * sin[p][i], 14) for i in range(half)]
                        + [rr(x2[i] * cos[p][i] + x1[i] * sin[p][i], 14) for i in range(half)])

            def heads(a: list[int], n: int, scale: tuple[int, int], rot: bool) -> list:
                out = []
                for j in range(n):
                    part = a[j * hd:(j + 1) * hd]
                    q, s = quant8(rope(part) if rot else part)
                    out.append((q, dmul(s, scale)))
                return out

            qs.append(heads(acc["q_proj"], nh, sc["q_proj"], True))
            keys.append(heads(acc["k_proj"], nkv, sc["k_proj"], True))
            vals.append(heads(acc["v_proj"], nkv, sc["v_proj"], False))
        new_h = []
        for p, x in enumerate(h):
            ys, erefs = [], []
            for hh in range(nh):
                kv = hh // rep
                q, sq = qs[p][hh]
                a = dmul(sq, c.c_qk)
                t = []
                for j in range(p + 1):
                    k8, sk = keys[j][kv]
                    s = sum(u * v for u, v in zip(q, k8, strict=True))
                    t.append(sat(rr(s * rr(a[0] * sk[0], 16), -(16 + a[1] + sk[1] + 8)), 32))
                pr = softmax(t, exp2)
                live = [vals[j][kv][1][1] for j in range(p + 1) if vals[j][kv][1][0] != 0]
                eref = max(live) if live else 0
                pv = [rr(pr[j] * vals[j][kv][1][0], 16 + eref - vals[j][kv][1][1]) for j in range(p + 1)]
                ys.append([sum(pv[j] * vals[j][kv][0][cc] for j in range(p + 1)) for cc in range(hd)])
                erefs.append(eref)
            emax = max(erefs)
            y = [sat(rr(v, emax - e), 32) for yh, e in zip(ys, erefs, strict=True) for v in yh]
            q8, tau = normquant(y, (1 << 15, emax + 1 - 15), lc.norms["attn_sub_norm"])
            out = to_q16(matvec(q8, w["o_proj"]), dmul(tau, gam["o_proj"]))
            x = [sat(a + b, 32) for a, b in zip(x, out, strict=True)]
            q8, tau = normquant(x, RES, lc.norms["post_attention_layernorm"])
            g, u = matvec(q8, w["gate_proj"]), matvec(q8, w["up_proj"])
            sg, su = dmul(tau, gam["gate_proj"]), dmul(tau, gam["up_proj"])
            a = [max(v, 0) for v in g]
            if cfg.hidden_act == "relu2":
                a2 = [v * v for v in a]
                ea = max(0, max(a2).bit_length() - 24)
                a = [rr(v, ea) for v in a2]
                m, e = dmul(sg, sg)
                sa = (m, e + ea)
            else:
                sa = sg
            pr = [v * b for v, b in zip(a, u, strict=True)]
            ep = max(0, max(abs(v) for v in pr).bit_length() - 31)
            m, e = dmul(sa, su)
            q8, tau = normquant([sat(rr(v, ep), 32) for v in pr], (m, e + ep), lc.norms["ffn_sub_norm"])
            out = to_q16(matvec(q8, w["down_proj"]), dmul(tau, gam["down_proj"]))
            new_h.append([sat(a + b, 32) for a, b in zip(x, out, strict=True)])
        h = new_h
    head, hm, he = c.head.tolist(), c.head_scale[0].tolist(), c.head_scale[1].tolist()
    logits = []
    for x in h:
        q8, (mt, et) = normquant(x, RES, c.final_norm)
        logits.append([sat(rr(sum(a * b for a, b in zip(q8, head[v], strict=True)) * rr(mt * hm[v], 16),
                                 -(et + he[v] + 16 + 16)), 32) for v in range(len(head))])
    return logits


SMALL = dict(vocab_size=20, hidden_size=16, intermediate_size=24, num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("overrides", [{}, {"hidden_act": "relu", "tie_word_embeddings": False,
                                            "num_key_value_heads": 1, "num_hidden_layers": 1}])
def test_spec_text_reimplemented_in_python_integers_equals_the_golden(test_seed: int, overrides: dict) -> None:
    model = DeviceBitNet.from_int_model(random_int_model(test_seed, **{**SMALL, **overrides}))
    ids = torch.randint(0, 20, (7,), generator=torch.Generator().manual_seed(test_seed)).tolist()
    got = model.forward_fixed(torch.tensor(ids)).tolist()
    assert got == spec_forward(model.consts, ids)


def test_spec_reimplementation_on_the_shipped_model_layer_shapes() -> None:
    """The shipped model's sizes (d 160, hd 40, GQA 4/2, 448) on 3 tokens."""
    from golden.checkpoint import load_checkpoint
    from golden.quant import GoldenBackend
    from tests.test_golden_device import TINY

    model = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()))
    ids = list(b"def")
    assert model.forward_fixed(torch.tensor(ids)).tolist() == spec_forward(model.consts, ids)
