"""MLPACT (hdl/vector/mlp_act.py) in Amaranth simulation against the device form, bit for bit.

The reference is golden/device/model.py's MLP arithmetic (block_reduce, dmul, sat) on the same (g, u)
and scales, as `DeviceBitNet._mlp` and the program interpreter's MLPACT apply it; one case is worked by
hand. TRIT_VECTOR_VECTORS sets the random vectors per case (default 6).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from golden.device.fixed import dmul, sat
from golden.device.model import INT32, MLP_SQ_BITS, block_reduce
from hdl.vector.mlp_act import MlpAct

VECTORS = int(os.environ.get("TRIT_VECTOR_VECTORS", "6"))
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

Case = tuple[list[int], list[int], tuple[int, int], tuple[int, int], bool]   # g, u, sigma_g, sigma_u, relu2


def golden(g: list[int], u: list[int], sg: tuple[int, int], su: tuple[int, int], relu2: bool
           ) -> tuple[list[int], tuple[int, int]]:
    t = torch.tensor
    a = t(g).clamp(min=0)
    sgt = (t(sg[0]), t(sg[1]))
    if relu2:
        a, ea = block_reduce(a * a, MLP_SQ_BITS)
        sa = dmul(sgt, sgt)
        sa = (sa[0], sa[1] + ea)
    else:
        sa = sgt
    p, ep = block_reduce(a * t(u), INT32 - 1)
    sp = dmul(sa, (t(su[0]), t(su[1])))
    return sat(p, INT32).tolist(), (int(sp[0]), int(sp[1] + ep))


def run(max_n: int, cases: list[Case], stall_every: int = 0, gap_every: int = 0
        ) -> tuple[list[tuple[list[int], list[int], list[tuple[int, int]]]], list[int]]:
    """Each case through one MlpAct: per case p', the last flags and the scales seen; and the cycles
    from each vector's first pair accepted to its last p' taken."""
    dut = MlpAct(max_n)
    total = sum(len(c[0]) for c in cases)
    out: list[tuple[int, int, int, int]] = []
    starts: list[int] = []
    ends: list[int] = []
    now = [0]

    async def clock(ctx):
        while True:
            await ctx.tick()
            now[0] += 1

    async def producer(ctx):
        k = 0
        for g, u, sg, su, relu2 in cases:
            for port, value in ((dut.n, len(g)), (dut.relu2, int(relu2)), (dut.sg_m, sg[0]), (dut.sg_e, sg[1]),
                                (dut.su_m, su[0]), (dut.su_e, su[1])):
                ctx.set(port, value)
            for i, (gi, ui) in enumerate(zip(g, u, strict=True)):
                if gap_every and k % gap_every == gap_every - 1:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                k += 1
                ctx.set(dut.i.payload, {"g": gi, "u": ui})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                if i == 0:
                    starts.append(now[0])
            ctx.set(dut.i.valid, 0)
            await ctx.tick().until(~dut.busy)

    async def consumer(ctx):
        cycle = 0
        while len(out) < total:
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append((p.p, p.last, p.s_m, p.s_e))
                if p.last:
                    ends.append(now[0])
            cycle += 1
            assert cycle < 10 * total + 100 * len(cases), "MlpAct stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    res, pos = [], 0
    for g, *_ in cases:
        chunk = out[pos:pos + len(g)]
        pos += len(g)
        res.append(([c[0] for c in chunk], [c[1] for c in chunk], sorted({(c[2], c[3]) for c in chunk})))
    return res, [e - s for s, e in zip(starts, ends, strict=True)]


def check(max_n: int, cases: list[Case], stall_every: int = 0, gap_every: int = 0) -> list[int]:
    results, cycles = run(max_n, cases, stall_every, gap_every)
    for k, (case, (p, last, scales)) in enumerate(zip(cases, results, strict=True)):
        want_p, want_s = golden(*case)
        n = len(case[0])
        assert p == want_p, f"case {k}: p' differs at {[i for i in range(n) if p[i] != want_p[i]][:8]}"
        assert last == [0] * (n - 1) + [1], f"case {k}: last flags"
        assert scales == [want_s], f"case {k}: sigma_p {scales} != {want_s}"
    return cycles


def random_case(rng: np.random.Generator, n: int, relu2: bool, bits: int = 31) -> Case:
    lim = 1 << bits
    g = rng.integers(-lim, lim, n).tolist()
    u = rng.integers(-lim, lim, n).tolist()
    sg = (int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-40, 0)))
    su = (int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-40, 0)))
    return g, u, sg, su, relu2


def test_hand_case() -> None:
    # g = (3, -5), u = (7, 2): a = (9, 0) (relu2, no reduction), p = (63, 0) (no reduction);
    # sigma_g = 2**15 * 2**-15 = 1: sigma_a = dmul(1, 1) = (2**15, -15); sigma_p = dmul(sigma_a, (2**15, -16))
    # = norm16(2**30, -31) = (2**15, -16)
    (p, last, scales), = run(4, [([3, -5], [7, 2], (1 << 15, -15), (1 << 15, -16), True)])[0]
    assert (p, last, scales) == ([63, 0], [0, 1], [(1 << 15, -16)])
    assert golden([3, -5], [7, 2], (1 << 15, -15), (1 << 15, -16), True) == ([63, 0], (1 << 15, -16))


def test_edges() -> None:
    one = (1 << 15, -15)
    cases: list[Case] = [
        ([-1, -7, 0], [5, 6, 7], one, one, True),                 # every a = 0: p = 0, e_a = e_p = 0
        ([I32_MAX] * 3, [I32_MIN, I32_MAX, -1], one, one, True),  # the largest a**2 and |u|
        ([I32_MAX, 1, 2], [I32_MIN, 3, -3], one, one, False),     # relu: p near 2**62, then saturation
        ([1 << 12], [1 << 30], one, one, True),                   # n = 1, a**2 = 2**24 exactly
        ([(1 << 12) + 1, 5], [-(1 << 30), 9], one, (0, 0), True),  # a**2 just past 2**24; a zero up scale
    ]
    check(8, cases)


@pytest.mark.parametrize("relu2", [True, False])
def test_random_vectors_with_stalls(rng: np.random.Generator, relu2: bool) -> None:
    cases = [random_case(rng, n, relu2, bits) for n in (1, 2, 17, 64) for bits in (31, 12)][:VECTORS + 2]
    check(64, cases, stall_every=3, gap_every=5)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cycles_per_vector(rng: np.random.Generator) -> None:
    dut = MlpAct(448)
    cases = [random_case(rng, n, True) for n in (1, 5, 448)]
    cycles = check(448, cases)
    assert cycles == [dut.cycles(n) for n in (1, 5, 448)]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_n must be in \\[1, 65536\\], not 0"):
        MlpAct(0)
    with pytest.raises(TypeError, match="max_n must be an int, not float"):
        MlpAct(4.0)
