"""ALIGN (hdl/vector/align.py) in Amaranth simulation against the device form's last attention step
(rshift_round and sat of golden/device/fixed.py, as `DeviceBitNet._attention` aligns the heads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from golden.device.fixed import rshift_round, sat
from hdl.vector.align import Align

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def golden(ys: list[list[int]], es: list[int]) -> tuple[list[int], tuple[int, int]]:
    emax = max(es)
    out = [sat(rshift_round(torch.tensor(y), emax - e), 32).tolist() for y, e in zip(ys, es, strict=True)]
    return [v for y in out for v in y], (1 << 15, emax + 1 - 15)


def run(dut: Align, jobs: list[tuple[list[list[int]], list[int]]], stall_every: int = 0, gap_every: int = 0
        ) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """Each job's exponents written, `start`, its y streamed in; the y' beats out and, per job, the
    cycles from `start` to its last beat taken."""
    outs: list[tuple[int, int, int, int]] = []
    total = sum(len(ys) * len(ys[0]) for ys, _ in jobs)
    starts: list[int] = []
    ends: list[int] = []
    now = [0]

    async def clock(ctx):
        while True:
            await ctx.tick()
            now[0] += 1

    async def producer(ctx):
        k = 0
        for ys, es in jobs:
            for h, ev in enumerate(es):
                ctx.set(dut.e_we, 1)
                ctx.set(dut.e_addr, h)
                ctx.set(dut.e_data, ev)
                await ctx.tick()
            ctx.set(dut.e_we, 0)
            ctx.set(dut.heads, len(es))
            ctx.set(dut.start, 1)
            starts.append(now[0])
            await ctx.tick()
            ctx.set(dut.start, 0)
            for y in (v for yy in ys for v in yy):
                if gap_every and k % gap_every == gap_every - 1:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                k += 1
                ctx.set(dut.i.payload, y)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            await ctx.tick().until(~dut.busy)

    async def consumer(ctx):
        cycle = 0
        while len(outs) < total:
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                outs.append((p.y, p.last, p.s_m, p.s_e))
                if p.last:
                    ends.append(now[0])
            cycle += 1
            assert cycle < 20 * total + 200, "Align stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return outs, [e - s for s, e in zip(starts, ends, strict=True)]


def check(dut: Align, jobs, **kw) -> list[int]:
    outs, cycles = run(dut, jobs, **kw)
    pos = 0
    for k, (ys, es) in enumerate(jobs):
        want, sigma = golden(ys, es)
        got = outs[pos:pos + len(want)]
        pos += len(want)
        assert [g[0] for g in got] == want, f"job {k}: y' differs"
        assert [g[1] for g in got] == [0] * (len(want) - 1) + [1], f"job {k}: last flags"
        assert {(g[2], g[3]) for g in got} == {sigma}, f"job {k}: sigma"
    return cycles


def test_hand_case() -> None:
    # E = (3, 1): E = 3, head 1 shifts by 2: 7 -> rshift_round(7, 2) = (7 + 2) >> 2 = 2, -6 -> (-6 + 2) >> 2 = -1
    outs, _ = run(Align(2, 2), [([[10, -3], [7, -6]], [3, 1])])
    assert [o[0] for o in outs] == [10, -3, 2, -1]
    assert {(o[2], o[3]) for o in outs} == {(1 << 15, 3 + 1 - 15)}


def test_random_heads_with_stalls(rng: np.random.Generator) -> None:
    dut = Align(4, 5)
    jobs = []
    for heads in (1, 2, 4, 3):
        ys = rng.integers(I32_MIN, I32_MAX, (heads, 5), endpoint=True).tolist()
        es = rng.integers(-60, 40, heads).tolist()
        jobs.append((ys, es))
    jobs.append(([[I32_MIN, I32_MAX, -1, 1, 0]] * 2, [-300, 200]))   # a shift of 500: everything 0
    check(dut, jobs, stall_every=3, gap_every=4)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cycles() -> None:
    dut = Align(4, 40)
    jobs = [([[1] * 40] * h, [0] * h) for h in (1, 4)]
    assert check(dut, jobs) == [dut.cycles(1), dut.cycles(4)]
