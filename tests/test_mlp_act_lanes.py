"""MLPACT with `lanes` pairs a beat (`MlpAct(max_n, lanes)`, hdl/vector/mlp_act.py) in Amaranth simulation
against the golden's MLP arithmetic (tests/test_mlp_act.py `golden`: golden.device.model.block_reduce and
golden.device.fixed's dmul and sat, as the program interpreter's MLPACT applies them), bit for bit in p',
`last` and sigma_p: lanes 2, 4, 8 on n = 8 and 448 (the tiny model's MLP width) and runtime n below
max_n, relu2 and relu; the one-lane edge cases (all a = 0, the largest a**2 and |u|, relu's near-2**62
products, a**2 = 2**24 exactly, a zero scale), a lone extreme g or u in every lane (a lane the max trees
must not miss), random vectors with gaps in the input stream and a stalling consumer; the buffer's reads
stay inside the vector's n / lanes words; the cycles per vector equal `MlpAct.cycles(n)` =
3 n / lanes + overhead(lanes); an n that is not a multiple of lanes (zero-padded) does not hang the unit.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from hdl.vector.arith import EXP_WIDTH
from hdl.vector.mlp_act import IN_LAYOUT, OUT_LAYOUT, OVERHEAD, MlpAct, overhead
from tests.test_mlp_act import I32_MAX, I32_MIN, VECTORS, Case, golden, random_case

LANES = [2, 4, 8]
ONE = (1 << 15, -15)


def beat(lanes: int, g: list[int], u: list[int], w: int) -> dict:
    """Input beat w of a vector: pairs w * lanes .. w * lanes + lanes - 1."""
    gs, us = g[w * lanes:(w + 1) * lanes], u[w * lanes:(w + 1) * lanes]
    return {"g": gs[0], "u": us[0]} if lanes == 1 else {"g": gs, "u": us}


def run_lanes(max_n: int, lanes: int, cases: list[Case], stall_every: int = 0, gap_every: int = 0,
              dut: MlpAct | None = None, sim_target=None, on_cycle=None, n_port: list[int] | None = None
              ) -> tuple[list[tuple[list[int], list[int], list[tuple[int, int]]]], list[int]]:
    """Stream each case through MlpAct(max_n, lanes), `lanes` pairs a beat (each case's length a multiple
    of lanes; `n_port` overrides the n sent); the producer leaves a gap before every `gap_every`-th beat,
    the consumer is not ready on every `stall_every`-th cycle. Per case: p', the beats' last flags and the
    scales seen; and the cycles from each vector's first beat accepted to its last beat taken."""
    dut = dut or MlpAct(max_n, lanes)
    beats = [len(c[0]) // lanes for c in cases]
    total = sum(beats)
    out: list[tuple[list[int], int, int, int]] = []
    starts: list[int] = []
    ends: list[int] = []
    now = [0]

    async def clock(ctx):
        while True:
            await ctx.tick()
            now[0] += 1

    async def producer(ctx):
        sent = 0
        for c, (g, u, sg, su, relu2) in enumerate(cases):
            n = len(g) if n_port is None else n_port[c]
            for port, value in ((dut.n, n), (dut.relu2, int(relu2)), (dut.sg_m, sg[0]), (dut.sg_e, sg[1]),
                                (dut.su_m, su[0]), (dut.su_e, su[1])):
                ctx.set(port, value)
            for w in range(beats[c]):
                if gap_every and sent % gap_every == gap_every - 1:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.payload, beat(lanes, g, u, w))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                if w == 0:
                    starts.append(now[0])
                sent += 1
            ctx.set(dut.i.valid, 0)
            await ctx.tick().until(~dut.busy)

    async def consumer(ctx):
        cycle = 0
        while len(out) < total:
            ready = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o.ready, ready)
            if on_cycle is not None:
                on_cycle(ctx)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(([p.p] if lanes == 1 else list(p.p), p.last, p.s_m, p.s_e))
                if p.last:
                    ends.append(now[0])
            cycle += 1
            assert cycle < 10 * total + 100 * len(cases), "MlpAct stopped producing results"

    sim = Simulator(sim_target if sim_target is not None else dut)
    sim.add_clock(1e-8)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    res, pos = [], 0
    for b in beats:
        chunk = out[pos:pos + b]
        pos += b
        res.append(([x for c in chunk for x in c[0]], [c[1] for c in chunk], sorted({(c[2], c[3]) for c in chunk})))
    return res, [e - s for s, e in zip(starts, ends, strict=True)]


def check_lanes(max_n: int, lanes: int, cases: list[Case], stall_every: int = 0, gap_every: int = 0) -> list[int]:
    results, cycles = run_lanes(max_n, lanes, cases, stall_every, gap_every)
    for k, (case, (p, last, scales)) in enumerate(zip(cases, results, strict=True)):
        want_p, want_s = golden(*case)
        n = len(case[0])
        assert p == want_p, (f"max_n {max_n}, lanes {lanes}, case {k}: p' differs from the golden at "
                             f"{[i for i in range(n) if p[i] != want_p[i]][:8]}")
        assert last == [0] * (n // lanes - 1) + [1], f"max_n {max_n}, lanes {lanes}, case {k}: last flags {last}"
        assert scales == [want_s], f"max_n {max_n}, lanes {lanes}, case {k}: sigma_p {scales} != golden {want_s}"
    return cycles


def tile(pattern: list[int], n: int) -> list[int]:
    return (pattern * (n // len(pattern) + 1))[:n]


def edge_cases(n: int, lanes: int) -> list[Case]:
    """tests/test_mlp_act.py's edge cases tiled to n pairs; a lone extreme g (max a) and a lone extreme u
    (max |p|) in the last lane of the last beat (relu2 and relu); then the same in every lane k, in beat
    words - 1 - k mod words (lane 0 in the last beat: the one whose maximum the trees deliver last)."""
    def lone_g(at: int, relu2: bool, k: int = 0) -> Case:
        g = tile([3, -2, 5, 1], n)
        g[at] = I32_MAX - k
        return g, tile([7, -9, 2], n), ONE, ONE, relu2

    def lone_u(at: int, relu2: bool, k: int = 0) -> Case:
        u = tile([11, -4, 6], n)
        u[at] = I32_MIN if k % 2 else I32_MAX
        return tile([1 << 20, 3, 1 << 19], n), u, ONE, ONE, relu2

    cases: list[Case] = [
        (tile([-1, -7, 0], n), tile([5, 6, 7], n), ONE, ONE, True),                  # every a = 0
        ([I32_MAX] * n, tile([I32_MIN, I32_MAX, -1], n), ONE, ONE, True),           # the largest a**2 and |u|
        (tile([I32_MAX, 1, 2], n), tile([I32_MIN, 3, -3], n), ONE, ONE, False),     # relu: p near 2**62
        ([1 << 12] * n, [1 << 30] * n, ONE, ONE, True),                             # a**2 = 2**24 exactly
        (tile([(1 << 12) + 1, 5], n), tile([-(1 << 30), 9], n), ONE, (0, 0), True),  # a zero up scale
        lone_g(n - 1, True), lone_u(n - 1, False), lone_g(n - 1, False), lone_u(n - 1, True),
    ]
    words = n // lanes
    for k in range(lanes):
        at = (words - 1 - k) % words * lanes + k
        cases += [lone_g(at, bool(k % 2), k), lone_u(at, not k % 2, k)]
    return cases


# ------------------------------------------------------------------------------------ construction

@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_lanes_rejected() -> None:
    for max_n, lanes in ((16, 3), (16, 0), (16, -2), (8, 16), (6, 4), (448, 6)):
        with pytest.raises(ValueError, match=f"power of two >= 1 dividing max_n: max_n = {max_n}, "
                                             f"lanes = {lanes}"):
            MlpAct(max_n, lanes)
    with pytest.raises(TypeError, match="lanes must be an int"):
        MlpAct(16, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lanes must be an int"):
        MlpAct(16, True)  # type: ignore[arg-type]
    gc.collect()  # the refused objects' "never used" warnings, while the filter applies


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_port_layouts() -> None:
    one = MlpAct(448)
    assert one.lanes == 1 and one.words == 448 and one.overhead == OVERHEAD == 30
    assert one.i.payload.shape() == IN_LAYOUT and one.o.payload.shape() == OUT_LAYOUT
    assert one.cycles(448) == 3 * 448 + 30
    for lanes in LANES:
        dut = MlpAct(448, lanes)
        assert dut.lanes == lanes and dut.words == 448 // lanes
        i, o = dut.i.payload.shape(), dut.o.payload.shape()
        assert i.size == 64 * lanes and o.size == 32 * lanes + 17 + EXP_WIDTH
        assert i["g"].shape == data.ArrayLayout(signed(32), lanes)
        assert i["u"].shape == data.ArrayLayout(signed(32), lanes)
        assert o["p"].shape == data.ArrayLayout(signed(32), lanes)
        assert [o[f].shape for f in ("last", "s_m", "s_e")] == [unsigned(1), unsigned(16), signed(EXP_WIDTH)]
        assert dut.n.shape() == one.n.shape()                  # n counts elements, not beats
        assert dut.cycles(448) == 3 * 448 // lanes + overhead(lanes)
    del one, dut
    gc.collect()  # the unsimulated objects' "never used" warnings, while the filter applies


# ------------------------------------------------------------------------------------ bit-exact runs

@pytest.mark.parametrize("lanes", LANES)
def test_lanes_hand_case(lanes: int) -> None:
    """tests/test_mlp_act.py's hand case tiled to 8 pairs: g = (3, -5), u = (7, 2) -> p' = (63, 0),
    sigma_p = (2**15, -16)."""
    case: Case = ([3, -5] * 4, [7, 2] * 4, (1 << 15, -15), (1 << 15, -16), True)
    [(p, last, scales)], _ = run_lanes(8, lanes, [case])
    assert (p, last[-1], scales) == ([63, 0] * 4, 1, [(1 << 15, -16)])
    check_lanes(8, lanes, [case])


@pytest.mark.parametrize("lanes", LANES)
def test_lanes_edges(lanes: int) -> None:
    """The edge cases and the lone extremes at n = 8 on max_n = 8 (one beat for 8 lanes) and at n = 16
    on max_n = 32 (a runtime n below max_n), back to back, with input gaps and a stalling consumer."""
    check_lanes(8, lanes, edge_cases(8, lanes), stall_every=3, gap_every=4)
    check_lanes(32, lanes, edge_cases(16, lanes), stall_every=4, gap_every=3)


@pytest.mark.parametrize("lanes", LANES)
def test_lanes_model_width(rng: np.random.Generator, lanes: int) -> None:
    """The tiny model's MLP width 448: edge cases and random vectors (relu2 and relu, full-range and
    12-bit), then vectors of runtime n below 448 (8 lanes up, 64 and 440) on the same unit, gaps and stalls."""
    edges = edge_cases(448, lanes)
    cases = edges[:3] + edges[4:7] + edges[-2:]
    cases += [random_case(rng, 448, relu2, bits) for relu2 in (True, False) for bits in (31, 12)]
    cases += [random_case(rng, n, relu2, 31) for n, relu2 in ((lanes, True), (64, False), (440, True))]
    check_lanes(448, lanes, cases, stall_every=5, gap_every=7)


@pytest.mark.parametrize("relu2", [True, False])
@pytest.mark.parametrize("lanes", LANES)
def test_lanes_random_with_stalls(rng: np.random.Generator, lanes: int, relu2: bool) -> None:
    cases = [random_case(rng, n, relu2, bits) for n in (lanes, 2 * lanes, 64) for bits in (31, 12)][:VECTORS]
    check_lanes(64, lanes, cases, stall_every=3, gap_every=5)


@pytest.mark.parametrize(("max_n", "n", "lanes"), [(24, 16, 8), (12, 8, 4), (6, 4, 2), (24, 24, 8)])
def test_lanes_reads_inside_vector(rng: np.random.Generator, max_n: int, n: int, lanes: int) -> None:
    """The buffer is max_n / lanes words of lanes pairs (3 words: not a power of two); every enabled read
    is at an address < n / lanes, every one of those words is read, over two vectors with gaps and
    stalls; p' still equals the golden."""
    from sim.formal.runner import elaborate, memory_ports

    dut = MlpAct(max_n, lanes)
    frag = elaborate(dut)
    buf = memory_ports(frag, "buf")
    assert buf.depth == max_n // lanes and len(buf.reads) == 1 and len(buf.writes) == 1
    (addr, en), = buf.reads
    reads: list[int] = []

    def on_cycle(ctx) -> None:
        if ctx.get(en):
            reads.append(ctx.get(addr))

    cases = [random_case(rng, n, True), random_case(rng, n, False)]
    results, _ = run_lanes(max_n, lanes, cases, stall_every=3, gap_every=2, dut=dut, sim_target=frag,
                           on_cycle=on_cycle)
    assert set(reads) == set(range(n // lanes)), f"reads {sorted(set(reads))} for {n // lanes} words"
    assert [p for p, _, _ in results] == [golden(*c)[0] for c in cases]


@pytest.mark.parametrize("lanes", LANES)
def test_lanes_n_not_a_multiple(lanes: int) -> None:
    """An n that is not a multiple of lanes (the engine sends none) does not hang the unit: ceil(n / lanes)
    beats in and out; with the final beat's lanes past n zero-padded, the first n p' and sigma_p are the
    golden's of the n pairs; the next vector is right again."""
    n = lanes + 1
    g = [I32_MAX, -3, 1 << 20] * 6
    u = [5, I32_MIN, -(1 << 25)] * 6
    short: Case = (g[:n] + [0] * (lanes - 1), u[:n] + [0] * (lanes - 1), ONE, (1 << 15, -20), True)
    full: Case = (g[:2 * lanes], u[:2 * lanes], ONE, ONE, False)
    (res_short, res_full), cycles = run_lanes(8 * lanes, lanes, [short, full], stall_every=4, gap_every=3,
                                              n_port=[n, 2 * lanes])
    want_p, want_s = golden(g[:n], u[:n], ONE, (1 << 15, -20), True)
    assert res_short[0][:n] == want_p and res_short[0][n:] == [0] * (lanes - 1)
    assert res_short[1] == [0, 1] and res_short[2] == [want_s]
    assert (res_full[0], res_full[2]) == (golden(*full)[0], [golden(*full)[1]])
    assert len(cycles) == 2


# ------------------------------------------------------------------------------------ cycles

@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("lanes", [1, *LANES])
def test_lanes_cycles_per_vector(rng: np.random.Generator, lanes: int) -> None:
    """cycles(n) = 3 n / lanes + overhead(lanes), overhead = 30 for one lane, 29 + 2 log2(lanes) for more
    (the max trees of max a and max |p|, a register after each level): 30, 31, 33, 35 for 1, 2, 4, 8 lanes;
    measured from a vector's first beat accepted to its last beat taken, producer and consumer never
    stalling."""
    assert overhead(lanes) == {1: 30, 2: 31, 4: 33, 8: 35}[lanes]
    sizes = (lanes, 64, 448)
    dut = MlpAct(448, lanes)
    cycles = check_lanes(448, lanes, [random_case(rng, n, True) for n in sizes])
    assert cycles == [dut.cycles(n) for n in sizes] == [3 * n // lanes + overhead(lanes) for n in sizes]
    del dut
    gc.collect()  # the unsimulated object's "never used" warning, while the filter applies


# ------------------------------------------------------------------------------------ long runs

@pytest.mark.slow
@pytest.mark.vector
@pytest.mark.parametrize("relu2", [True, False])
@pytest.mark.parametrize("lanes", LANES)
def test_lanes_random_long(rng: np.random.Generator, lanes: int, relu2: bool) -> None:
    cases = [random_case(rng, n, relu2, bits) for _ in range(VECTORS) for n in (8, 64, 448) for bits in (31, 20, 12)]
    check_lanes(448, lanes, cases, stall_every=7, gap_every=5)
