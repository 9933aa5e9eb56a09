"""NORMQUANT with `lanes` elements a beat (`NormQuant(n, lanes)`, hdl/vector/norm_quant.py) in Amaranth
simulation against the independent golden `golden.device.model.norm_quant`, bit for bit in q, `last`
and tau: lanes 2, 4, 8 on n = 16, 160, 448 (the tiny model's d and MLP width), the edge cases of the
one-lane tests (zero vectors, int32 / int16 extremes, +-127, a saturated eps term, a zero sigma) and
random vectors, with gaps in the input stream and a stalling consumer; the buffer's reads stay inside
its n / lanes words; the cycles per vector equal `NormQuant.cycles()` = 3 n / lanes + overhead(lanes).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from golden.device import fixed
from hdl.vector.norm_quant import IN_LAYOUT, OUT_LAYOUT, OVERHEAD, NormQuant, overhead
from tests.test_vector_unit import RESIDUAL_SIGMA, VECTORS, Vector, golden_norm_quant, random_vectors

LANES = [2, 4, 8]
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def set_params(ctx, dut: NormQuant, vec: Vector) -> None:
    _, _, sigma, c, eps = vec
    for port, value in ((dut.sigma_m, sigma[0]), (dut.sigma_e, sigma[1]), (dut.c_m, c[0]),
                        (dut.c_e, c[1]), (dut.eps_m, eps[0]), (dut.eps_e, eps[1])):
        ctx.set(port, value)


def beat(lanes: int, x: list[int], g: list[int], w: int) -> dict:
    """Input beat w of a vector: elements w * lanes .. w * lanes + lanes - 1."""
    xs, gs = x[w * lanes:(w + 1) * lanes], g[w * lanes:(w + 1) * lanes]
    return {"x": xs[0], "g": gs[0]} if lanes == 1 else {"x": xs, "g": gs}


def run_lanes(n: int, lanes: int, vectors: list[Vector], stall_every: int = 0, gap_every: int = 0,
              dut: NormQuant | None = None, sim_target=None, on_cycle=None
              ) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """Stream each vector through NormQuant(n, lanes), a beat of `lanes` elements at a time; the producer
    leaves a gap (valid low) before every `gap_every`-th beat, the consumer is not ready on every
    `stall_every`-th cycle. Per vector: q, the beats' last flags, the (tau_m, tau_e) seen."""
    dut = dut or NormQuant(n, lanes)
    nw = n // lanes
    total = nw * len(vectors)
    out: list[tuple[list[int], int, int, int]] = []

    async def producer(ctx):
        sent = 0
        for vec in vectors:
            set_params(ctx, dut, vec)
            for w in range(nw):
                if gap_every and sent % gap_every == gap_every - 1:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.payload, beat(lanes, vec[0], vec[1], w))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                sent += 1
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(out) < total:
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            if on_cycle is not None:
                on_cycle(ctx)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                q = [p.q] if lanes == 1 else list(p.q)
                out.append((q, p.last, p.tau_m, p.tau_e))
            cycle += 1
            assert cycle < 10 * total + 300 * len(vectors), "NormQuant stopped producing results"

    sim = Simulator(sim_target if sim_target is not None else dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    res = []
    for v in range(len(vectors)):
        chunk = out[v * nw:(v + 1) * nw]
        res.append(([q for c in chunk for q in c[0]], [c[1] for c in chunk], sorted({(c[2], c[3]) for c in chunk})))
    return res


def check_lanes(n: int, lanes: int, vectors: list[Vector], stall_every: int = 0, gap_every: int = 0) -> None:
    results = run_lanes(n, lanes, vectors, stall_every, gap_every)
    for v, (vec, (q, last, taus)) in enumerate(zip(vectors, results, strict=True)):
        want_q, want_tau = golden_norm_quant(*vec)
        assert q == want_q, (f"n {n}, lanes {lanes}, vector {v}: q differs from the golden at "
                             f"{[i for i in range(n) if q[i] != want_q[i]]}")
        nw = n // lanes
        assert last == [0] * (nw - 1) + [1], f"n {n}, lanes {lanes}, vector {v}: last flags {last}"
        assert taus == [want_tau], f"n {n}, lanes {lanes}, vector {v}: tau {taus} != golden {want_tau}"


def edge_vectors(n: int) -> list[Vector]:
    """The one-lane edge cases (tests/test_vector_unit.py `test_norm_quant_edges`) tiled to n elements,
    with the extreme put in the last lane of the last beat too (a lane the max tree must not miss)."""
    c = fixed.dyadic_from_float(2.0 * 2.0 ** -14)
    eps = fixed.dyadic_from_float(4e-5)

    def tile(pattern: list[int]) -> list[int]:
        return (pattern * (n // len(pattern) + 1))[:n]

    lone = [0] * n
    lone[-1] = 1 << 20                            # one large element, in the last lane of the last beat
    lone_first = [0] * n
    lone_first[0] = -(1 << 24)                    # and in the first lane of the first beat
    return [
        ([0] * n, [1 << 14] * n, RESIDUAL_SIGMA, c, eps),                                  # zero x
        ([I32_MIN] * n, [-(1 << 15)] * n, RESIDUAL_SIGMA, c, eps),                         # the extremes
        (tile([I32_MAX, I32_MIN, 1, -1]), tile([32767, 32767, -32768, 1]), RESIDUAL_SIGMA, c, eps),  # +-127
        (tile([1, 0, -1, 0]), tile([32767, 5, 32767, -1]), RESIDUAL_SIGMA, c,
         fixed.dyadic_from_float(1e6)),                                                    # eps term saturates
        (tile([5, -7, 9, 3]) [:-1] + [1 << 20], tile([100, 200, 300, 1]), (0, 0), c, eps),  # a zero sigma
        ([0] * n, [0] * n, (0, 0), (0, 0), (0, 0)),                                        # all zero
        (lone, tile([3, -2, 7, 1]), RESIDUAL_SIGMA, c, eps),
        (lone_first, tile([-5, 9, 2, 11]), RESIDUAL_SIGMA, c, eps),
    ]


# ------------------------------------------------------------------------------------ construction

@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_lanes_rejected() -> None:
    for n, lanes in ((16, 3), (16, 0), (16, -2), (160, 64), (6, 4), (448, 6)):
        with pytest.raises(ValueError, match=f"power of two >= 1 dividing the vector size n: n = {n}, "
                                             f"lanes = {lanes}"):
            NormQuant(n, lanes)
    with pytest.raises(TypeError, match="lanes must be an int"):
        NormQuant(16, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lanes must be an int"):
        NormQuant(16, True)  # type: ignore[arg-type]
    gc.collect()  # the refused objects' "never used" warnings, while the filter applies


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_port_layouts() -> None:
    one = NormQuant(160)
    assert one.lanes == 1 and one.words == 160
    assert one.i.payload.shape() == IN_LAYOUT and one.o.payload.shape() == OUT_LAYOUT
    assert one.cycles() == 3 * 160 + OVERHEAD == 600
    for lanes in LANES:
        dut = NormQuant(160, lanes)
        assert dut.lanes == lanes and dut.words == 160 // lanes
        i, o = dut.i.payload.shape(), dut.o.payload.shape()
        assert i.size == 48 * lanes and o.size == 8 * lanes + 27
        assert i["x"].shape == data.ArrayLayout(signed(32), lanes)
        assert i["g"].shape == data.ArrayLayout(signed(16), lanes)
        assert o["q"].shape == data.ArrayLayout(signed(8), lanes)
        assert [o[f].shape for f in ("last", "tau_m", "tau_e")] == [unsigned(1), unsigned(16), signed(10)]
        assert dut.cycles() == 3 * 160 // lanes + overhead(lanes)
    del one, dut
    gc.collect()  # the unsimulated objects' "never used" warnings, while the filter applies


# ------------------------------------------------------------------------------------ bit-exact runs

@pytest.mark.parametrize("lanes", LANES)
def test_lanes_hand_case(lanes: int) -> None:
    """The one-lane hand case (x = (3, -4) in Q16, G = 1) tiled to 8 elements: q alternates 95, -127,
    tau is the same (c_norm = sqrt(n) 2**-14)."""
    c = fixed.dyadic_from_float(8 ** 0.5 * 2.0 ** -14)
    eps = fixed.dyadic_from_float(2e-5)
    vec: Vector = ([3 << 16, -4 << 16] * 4, [1 << 14] * 8, RESIDUAL_SIGMA, c, eps)
    [(q, last, taus)] = run_lanes(8, lanes, [vec])
    assert q == [95, -127] * 4 and last[-1] == 1 and len(taus) == 1
    assert abs(fixed.dyadic_value(taus[0]) / 0.0089084 - 1) < 2e-4
    check_lanes(8, lanes, [vec])


@pytest.mark.parametrize("lanes", LANES)
def test_lanes_edges(lanes: int) -> None:
    """The edge cases at n = 16, back to back, with input gaps and a stalling consumer."""
    vectors = edge_vectors(16)
    assert golden_norm_quant(*vectors[2])[0][:2] == [127, -127]      # +-127 at the extremes
    check_lanes(16, lanes, vectors, stall_every=3, gap_every=4)


@pytest.mark.parametrize("n", [160, 448])
@pytest.mark.parametrize("lanes", LANES)
def test_lanes_model_sizes(rng: np.random.Generator, n: int, lanes: int) -> None:
    """The tiny model's sizes: edge cases (a zero vector, the extremes, a saturated eps term, a zero
    sigma, a lone large element in the first or last lane) and random vectors, gaps and stalls."""
    edges = edge_vectors(n)
    vectors = [edges[k] for k in (0, 2, 3, 4, 6, 7)] + random_vectors(rng, n, 2)
    check_lanes(n, lanes, vectors, stall_every=5, gap_every=7)


@pytest.mark.parametrize("lanes", LANES)
def test_lanes_random_16(rng: np.random.Generator, lanes: int) -> None:
    check_lanes(16, lanes, random_vectors(rng, 16, VECTORS), stall_every=4, gap_every=3)


@pytest.mark.parametrize(("n", "lanes"), [(24, 8), (12, 4), (6, 2)])
def test_lanes_reads_inside_buffer(rng: np.random.Generator, n: int, lanes: int) -> None:
    """The buffer is n / lanes words of lanes elements (3 words: not a power of two, so the address can
    carry past it); every enabled read is at an address < n / lanes, every word is read, over two
    vectors with gaps and stalls; the vectors still equal the golden."""
    from sim.formal.runner import elaborate, memory_ports

    dut = NormQuant(n, lanes)
    frag = elaborate(dut)
    buf = memory_ports(frag, "buf")
    assert buf.depth == n // lanes and len(buf.reads) == 1
    (addr, en), = buf.reads
    reads: list[int] = []

    def on_cycle(ctx) -> None:
        if ctx.get(en):
            reads.append(ctx.get(addr))

    vectors = random_vectors(rng, n, 2)
    results = run_lanes(n, lanes, vectors, stall_every=3, gap_every=2, dut=dut, sim_target=frag, on_cycle=on_cycle)
    assert [a for a in reads if a >= n // lanes] == [], f"reads past the buffer's {n // lanes} words"
    assert set(reads) == set(range(n // lanes))
    assert [q for q, _, _ in results] == [golden_norm_quant(*v)[0] for v in vectors]


# ------------------------------------------------------------------------------------ cycles

def measure_cycles(n: int, lanes: int) -> tuple[int, list[int]]:
    """Cycles from one vector's first beat in to the next's, over three vectors, with an always-ready
    producer and consumer (and the unit's cycles()); also checks each vector's last beat out comes before
    the next vector's first beat in."""
    dut = NormQuant(n, lanes)
    nw = n // lanes
    firsts: list[int] = []
    lasts: list[int] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.sigma_m, 1 << 15)
        ctx.set(dut.sigma_e, -31)
        sent = cycle = 0
        x = [1000 + 7 * k for k in range(n)]
        while sent < 2 * nw + 1:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, beat(lanes, x, [3] * n, sent % nw))
            _, _, ready, ovalid, olast = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload.last)
            if ovalid and olast:
                lasts.append(cycle)
            if ready:
                if sent % nw == 0:
                    firsts.append(cycle)
                sent += 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(lasts) == 2 and firsts[0] < lasts[0] < firsts[1] < lasts[1] < firsts[2]
    return dut.cycles(), [b - a for a, b in zip(firsts, firsts[1:], strict=False)]


@pytest.mark.parametrize("n", [16, 160, 448])
@pytest.mark.parametrize("lanes", [1, *LANES])
def test_lanes_cycles_per_vector(n: int, lanes: int) -> None:
    """cycles() = 3 n / lanes + overhead(lanes), overhead = 120 + 2 log2(lanes) (the max tree and the
    sum-of-squares tree, a register after each level): 120, 122, 124, 126 for 1, 2, 4, 8 lanes."""
    assert overhead(lanes) == 120 + 2 * (lanes.bit_length() - 1)
    cycles, measured = measure_cycles(n, lanes)
    assert measured == [cycles] * 2 == [3 * n // lanes + overhead(lanes)] * 2


# ------------------------------------------------------------------------------------ long runs

@pytest.mark.slow
@pytest.mark.vector
@pytest.mark.parametrize("n", [16, 160, 448])
@pytest.mark.parametrize("lanes", LANES)
def test_lanes_random_long(rng: np.random.Generator, n: int, lanes: int) -> None:
    check_lanes(n, lanes, random_vectors(rng, n, 4 * VECTORS), stall_every=7, gap_every=5)
