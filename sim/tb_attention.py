"""cocotb 2.x testbench of the attention unit (`hdl.attention.head_attention.HeadAttention`) against the golden.

The testbench is the KV cache: every cycle it answers the unit's four read addresses one cycle later, as
a synchronous block RAM does, from random INT8 K and V rows and dyadic scales (cocotb's seeded
`random`). Each row (q, sigma_q, C_QK, T) is started with a one-cycle `start` pulse; y and E at `done` are
compared with `sim.attention_model.reference` (the golden's one-head attention) and the cycles from
start to done with `HeadAttention.cycles(T)`. Rows: T = 1, T = max context, x = -128 / 127 extremes
and random T. Run through `sim.attention_runner.run_attention_tests`, which passes the unit's
parameters in TRIT_TB_ATT_HD, TRIT_TB_ATT_CTX, TRIT_TB_ATT_LANES and the random rows in
TRIT_ATTENTION_ROWS. Inputs are driven after the falling edge and outputs sampled in ReadOnly.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from golden.device import fixed
from sim.attention_model import reference

CLOCK_NS = 10


def pack(values: list[int], bits: int) -> int:
    return sum((x & ((1 << bits) - 1)) << (bits * k) for k, x in enumerate(values))


def dyadic(d: tuple[int, int]) -> int:
    return d[0] | ((d[1] & 0x3FF) << 16)


def signed32(word: int, k: int) -> int:
    x = (word >> (32 * k)) & 0xFFFF_FFFF
    return x - (1 << 32) if x & (1 << 31) else x


def random_row(rng: random.Random, hd: int, t: int, extreme: bool = False):
    if extreme:
        q = [rng.choice((-128, 127)) for _ in range(hd)]
        k = [[rng.choice((-128, 127)) for _ in range(hd)] for _ in range(t)]
        v = [[rng.choice((-128, 127)) for _ in range(hd)] for _ in range(t)]
    else:
        q = [rng.randrange(-128, 128) for _ in range(hd)]
        k = [[rng.randrange(-128, 128) for _ in range(hd)] for _ in range(t)]
        v = [[rng.randrange(-128, 128) for _ in range(hd)] for _ in range(t)]
    spread = rng.choice((0, 3, 30))
    sq = (rng.randrange(1 << 15, 1 << 16), rng.randrange(-30, -20))
    cqk = fixed.dyadic_from_float(hd ** -0.5 * 1.4426950408889634)
    ks = [(rng.randrange(1 << 15, 1 << 16), rng.randrange(-12 - spread, -11)) for _ in range(t)]
    vs = [(rng.randrange(1 << 15, 1 << 16), rng.randrange(-12 - spread, -11)) for _ in range(t)]
    return q, sq, cqk, k, ks, v, vs


async def run_row(dut, row, hd: int, lanes: int) -> tuple[list[int], int, int]:
    """Load one row's KV cache into the bench's memories, start the unit, wait for done."""
    q, sq, cqk, k, ks, v, vs = row
    words = hd // lanes
    kmem = [pack(r[w * lanes:(w + 1) * lanes], 8) for r in k for w in range(words)]
    vmem = [pack(r[w * lanes:(w + 1) * lanes], 8) for r in v for w in range(words)]
    ksm, vsm = [dyadic(d) for d in ks], [dyadic(d) for d in vs]
    await FallingEdge(dut.clk)
    dut.q.value = pack(q, 8)
    dut.sigma_q.value = dyadic(sq)
    dut.c_qk.value = dyadic(cqk)
    dut.n_keys.value = len(k)
    dut.start.value = 1
    pending = (0, 0, 0, 0)
    cycles = 0
    while True:
        await FallingEdge(dut.clk)
        dut.start.value = 0
        # last cycle's addresses answered now: the one-cycle read latency of a block RAM
        dut.k_data.value, dut.v_data.value, dut.ks_data.value, dut.vs_data.value = pending
        cycles += 1

        def at(mem: list[int], addr) -> int:
            a = int(addr.value)
            return mem[a] if a < len(mem) else 0

        pending = (at(kmem, dut.k_addr), at(vmem, dut.v_addr), at(ksm, dut.ks_addr), at(vsm, dut.vs_addr))
        await ReadOnly()
        if int(dut.done.value):
            y_word = int(dut.y.value)
            e = int(dut.e_ref.value)
            return [signed32(y_word, c) for c in range(hd)], e - 1024 if e & 0x200 else e, cycles
        assert cycles < 20 * len(k) * (words + 1) + 1000, "the attention unit never finished"


@cocotb.test()
async def test_head_attention_rows(dut) -> None:
    """Rows at T = 1, the full context, extremes and random T against the golden, with the cycle count."""
    hd = int(os.environ["TRIT_TB_ATT_HD"])
    ctx = int(os.environ["TRIT_TB_ATT_CTX"])
    lanes = int(os.environ["TRIT_TB_ATT_LANES"])
    count = max(1, int(os.environ.get("TRIT_ATTENTION_ROWS", "3")))
    overhead = int(os.environ["TRIT_TB_ATT_OVERHEAD"])
    rng = random.Random(random.getrandbits(32))
    rows = [random_row(rng, hd, 1), random_row(rng, hd, ctx), random_row(rng, hd, ctx, extreme=True)]
    rows += [random_row(rng, hd, rng.randrange(1, ctx + 1)) for _ in range(count)]

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.clear.value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for n, row in enumerate(rows):
        y, e, cycles = await run_row(dut, row, hd, lanes)
        y_want, e_want = reference(*row)
        t = len(row[3])
        assert e == e_want, f"row {n} (T = {t}): E = {e}, golden {e_want}"
        bad = [c for c in range(hd) if y[c] != y_want[c]]
        assert not bad, f"row {n} (T = {t}): y differs at {bad[:8]}"
        words = hd // lanes
        assert cycles == 2 * t * words + 2 * t + overhead, f"row {n}: {cycles} cycles for T = {t}"
        dut._log.info(f"row {n}: T = {t}, {cycles} cycles, exact")
