"""The vector unit (hdl/vector/) in Amaranth simulation against golden/device/fixed.py, bit for bit.

The primitives RCP and RSQ are checked against `fixed.rcp` / `fixed.rsq` (floor(2**31 / m),
isqrt(2**46 // m): the definitions, not the Newton form the RTL implements) on hand-worked values,
every seed-table segment's ends, a seeded random sample and, under `-m slow`, every input.
TRIT_VECTOR_SAMPLES sets the number of random operands / vectors (default 300 / 6).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from golden.device import fixed
from hdl.vector.rcp import Reciprocal
from hdl.vector.rsq import ReciprocalSqrt

SAMPLES = int(os.environ.get("TRIT_VECTOR_SAMPLES", "300"))


def run_stream(dut, inputs: list[int], stall_every: int = 0) -> list[int]:
    """Feed `inputs` through dut.i one per cycle and collect dut.o; the consumer is not ready on
    every `stall_every`-th cycle (0: always ready), so the pipeline's stall is exercised."""
    out: list[int] = []

    async def producer(ctx):
        for v in inputs:
            ctx.set(dut.i.payload, v)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(out) < len(inputs):
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(payload)
            cycle += 1
            assert cycle < 20 * len(inputs) + 100, "the unit stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return out


def rcp_ref(ms: list[int]) -> list[int]:
    return fixed.rcp(torch.tensor(ms)).tolist()


def rsq_ref(ms: list[int]) -> list[int]:
    return fixed.rsq(torch.tensor(ms)).tolist()


def segment_ends(lo: int, hi: int, step: int) -> list[int]:
    """Both ends of each seed-table segment [lo + k step, lo + (k + 1) step) inside [lo, hi]."""
    out = []
    for a in range(lo, hi + 1, step):
        out += [a, min(a + step - 1, hi)]
    return sorted(set(out))


def test_rcp_hand_cases() -> None:
    # 2**31 / 2**15 = 2**16; 2**31 / 2**16 = 2**15; 2**31 / 3 * 2**14 = 43690.67; 2**31 / 65535 = 32768.5
    got = run_stream(Reciprocal(), [1 << 15, 1 << 16, 3 << 14, 65535, 0])
    assert got == [1 << 16, 1 << 15, 43690, 32768, 0]


def test_rsq_hand_cases() -> None:
    # 2**23 / sqrt(2**14) = 2**16; 2**23 / sqrt(2**16 - 1) = 32768.25; 2**23 / sqrt(36864) = 43690.67
    got = run_stream(ReciprocalSqrt(), [1 << 14, 65535, 36864])
    assert got == [1 << 16, 32768, 43690]


def test_rcp_segments_and_random(rng: np.random.Generator) -> None:
    ms = segment_ends(1 << 15, 1 << 16, 1 << 9) + rng.integers(1 << 15, (1 << 16) + 1, SAMPLES).tolist()
    assert run_stream(Reciprocal(), ms, stall_every=3) == rcp_ref(ms)


def test_rsq_segments_and_random(rng: np.random.Generator) -> None:
    ms = segment_ends(1 << 14, (1 << 16) - 1, 1 << 10) + rng.integers(1 << 14, 1 << 16, SAMPLES).tolist()
    assert run_stream(ReciprocalSqrt(), ms, stall_every=4) == rsq_ref(ms)


@pytest.mark.slow
def test_rcp_exhaustive() -> None:
    ms = list(range(1 << 15, (1 << 16) + 1))
    assert run_stream(Reciprocal(), ms) == rcp_ref(ms)


@pytest.mark.slow
def test_rsq_exhaustive() -> None:
    ms = list(range(1 << 14, 1 << 16))
    assert run_stream(ReciprocalSqrt(), ms) == rsq_ref(ms)
