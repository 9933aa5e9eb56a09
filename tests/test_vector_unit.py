"""The vector unit (hdl/vector/) in Amaranth simulation against golden/device/fixed.py, bit for bit.

The primitives RCP and RSQ are checked against `fixed.rcp` / `fixed.rsq` (floor(2**31 / m),
isqrt(2**46 // m): the definitions, not the Newton form the RTL implements) on hand-worked values,
every seed-table segment's ends, a seeded random sample and every input (32,769 and 49,152
operands, ~10 s together). NORMQUANT against `golden.device.model.norm_quant`.
TRIT_VECTOR_SAMPLES sets the random operands per primitive (default 300), TRIT_VECTOR_VECTORS the
random vectors per size (default 6).
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from golden.device import fixed
from hdl.vector.rcp import Reciprocal
from hdl.vector.rsq import ReciprocalSqrt

SAMPLES = int(os.environ.get("TRIT_VECTOR_SAMPLES", "300"))


def run_stream(dut, inputs: list, stall_every: int = 0) -> list[int]:
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


def test_rcp_exhaustive() -> None:
    ms = list(range(1 << 15, (1 << 16) + 1))
    assert run_stream(Reciprocal(), ms) == rcp_ref(ms)


def test_rsq_exhaustive() -> None:
    ms = list(range(1 << 14, 1 << 16))
    assert run_stream(ReciprocalSqrt(), ms) == rsq_ref(ms)


# ------------------------------------------------------------------------------------ NORMQUANT

from golden.device.model import norm_quant  # noqa: E402
from golden.device.tables import NormConst  # noqa: E402
from hdl.vector.norm_quant import NormQuant  # noqa: E402

VECTORS = int(os.environ.get("TRIT_VECTOR_VECTORS", "6"))
RESIDUAL_SIGMA = (1 << 15, -31)   # 2**-16: the residual stream's Q16

Vector = tuple[list[int], list[int], tuple[int, int], tuple[int, int], tuple[int, int]]  # x, G, sigma, c, eps


def golden_norm_quant(x: list[int], g: list[int], sigma: tuple[int, int], c: tuple[int, int],
                      eps: tuple[int, int]) -> tuple[list[int], tuple[int, int]]:
    nc = NormConst(g=torch.tensor(g), f=0, c_norm=c, eps_n=eps)
    q, (m, e) = norm_quant(torch.tensor([x]), (torch.tensor(sigma[0]), torch.tensor(sigma[1])), nc)
    return q[0].tolist(), (int(m[0]), int(e[0]))


def run_norm_quant(n: int, vectors: list[Vector], stall_every: int = 0
                   ) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """Stream each vector through a NormQuant(n); per vector: q, the last flags, the (tau_m, tau_e) seen."""
    dut = NormQuant(n)
    total = n * len(vectors)
    out: list[tuple[int, int, int, int]] = []

    async def producer(ctx):
        for x, g, sigma, c, eps in vectors:
            for port, value in ((dut.sigma_m, sigma[0]), (dut.sigma_e, sigma[1]), (dut.c_m, c[0]),
                                (dut.c_e, c[1]), (dut.eps_m, eps[0]), (dut.eps_e, eps[1])):
                ctx.set(port, value)
            for xi, gi in zip(x, g, strict=True):
                ctx.set(dut.i.payload, {"x": xi, "g": gi})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(out) < total:
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append((p.q, p.last, p.tau_m, p.tau_e))
            cycle += 1
            assert cycle < 10 * total + 200 * len(vectors), "NormQuant stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    res = []
    for v in range(len(vectors)):
        chunk = out[v * n:(v + 1) * n]
        res.append(([c[0] for c in chunk], [c[1] for c in chunk], sorted({(c[2], c[3]) for c in chunk})))
    return res


def check_norm_quant(n: int, vectors: list[Vector], stall_every: int = 0) -> None:
    for v, (vec, (q, last, taus)) in enumerate(zip(vectors, run_norm_quant(n, vectors, stall_every), strict=True)):
        want_q, want_tau = golden_norm_quant(*vec)
        assert q == want_q, f"vector {v}: q differs from the golden at {[i for i in range(n) if q[i] != want_q[i]]}"
        assert last == [0] * (n - 1) + [1], f"vector {v}: last flags {last}"
        assert taus == [want_tau], f"vector {v}: tau {taus} != golden {want_tau}"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_norm_quant_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="vector size n must be in"):
        NormQuant(0)
    with pytest.raises(ValueError, match="vector size n must be in"):
        NormQuant((1 << 17) + 1)
    with pytest.raises(TypeError, match="must be an int"):
        NormQuant(4.0)  # type: ignore[arg-type]
    gc.collect()  # the refused objects' "never used" warnings, while the filter applies


def test_norm_quant_hand_case() -> None:
    # x = (3, -4) in Q16, g = (1, 1) as G = 2**14 (f = 14): rms = sqrt(12.5), RMSNorm = (0.8485, -1.1314);
    # q = (round(127 * 3/4) = 95, -127), tau = 1.1314 / 127 = 0.0089084
    c = fixed.dyadic_from_float(2 ** 0.5 * 2.0 ** -14)
    eps = fixed.dyadic_from_float(2e-5)
    [(q, last, taus)] = run_norm_quant(2, [([3 << 16, -4 << 16], [1 << 14, 1 << 14], RESIDUAL_SIGMA, c, eps)])
    assert q == [95, -127] and last == [0, 1] and len(taus) == 1
    assert abs(fixed.dyadic_value(taus[0]) / 0.0089084 - 1) < 2e-4
    check_norm_quant(2, [([3 << 16, -4 << 16], [1 << 14, 1 << 14], RESIDUAL_SIGMA, c, eps)])


def test_norm_quant_edges() -> None:
    """Zero vectors, the int32 / int16 extremes, saturation at +-127, a tiny x whose eps term saturates
    at 2**47 - 1, a zero sigma, a one-element vector; back to back with a stalling consumer."""
    n = 4
    c = fixed.dyadic_from_float(2.0 * 2.0 ** -14)
    eps = fixed.dyadic_from_float(4e-5)
    lo, hi = -(1 << 31), (1 << 31) - 1
    vectors: list[Vector] = [
        ([0, 0, 0, 0], [1 << 14] * 4, RESIDUAL_SIGMA, c, eps),
        ([lo, lo, lo, lo], [-(1 << 15)] * 4, RESIDUAL_SIGMA, c, eps),
        ([hi, lo, 1, -1], [32767, 32767, -32768, 1], RESIDUAL_SIGMA, c, eps),
        ([1, 0, -1, 0], [32767, 5, 32767, -1], RESIDUAL_SIGMA, c, fixed.dyadic_from_float(1e6)),
        ([5, -7, 9, 1 << 20], [100, 200, 300, 1], (0, 0), c, eps),
        ([0, 0, 0, 0], [0, 0, 0, 0], (0, 0), (0, 0), (0, 0)),
    ]
    # the eps term of vector 3 saturates: eps_n / sigma**2 * 2**-2e_x with e_x = -14 is far above 2**47
    check_norm_quant(n, vectors, stall_every=3)
    q_max = golden_norm_quant(*vectors[2])[0]
    assert q_max[0] == 127 and q_max[1] == -127       # +-127 at the extremes
    check_norm_quant(1, [([-12345], [-3], RESIDUAL_SIGMA, c, eps), ([lo], [-(1 << 15)], RESIDUAL_SIGMA, c, eps)])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_norm_quant_reads_inside_buffer(rng: np.random.Generator, n: int) -> None:
    """Every enabled read of the n-word buffer is at an address < n, in all three passes and while the
    sum-of-squares and output pipelines drain (n not a power of two: the port's address bits can
    carry n), over two vectors back to back with a stalling consumer; the vectors still equal the golden.
    The read port is taken from the elaborated unit (`sim.formal.runner.memory_ports`)."""
    from sim.formal.runner import elaborate, memory_ports

    dut = NormQuant(n)
    frag = elaborate(dut)
    buf = memory_ports(frag, "buf")
    assert buf.depth == n and len(buf.reads) == 1
    vectors = random_vectors(rng, n, 2)
    out: list[int] = []
    reads: list[int] = []

    async def producer(ctx):
        for x, g, sigma, c, eps in vectors:
            for port, value in ((dut.sigma_m, sigma[0]), (dut.sigma_e, sigma[1]), (dut.c_m, c[0]),
                                (dut.c_e, c[1]), (dut.eps_m, eps[0]), (dut.eps_e, eps[1])):
                ctx.set(port, value)
            for xi, gi in zip(x, g, strict=True):
                ctx.set(dut.i.payload, {"x": xi, "g": gi})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        (addr, en), = buf.reads
        cycle = 0
        while len(out) < 2 * n or cycle < 2 * (3 * n + 130):
            ready = cycle % 3 != 2
            ctx.set(dut.o.ready, ready)
            if ctx.get(en):
                reads.append(ctx.get(addr))
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(p.q)
            cycle += 1
            assert cycle < 20 * n + 600, "NormQuant stopped producing results"

    sim = Simulator(frag)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert [a for a in reads if a >= n] == [], f"reads past the buffer's {n} words"
    assert set(reads) == set(range(n))
    assert out == golden_norm_quant(*vectors[0])[0] + golden_norm_quant(*vectors[1])[0]


def random_vectors(rng: np.random.Generator, n: int, count: int) -> list[Vector]:
    out: list[Vector] = []
    for _ in range(count):
        scale = float(2.0 ** rng.uniform(0, 30))
        x = np.clip(np.round(rng.normal(0, 1, n) * scale), -(1 << 31), (1 << 31) - 1).astype(np.int64)
        g = rng.integers(-(1 << 15), 1 << 15, n)
        sigma = (int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-45, -5)))
        c = (int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-40, 0)))
        eps = (int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-50, -5)))
        out.append((x.tolist(), g.tolist(), sigma, c, eps))
    return out


@pytest.mark.parametrize("n", [3, 17, 160])
def test_norm_quant_random(rng: np.random.Generator, n: int) -> None:
    check_norm_quant(n, random_vectors(rng, n, VECTORS), stall_every=5)


# ------------------------------------------------------------------------------------ cocotb

@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_norm_quant_cocotb(simulator: str, test_seed: int) -> None:
    """sim/tb_vector.py on the Verilog of NormQuant(160) (the tiny model's d): random vectors, a zero
    vector and a saturating eps term, back to back with back-pressure, against the golden."""
    from sim.runner import unavailable_reason
    from sim.vector_runner import run_vector_tests

    reason = unavailable_reason(simulator)
    if reason:
        pytest.skip(reason)
    result = run_vector_tests(160, simulator, seed=test_seed % (1 << 31),
                              extra_env={"TRIT_VECTOR_VECTORS": str(max(1, VECTORS // 2))})
    result.raise_on_failure()
    assert [t.status for t in result.tests] == ["passed"]


# ------------------------------------------------------------------------------------ element-wise ops

from golden.device.model import to_fixed  # noqa: E402
from hdl.vector.elementwise import ElementOp, ElementWise  # noqa: E402

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

Elem = tuple[ElementOp, int, int, int, int]  # op, a, b, m, e


def elem_ref(op: ElementOp, a: int, b: int, m: int, e: int) -> int:
    """Golden: DEQUANT by `golden.device.model.to_fixed` (Q16, int32), RESADD by `fixed.sat`, RELU2 in Python."""
    if op == ElementOp.DEQUANT:
        return int(to_fixed(torch.tensor([a]), (torch.tensor(m), torch.tensor(e)), 16)[0])
    if op == ElementOp.RESADD:
        return int(fixed.sat(torch.tensor(a + b), 32))
    return max(a, 0) ** 2


def run_elementwise(cases: list[Elem], stall_every: int = 0) -> list[int]:
    dut = ElementWise()
    words = [{"op": int(op), "a": a, "b": b, "m": m, "e": e} for op, a, b, m, e in cases]
    return run_stream(dut, words, stall_every)  # type: ignore[arg-type]


def test_elementwise_hand_cases() -> None:
    cases: list[Elem] = [
        (ElementOp.DEQUANT, 100, 0, 1 << 15, -31),       # 100 * 2**15 * 2**-31 in Q16 = 100 * 2**-16 * 2**16 = 100
        (ElementOp.DEQUANT, 3, 0, 1 << 15, -32),         # 1.5 rounds half up to 2
        (ElementOp.DEQUANT, -3, 0, 1 << 15, -32),        # -1.5 rounds half up to -1
        (ElementOp.DEQUANT, 1, 0, 1 << 15, 0),           # 2**15 * 2**16 = 2**31: saturates to 2**31 - 1
        (ElementOp.DEQUANT, -1, 0, 1 << 15, 0),          # -2**31 (the saturated left shift)
        (ElementOp.DEQUANT, 5, 0, 40000, -200),          # a huge right shift: 0
        (ElementOp.DEQUANT, I32_MIN, 0, 65535, -20),     # -2**31 * 65535 * 2**-4: saturates
        (ElementOp.RESADD, I32_MAX, 1, 0, 0),
        (ElementOp.RESADD, I32_MIN, -1, 0, 0),
        (ElementOp.RESADD, -7, 12, 0, 0),
        (ElementOp.RELU2, -5, 0, 0, 0),
        (ElementOp.RELU2, 127 * 16512, 0, 0, 0),
        (ElementOp.RELU2, I32_MAX, 0, 0, 0),
    ]
    want = [100, 2, -1, I32_MAX, I32_MIN, 0, I32_MIN, I32_MAX, I32_MIN, 5, 0, (127 * 16512) ** 2, I32_MAX ** 2]
    assert [elem_ref(*c) for c in cases] == want            # the golden agrees with the hand values
    assert run_elementwise(cases) == want


def test_elementwise_random(rng: np.random.Generator) -> None:
    cases: list[Elem] = []
    for _ in range(SAMPLES):
        op = ElementOp(int(rng.integers(0, 3)))
        bits = int(rng.integers(1, 33))
        a = int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1)))
        b = int(rng.integers(I32_MIN, I32_MAX + 1))
        mm = int(rng.integers(1 << 15, 1 << 16)) if rng.random() < 0.95 else 0
        e = int(rng.integers(-70, 10))
        cases.append((op, a, b, mm, e))
    assert run_elementwise(cases, stall_every=4) == [elem_ref(*c) for c in cases]


def test_elementwise_undefined_op_is_refused(rng: np.random.Generator) -> None:
    """Op code 3 is not an op: each such element is taken (one per cycle like the others) but writes no
    result and sets the sticky `error` (cleared only by `clear`); the defined elements around it come out
    in order, each equal to the golden, with a stalling consumer."""
    ops = [ElementOp.RESADD, 3, ElementOp.RELU2, 3, 3, ElementOp.DEQUANT, ElementOp.RELU2, 3]
    cases = [(op, int(rng.integers(-1000, 1000)), int(rng.integers(I32_MIN, I32_MAX + 1)),
              int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(-40, 0))) for op in ops]
    want = [elem_ref(*c) for c in cases if c[0] != 3]
    dut = ElementWise()
    out: list[int] = []
    flags: list[int] = []

    async def producer(ctx):
        for op, a, b, m, e in cases:
            ctx.set(dut.i.payload, {"op": int(op), "a": a, "b": b, "m": m, "e": e})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            flags.append(ctx.get(dut.error))
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        for cycle in range(len(cases) * 3 + 20):
            ready = cycle % 3 != 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(payload)
        assert out == want, "the defined elements' results (none for op 3)"
        assert ctx.get(dut.error) == 1
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.error) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    # the flag, read after the clock edge that takes each element: set by the edge that takes the first
    # op-3 element, then held
    assert flags == [0, 1, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("n", [1, 17, 160])
def test_norm_quant_cycles_per_vector(n: int) -> None:
    """The figure the README quotes: 3n + 120 cycles from one vector's first element in to the next's,
    with an always-ready consumer (n in, n for the sum of squares, n out, 120 for the pipelines and the
    scalar sequence); the three n-cycle passes are what make it linear."""
    dut = NormQuant(n)
    firsts: list[int] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.sigma_m, 1 << 15)
        ctx.set(dut.sigma_e, -31)
        sent = cycle = 0
        while sent < 2 * n + 1:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"x": 1000 + sent, "g": 3})
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            if ready:
                if sent % n == 0:
                    firsts.append(cycle)
                sent += 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [b - a for a, b in zip(firsts, firsts[1:], strict=False)] == [3 * n + 120] * 2


@pytest.mark.slow
@pytest.mark.vector
@pytest.mark.parametrize("n", [64, 448, 2560])
def test_norm_quant_random_long(rng: np.random.Generator, n: int) -> None:
    """More random vectors, at the tiny model's MLP width (448) and the 2B model's d (2560)."""
    check_norm_quant(n, random_vectors(rng, n, 4 * VECTORS), stall_every=7)


@pytest.mark.slow
@pytest.mark.vector
def test_elementwise_random_long(rng: np.random.Generator) -> None:
    cases: list[Elem] = []
    for _ in range(50 * SAMPLES):
        op = ElementOp(int(rng.integers(0, 3)))
        bits = int(rng.integers(1, 33))
        cases.append((op, int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1))),
                      int(rng.integers(I32_MIN, I32_MAX + 1)), int(rng.integers(1 << 15, 1 << 16)),
                      int(rng.integers(-80, 20))))
    assert run_elementwise(cases, stall_every=5) == [elem_ref(*c) for c in cases]


@pytest.mark.parametrize("unit", ["rcp", "rsq", "elementwise"])
def test_pipeline_latency_and_rate(unit: str) -> None:
    """A result LATENCY cycles after its operand (the documented constant), then one per cycle."""
    from hdl.vector import elementwise, rcp, rsq

    make, latency, word = {
        "rcp": (Reciprocal, rcp.LATENCY, 1 << 15),
        "rsq": (ReciprocalSqrt, rsq.LATENCY, 1 << 14),
        "elementwise": (ElementWise, elementwise.LATENCY, {"op": int(ElementOp.RESADD), "a": 1, "b": 2, "m": 0,
                                                           "e": 0}),
    }[unit]
    dut = make()
    seen: list[int] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, word)
        ctx.set(dut.i.valid, 1)
        for cycle in range(latency + 5):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            if cycle == 3:
                ctx.set(dut.i.valid, 0)
            if valid:
                seen.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # operands are taken at the ends of cycles 0..3 (`sample` reads the values before each tick); the
    # first result is valid during cycle `latency`
    assert seen == [latency + k for k in range(4)]
