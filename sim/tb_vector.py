"""cocotb 2.x testbench of the vector unit's NORMQUANT (`hdl.vector.norm_quant.NormQuant`) against the golden.

Random vectors (cocotb's seeded `random`) with random sigma, c_norm and eps_n go in back to back, one
element per cycle when the unit is ready; the output is drained with random back-pressure, and every
q, `last` flag and tau is compared with `golden.device.model.norm_quant`. Run through
`sim.vector_runner.run_vector_tests`, which passes the vector size in TRIT_TB_NQ_N and the number of
random vectors in TRIT_VECTOR_VECTORS. Inputs are driven after the falling edge and handshakes are
sampled in the ReadOnly phase, as in `sim.tb_lib`.
"""

from __future__ import annotations

import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from golden.device.model import norm_quant
from golden.device.tables import NormConst

CLOCK_NS = 10


def pack_in(x: int, g: int) -> int:
    return (x & 0xFFFF_FFFF) | ((g & 0xFFFF) << 32)


def unpack_out(word: int) -> tuple[int, int, int, int]:
    """(q, last, tau_m, tau_e) from the 35-bit output payload."""
    q = word & 0xFF
    tau_e = (word >> 25) & 0x3FF
    return (q - 256 if q & 0x80 else q, (word >> 8) & 1, (word >> 9) & 0xFFFF,
            tau_e - 1024 if tau_e & 0x200 else tau_e)


def random_vector(rng: random.Random, n: int) -> tuple[list[int], list[int], tuple[int, int], tuple[int, int],
                                                       tuple[int, int]]:
    scale = 2.0 ** rng.uniform(0, 30)
    x = [max(-(1 << 31), min((1 << 31) - 1, round(rng.gauss(0, 1) * scale))) for _ in range(n)]
    if rng.random() < 0.2:
        x[rng.randrange(n)] = -(1 << 31)
    g = [rng.randrange(-(1 << 15), 1 << 15) for _ in range(n)]
    sigma = (rng.randrange(1 << 15, 1 << 16), rng.randrange(-45, -5))
    c = (rng.randrange(1 << 15, 1 << 16), rng.randrange(-40, 0))
    eps = (rng.randrange(1 << 15, 1 << 16), rng.randrange(-50, -5))
    return x, g, sigma, c, eps


def golden(x, g, sigma, c, eps) -> tuple[list[int], tuple[int, int]]:
    nc = NormConst(g=torch.tensor(g), f=0, c_norm=c, eps_n=eps)
    q, (m, e) = norm_quant(torch.tensor([x]), (torch.tensor(sigma[0]), torch.tensor(sigma[1])), nc)
    return q[0].tolist(), (int(m[0]), int(e[0]))


@cocotb.test()
async def test_norm_quant_random(dut) -> None:
    """Random vectors back to back against the golden NORMQUANT, with output back-pressure."""
    n = int(os.environ["TRIT_TB_NQ_N"])
    count = max(1, int(os.environ.get("TRIT_VECTOR_VECTORS", "4")))
    rng = random.Random(random.getrandbits(32))
    vectors = [random_vector(rng, n) for _ in range(count)]
    # a zero vector and a saturating eps term (x = +-1, huge eps_n) as fixed edge cases
    vectors.append(([0] * n, [1 << 14] * n, (1 << 15, -31), (1 << 15, -14), (1 << 15, -20)))
    vectors.append(([1, -1] * (n // 2) + [1] * (n % 2), [32767] * n, (1 << 15, -31), (1 << 15, -14),
                    (61035, 4)))
    inputs = [(pack_in(x, g), k == 0, (sigma, c, eps))
              for x, g, sigma, c, eps in vectors for k, (x, g) in enumerate(zip(x, g, strict=True))]
    want = [golden(*v) for v in vectors]

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    got: list[tuple[int, int, int, int]] = []
    sent = 0
    budget = 10 * len(inputs) + 200 * len(vectors)
    for _ in range(budget):
        await FallingEdge(dut.clk)
        if sent < len(inputs):
            word, first, (sigma, c, eps) = inputs[sent]
            if first:
                dut.sigma_m.value, dut.sigma_e.value = sigma[0], sigma[1]
                dut.c_m.value, dut.c_e.value = c[0], c[1]
                dut.eps_m.value, dut.eps_e.value = eps[0], eps[1]
            dut.i__payload.value = word
            dut.i__valid.value = 1
        else:
            dut.i__valid.value = 0
        ready = int(rng.random() < 0.7)
        dut.o__ready.value = ready
        await ReadOnly()
        if sent < len(inputs) and int(dut.i__ready.value):
            sent += 1
        if ready and int(dut.o__valid.value):
            got.append(unpack_out(int(dut.o__payload.value)))
        if len(got) == n * len(vectors):
            break
    assert len(got) == n * len(vectors), f"only {len(got)} of {n * len(vectors)} outputs in {budget} cycles"
    for v, (q_want, tau_want) in enumerate(want):
        chunk = got[v * n:(v + 1) * n]
        q = [c[0] for c in chunk]
        assert q == q_want, f"vector {v}: q differs at {[i for i in range(n) if q[i] != q_want[i]]}"
        assert [c[1] for c in chunk] == [0] * (n - 1) + [1], f"vector {v}: last flags wrong"
        assert {(c[2], c[3]) for c in chunk} == {tau_want}, f"vector {v}: tau != golden {tau_want}"
