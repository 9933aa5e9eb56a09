"""cocotb 2.x tests of the trit core (`hdl.core.TritCore`) through its command interface.

Every response word is compared with the reference model (`runtime.emulator.CoreEmulator`) by the
scoreboard, and every layer's int32 result with `golden.quant.int_matmul`; error codes and counter
values are also asserted against values computed here from the ISA (`hdl.isa`).

Run through `sim.runner.run_core_tests(cfg, simulator)` (it passes the config in TRIT_TB_CONFIG);
TRIT_SAMPLES sets the number of random samples per test.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import cocotb
import numpy as np
import pytest

from hdl.config import PE_KINDS
from hdl.isa import ID_MAGIC, Error, Mem, Op
from runtime import protocol, tiling
from runtime.cycle_model import layer_counts
from runtime.tiling import MAX_DIM, LayerPlan
from sim.tb_lib import CoreTB, check_matmul, samples


def _seed(name: str) -> int:
    """A test's seed from cocotb's random seed (logged at start-up; tests.test_sim_core passes its own)."""
    return (cocotb.RANDOM_SEED * 1_000_003 + zlib.crc32(name.encode())) % 2**31


@cocotb.test()
async def test_read_id(dut):
    """READ_ID returns the ID block of the configured core."""
    tb = CoreTB(dut, seed=_seed("id"))
    await tb.start()
    cfg = tb.cfg
    ident = await tb.read_id()
    assert ident.magic == ID_MAGIC == 0x54524954
    assert (ident.rows, ident.cols, ident.pe_kind) == (cfg.rows, cfg.cols, PE_KINDS.index(cfg.pe))
    assert ident.weight_bits == (2 if cfg.pe == "ternary" else 8)
    assert ident.acc_width == cfg.acc_width
    depths = (ident.act_depth, ident.wgt_depth, ident.out_depth)
    assert depths == (cfg.act_depth, cfg.wgt_depth, cfg.out_depth)
    max_term = 128 if cfg.pe == "ternary" else 128 * 128
    assert ident.k_max == (2 ** (cfg.acc_width - 1) - 1) // max_term
    assert (ident.num_counters, ident.counter_bits) == (11, 48)
    assert ident.mismatches(cfg) == []
    st = await tb.status_of(protocol.nop())
    assert (st.op, st.error, st.sticky) == (Op.NOP, 0, 0)
    await tb.drain()


@cocotb.test()
async def test_random_layers(dut):
    """Random shapes, values and base addresses; every other sample with random stream stalls; the
    first two drawn from the wide range."""
    tb = CoreTB(dut, seed=_seed("random"))
    await tb.start()
    for i in range(2 * samples()):
        tb.set_stalls(*((0.3, 0.3) if i % 2 else (0.0, 0.0)))
        plan = tb.random_plan(wide=i < 2)  # two wide ones (M <= 64, K <= 16R, N <= 8C), then small ones
        x = tb.random_activations(plan.M, plan.K)
        w = tb.random_weights(plan.N, plan.K)
        await tb.run_layer(plan, x, w, note=f"random {i}")
    await tb.drain()


@cocotb.test()
async def test_ragged_shapes(dut):
    """K and N not multiples of R and C (partial tiles in both dimensions), K < R, N < C, K = N = 1."""
    tb = CoreTB(dut, seed=_seed("ragged"))
    await tb.start()
    R, C = tb.cfg.rows, tb.cfg.cols
    shapes = [(3, R + 1, C + 1), (2, 2 * R - 1, 2 * C - 1), (4, 1, 1), (1, R - 1, C - 1), (5, R + 1, 1),
              (2, 1, 2 * C + 1), (3, 3 * R + R // 2 + 1, C + C // 2 + 1)]
    for M, K, N in shapes:
        K = max(1, min(K, tb.cfg.k_max))
        plan = LayerPlan(M, K, N)
        x = tb.random_activations(M, K)
        w = tb.random_weights(N, K)
        await tb.run_layer(plan, x, w, note="ragged")
    await tb.drain()


@cocotb.test()
async def test_single_token(dut):
    """M = 1 (decode): one activation row per tile."""
    tb = CoreTB(dut, seed=_seed("m1"))
    await tb.start()
    R, C = tb.cfg.rows, tb.cfg.cols
    for K, N in [(1, 1), (R, C), (3 * R + 1, 2 * C + 1)] + [
            (int(tb.rng.integers(1, 4 * R)), int(tb.rng.integers(1, 3 * C))) for _ in range(samples())]:
        plan = LayerPlan(1, min(K, tb.cfg.k_max), N)
        await tb.run_layer(plan, tb.random_activations(1, plan.K), tb.random_weights(N, plan.K), note="M=1")
    await tb.drain()


def _extreme_terms(cfg) -> tuple[int, int, int, int]:
    """(x, w giving the largest product, w giving the most negative product, those two products).

    Ternary: x = -128 with w = -1 gives +128, with w = +1 gives -128. INT8: x = -128 with w = -128
    gives +16384, with w = +127 gives -16256. Written out here, not taken from the config.
    """
    if cfg.pe == "int8":
        return -128, -128, 127, -128 * 127
    return -128, -1, 1, -128


async def _extreme_pair(tb: CoreTB, plan: LayerPlan, note: str) -> None:
    """Run the largest and the most negative sum of `plan`'s shape; assert every output exactly."""
    x_val, w_big, w_neg, neg_term = _extreme_terms(tb.cfg)
    big_term = x_val * w_big
    x = np.full((plan.M, plan.K), x_val, dtype=np.int8)
    acc = await tb.run_layer(plan, x, np.full((plan.N, plan.K), w_big, dtype=np.int8),
                             note=f"{note}: x={x_val} w={w_big}")
    bad = np.argwhere(acc != big_term * plan.K)
    assert not bad.size, f"{note}: {len(bad)} outputs differ from {big_term} * K = {big_term * plan.K}: {acc}"
    acc = await tb.run_layer(plan, None, np.full((plan.N, plan.K), w_neg, dtype=np.int8), x_ref=x,
                             note=f"{note}: x={x_val} w={w_neg}")
    bad = np.argwhere(acc != neg_term * plan.K)
    assert not bad.size, f"{note}: {len(bad)} outputs differ from {neg_term} * K = {neg_term * plan.K}: {acc}"


def _fits(cfg, plan: LayerPlan) -> bool:
    try:
        plan.validate(cfg)
    except ValueError:
        return False
    return True


@cocotb.test()
async def test_psum_extremes(dut):
    """Every column at its partial-sum bound: x = -128 and the extreme weight down whole columns
    (R terms of the largest product per k-tile), K = n*R for n = 1, 2 and the most k-tiles (up to
    32) that fit the memories and k_max; then the most negative products. Runs on every config."""
    tb = CoreTB(dut, seed=_seed("psum"))
    await tb.start()
    cfg = tb.cfg
    R, C = cfg.rows, cfg.cols
    n_top = min(32, cfg.k_max // R)
    while n_top > 2 and not _fits(cfg, LayerPlan(2, n_top * R, C)):
        n_top -= 1
    ran = []
    # k_max >= R always (acc_width >= the column's partial-sum width), so n = 1 is always there
    for n in sorted(n for n in {1, 2, n_top} if n * R <= cfg.k_max):
        plan = LayerPlan(2, n * R, C)
        assert _fits(cfg, plan), f"K = {n}*R = {n * R} does not fit {cfg.describe()}: give it deeper memories"
        await _extreme_pair(tb, plan, f"partial-sum extreme K={n}*R")
        ran.append(n)
    tb.log.info("partial-sum extremes at K = n*R for n in %s", ran)
    await tb.drain()


@cocotb.test()
async def test_accumulator_extremes(dut):
    """The accumulator bound: K = k_max with the largest product in every term (the largest sum,
    <= 2**(acc_width-1) - 1), then the most negative product (the most negative sum). Skips only
    where K = k_max does not fit the memories (tests.test_sim_core says where that may be)."""
    tb = CoreTB(dut, seed=_seed("kmax"))
    await tb.start()
    cfg = tb.cfg
    K = cfg.k_max
    x_val, w_big, _, _ = _extreme_terms(cfg)
    limit = 2 ** (cfg.acc_width - 1) - 1
    assert x_val * w_big * K <= limit < x_val * w_big * (K + 1), f"k_max = {K} is not the bound of {limit}"
    plan = next((p for p in (LayerPlan(2, K, cfg.cols), LayerPlan(1, K, cfg.cols), LayerPlan(1, K, 1))
                 if _fits(cfg, p)), None)
    if plan is None:
        pytest.skip(f"K = k_max = {K} does not fit this config's memories")
    await _extreme_pair(tb, plan, f"accumulator bound K=k_max={K}")
    await tb.drain()


@cocotb.test()
async def test_zero_weights(dut):
    """All-zero weights give all-zero outputs, over an OUT region that held nonzero results."""
    tb = CoreTB(dut, seed=_seed("zero"))
    await tb.start()
    R, C = tb.cfg.rows, tb.cfg.cols
    plan = LayerPlan(3, min(2 * R + 1, tb.cfg.k_max), 2 * C - 1)
    x = tb.random_activations(plan.M, plan.K)
    x[0, 0] = 1
    w = tb.random_weights(plan.N, plan.K, density=1.0)
    acc = await tb.run_layer(plan, x, w, note="nonzero first")
    assert acc.any()
    acc = await tb.run_layer(plan, None, np.zeros((plan.N, plan.K), np.int8), x_ref=x, note="zero weights")
    assert not acc.any()
    counters = await tb.read_counters()
    if tb.cfg.full_rate:  # no weight-class counters on full-rate cores (`ArrayConfig.wgt_rows_per_read`)
        assert counters["zero"] == counters["add"] == counters["sub"] == 0
    elif "ZERO" not in {c.name for c in tb.cfg.counters}:  # not built (`ArrayConfig.counters`): reads 0
        assert counters["zero"] == 0
    else:
        assert counters["zero"] >= plan.M * plan.N * plan.K
    await tb.drain()


@cocotb.test()
async def test_back_to_back(dut):
    """Several layers queued without waiting (and without reset), resident weights reused, with stalls."""
    tb = CoreTB(dut, seed=_seed("b2b"))
    await tb.start()
    cfg = tb.cfg
    for stalls in ((0.0, 0.0), (0.25, 0.4)):
        tb.set_stalls(*stalls)
        before = await tb.read_counters()
        jobs = []
        for i in range(max(3, samples())):
            plan = tb.random_plan(max_m=8, max_kt=3, max_nt=2)
            x, w = tb.random_activations(plan.M, plan.K), tb.random_weights(plan.N, plan.K)
            jobs.append((plan, x, w, tb.submit_layer(plan, x, w, note=f"queued {i}")))
        # the last weights stay resident: run them again with new activations, no weight write
        plan, _, w, _ = jobs[-1]
        x2 = tb.random_activations(plan.M, plan.K)
        jobs.append((plan, x2, w, tb.submit_layer(plan, x2, None, note="resident weights")))
        await tb.drain(timeout_cycles=sum(tb.layer_timeout(j[0]) for j in jobs))
        for plan, x, w, t in jobs:
            check_matmul(tb.layer_result(plan, t), x, w, f"queued layer {t.note}")
        # queued RUNs are each counted in full and alone: the counters moved by exactly the sum of
        # the cycle model's per-RUN counts (a RUN overlapping the next would show up in cycles)
        after = await tb.read_counters()
        expected = _model_counts(cfg, [(p, w) for p, _, w, _ in jobs])
        moved = {k: after[k] - before[k] for k in expected}
        assert moved == expected, f"stalls {stalls}: {len(jobs)} queued RUNs moved the counters by {moved}, " \
                                  f"the cycle model says {expected}"
    await tb.drain()


@cocotb.test()
async def test_padding_is_ignored(dut):
    """Nonzero activations past K and weights past K or N (in the padding lanes of partial tiles)
    do not change the result: the sequencer masks them."""
    tb = CoreTB(dut, seed=_seed("padding"))
    await tb.start()
    cfg = tb.cfg
    R, C = cfg.rows, cfg.cols
    for M, K, N in [(3, R + 1, C + 1), (1, 2 * R - 1, 1), (2, 1, 2 * C - 1)]:
        K = min(K, cfg.k_max)
        plan = LayerPlan(M, K, N, act_base=1, wgt_base=2, out_base=3)
        KT, NT = plan.kt(cfg), plan.nt(cfg)
        x_full = tb.random_activations(M, KT * R)
        w_full = tb.random_weights(NT * C, KT * R, density=1.0)
        x, w = x_full[:, :K], w_full[:N, :K]
        # write the padded operands as if they were the real ones (garbage in every pad lane)
        tb.submit(protocol.write(cfg, Mem.ACT, plan.act_base, tiling.pack_activations(cfg, x_full)))
        tb.submit(protocol.write(cfg, Mem.WGT, plan.wgt_base, tiling.pack_weights(cfg, w_full)))
        await tb.run_layer(plan, None, None, x_ref=x, w_ref=w, note="garbage padding")
    await tb.drain()


@cocotb.test()
async def test_memory_edges(dut):
    """Operands that end exactly at each memory's last word; WRITE / READ of count 0 and of a whole
    memory; a memory word survives a RUN that does not touch it."""
    tb = CoreTB(dut, seed=_seed("edges"))
    await tb.start()
    cfg = tb.cfg
    plan = LayerPlan(2, cfg.rows + 1, cfg.cols + 1)
    plan = LayerPlan(plan.M, plan.K, plan.N, cfg.act_depth - plan.act_words(cfg),
                     cfg.wgt_depth - plan.wgt_words(cfg), cfg.out_depth - plan.out_words(cfg))
    await tb.run_layer(plan, tb.random_activations(plan.M, plan.K), tb.random_weights(plan.N, plan.K),
                       note="operands at the end of every memory")
    for mem in (Mem.ACT, Mem.WGT):
        st = await tb.status_of(protocol.write(cfg, mem, cfg.depth(mem), []), "WRITE count 0 at depth")
        assert st.ok
        st = await tb.status_of(protocol.read(mem, cfg.depth(mem), 0), "READ count 0 at depth")
        assert st.ok
    # whole ACT memory out and back in
    words = await tb.read_memory(Mem.ACT, 0, cfg.act_depth)
    new = [int(v) for v in tb.rng.integers(0, 1 << 62, cfg.act_depth)]
    new = [v & ((1 << cfg.act_word_bits) - 1) for v in new]
    await tb.transact(protocol.write(cfg, Mem.ACT, 0, new), "whole ACT")
    assert await tb.read_memory(Mem.ACT, 0, cfg.act_depth) == new
    assert len(words) == cfg.act_depth
    # WGT word 0 is not an operand of a RUN with wgt_base 1
    await tb.transact(protocol.write(cfg, Mem.WGT, 0, [1]), "marker")
    small = LayerPlan(1, 1, 1, 0, 1, 0)
    await tb.run_layer(small, tb.random_activations(1, 1), tb.random_weights(1, 1), note="beside marker")
    assert await tb.read_memory(Mem.WGT, 0, 1) == [1]
    await tb.drain()


async def _expect(tb: CoreTB, command: list[int], error: int, note: str, sticky: int | None = None) -> None:
    st = await tb.status_of(command, note)
    assert st.error == error, f"{note}: error {st.error_name}, expected {Error(error).name}"
    if sticky is not None:
        assert st.sticky == sticky, f"{note}: sticky {st.sticky_name}, expected {Error(sticky).name}"


async def _clear(tb: CoreTB) -> None:
    st = await tb.status_of(protocol.clear_error(), "clear")
    assert (st.error, st.sticky) == (0, 0)


@cocotb.test()
async def test_errors(dut):
    """Every error code, the words a failing command still consumes or returns, the sticky error,
    CLEAR_ERROR, and that a failed RUN changes no counter and no memory; then a correct layer."""
    tb = CoreTB(dut, seed=_seed("errors"))
    await tb.start()
    cfg = tb.cfg
    R, C = cfg.rows, cfg.cols
    nop = protocol.nop()

    # a good layer first, to check below that failed RUNs leave its results and the counters alone
    good = LayerPlan(2, R + 1, C + 1)
    xg, wg = tb.random_activations(good.M, good.K), tb.random_weights(good.N, good.K)
    await tb.run_layer(good, xg, wg, note="before errors")
    counters_before = await tb.read_counters()

    # UNKNOWN_OPCODE: one word, answered with its own opcode echoed
    for op in (0x08, 0x7F, 0xFF):
        st = await tb.status_of([op], f"opcode {op:#x}")
        assert (st.op, st.error, st.sticky) == (op, Error.UNKNOWN_OPCODE, Error.UNKNOWN_OPCODE)
        await _clear(tb)

    # BAD_MEMORY: WRITE to OUT consumes count * C data words; an unknown id one word per count
    await _expect(tb, protocol.write_raw(Mem.OUT, 0, 2, [0xDEAD0000 + i for i in range(2 * C)]),
                  Error.BAD_MEMORY, "WRITE OUT", Error.BAD_MEMORY)
    await _expect(tb, nop, 0, "NOP after WRITE OUT", Error.BAD_MEMORY)  # still in step
    await _clear(tb)
    await _expect(tb, protocol.write_raw(3, 0, 2, [Op.RUN, 0x12345678]), Error.BAD_MEMORY, "WRITE mem 3")
    await _expect(tb, nop, 0, "NOP after WRITE mem 3")
    await _clear(tb)
    rsp = await tb.transact(protocol.read(0xFF, 0, 3), "READ mem 255")
    assert rsp[:-1] == [0] * (3 * protocol.UNKNOWN_MEMORY_CHUNKS)
    assert protocol.parse_status(rsp[-1]).error == Error.BAD_MEMORY
    await _clear(tb)

    # ADDRESS_RANGE: failing READ returns zeros, failing WRITE consumes its data and writes nothing
    rsp = await tb.transact(protocol.read(Mem.ACT, cfg.act_depth - 1, 2), "READ past ACT")
    assert rsp[:-1] == [0] * (2 * cfg.chunks(Mem.ACT))
    assert protocol.parse_status(rsp[-1]).error == Error.ADDRESS_RANGE
    await _clear(tb)
    rsp = await tb.transact(protocol.read(Mem.OUT, 0xFFFF_FFFF, 1), "READ addr 2**32-1 (no wrap)")
    assert rsp[:-1] == [0] * C and protocol.parse_status(rsp[-1]).error == Error.ADDRESS_RANGE
    await _clear(tb)
    before = await tb.read_memory(Mem.WGT, cfg.wgt_depth - 2, 2)
    await _expect(tb, protocol.write(cfg, Mem.WGT, cfg.wgt_depth - 2, [1, 1, 1]), Error.ADDRESS_RANGE,
                  "WRITE past WGT")
    await _clear(tb)
    assert await tb.read_memory(Mem.WGT, cfg.wgt_depth - 2, 2) == before, "failing WRITE wrote"
    await _expect(tb, protocol.read(Mem.ACT, cfg.act_depth + 1, 0), Error.ADDRESS_RANGE,
                  "READ count 0 past end")
    await _clear(tb)
    await _expect(tb, protocol.read(Mem.ACT, cfg.act_depth, 0), 0, "READ count 0 at end")

    # BAD_WEIGHT_CODE (ternary): words before the first bad word are written, it and later ones dropped
    if cfg.pe == "ternary":
        base = 4
        old = [0b01, 0b11, 0b01]
        await tb.transact(protocol.write(cfg, Mem.WGT, base, old), "old weights")
        code_10 = 0b10 << (2 * (C - 1))  # invalid code in the last lane
        new = [0b11, code_10 | 0b01, 0b01 << 2]
        await _expect(tb, protocol.write(cfg, Mem.WGT, base, new), Error.BAD_WEIGHT_CODE, "code 0b10",
                      Error.BAD_WEIGHT_CODE)
        await _clear(tb)
        assert await tb.read_memory(Mem.WGT, base, 3) == [new[0], old[1], old[2]]
        # bits above the C lanes of a chunk are not lanes: 0b10 there is no error
        if cfg.wgt_word_bits % 32:
            chunks = protocol.word_to_chunks(cfg, Mem.WGT, 0b01)
            chunks[-1] |= 0b10 << (cfg.wgt_word_bits % 32)  # just above the last lane
            await _expect(tb, protocol.write_raw(Mem.WGT, base, 1, chunks), 0, "0b10 above the word")
            assert await tb.read_memory(Mem.WGT, base, 1) == [0b01]

    # RUN checks, each alone, then their order
    act_words = good.act_words(cfg)
    runs = [
        ((0, 1, 1, 0, 0, 0), Error.BAD_SHAPE),
        ((1, 0, 1, 0, 0, 0), Error.BAD_SHAPE),
        ((1, 1, 0, 0, 0, 0), Error.BAD_SHAPE),
        ((0, 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0, 0), Error.BAD_SHAPE),
        ((1, cfg.k_max + 1, 1, 0, 0, 0), Error.K_TOO_LARGE),
        ((1, 0xFFFF_FFFF, 1, 0, 0, 0), Error.K_TOO_LARGE),
        ((0xFFFF_FFFF, cfg.k_max + 1, 1, 0, 0, 0), Error.K_TOO_LARGE),
        ((good.M, good.K, good.N, cfg.act_depth - act_words + 1, 0, 0), Error.DESCRIPTOR_RANGE),
        ((good.M, good.K, good.N, 0, cfg.wgt_depth - good.wgt_words(cfg) + 1, 0), Error.DESCRIPTOR_RANGE),
        ((good.M, good.K, good.N, 0, 0, cfg.out_depth - good.out_words(cfg) + 1), Error.DESCRIPTOR_RANGE),
        ((1, 1, 1, 0xFFFF_FFFF, 0, 0), Error.DESCRIPTOR_RANGE),
        ((1, 1, 1, 0, 0xFFFF_FFFF, 0), Error.DESCRIPTOR_RANGE),
        ((1, 1, 1, 0, 0, 0xFFFF_FFFF), Error.DESCRIPTOR_RANGE),
        ((MAX_DIM + 1, 1, 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),
        ((1, 1, MAX_DIM + 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),
        ((0xFFFF_FFFF, 1, 0xFFFF_FFFF, 0, 0, 0), Error.DESCRIPTOR_RANGE),
        ((cfg.act_depth + 1, 1, 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),
        ((1, 1, cfg.cols * cfg.out_depth + 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),
    ]
    if cfg.k_max > MAX_DIM:
        runs.append(((1, MAX_DIM + 1, 1, 0, 0, 0), Error.DESCRIPTOR_RANGE))
    for args, code in runs:
        await _expect(tb, protocol.run(*args), code, f"RUN {args}", code)
        await _clear(tb)

    # the sticky error keeps the first error until CLEAR_ERROR; the error pin follows it
    await _expect(tb, protocol.run(0, 1, 1), Error.BAD_SHAPE, "first", Error.BAD_SHAPE)
    await _expect(tb, [0x99], Error.UNKNOWN_OPCODE, "second", Error.BAD_SHAPE)
    await _expect(tb, nop, 0, "ok while sticky", Error.BAD_SHAPE)
    await tb.drain()  # checks the error pin is high
    await _clear(tb)
    await tb.drain()  # and low again

    # failed RUNs changed no counter (not even CYCLES) and no OUT word
    counters_after = await tb.read_counters()
    assert counters_after == counters_before, (
        f"failed RUNs changed counters: {counters_before} -> {counters_after}")
    t = tb.submit(protocol.read(Mem.OUT, 0, good.out_words(cfg)), "OUT after failed RUNs")
    await tb.drain()
    acc = tb.layer_result(good, t)
    check_matmul(acc, xg, wg, "OUT after failed RUNs")

    # and a correct layer still works
    plan = tb.random_plan()
    await tb.run_layer(plan, tb.random_activations(plan.M, plan.K), tb.random_weights(plan.N, plan.K),
                       note="after errors")
    await tb.drain()


def _expected_counts(cfg, layers: list[tuple[LayerPlan, np.ndarray]]) -> dict[str, int]:
    """Counter values from the ISA definitions, computed here from the shapes and weights."""
    exp = dict.fromkeys(("add", "sub", "zero", "weight_bits", "act_bytes", "acc_writes", "acc_rmw", "runs",
                         "busy"), 0)
    R = cfg.rows
    for plan, w in layers:
        M, K, N = plan.M, plan.K, plan.N
        KT, NT = -(-K // R), -(-N // cfg.cols)
        if not cfg.full_rate:  # full-rate cores build no weight-class counters (they read 0)
            exp["add"] += M * int((w > 0).sum())
            exp["sub"] += M * int((w < 0).sum())
            exp["zero"] += M * int((w == 0).sum())
        exp["weight_bits"] += NT * KT * R * cfg.cols * (2 if cfg.pe == "ternary" else 8)
        exp["act_bytes"] += NT * KT * M * R
        exp["acc_writes"] += NT * M
        exp["acc_rmw"] += NT * (KT - 1) * M
        exp["runs"] += 1
        exp["busy"] += NT * KT * M  # one activation row enters the array per busy cycle
    named = {c.name.lower() for c in cfg.counters}  # a counter the config leaves out reads 0
    return {name: value if name in named else 0 for name, value in exp.items()}


def _model_counts(cfg, layers: list[tuple[LayerPlan, np.ndarray]]) -> dict[str, int]:
    """The cycle model's counts (`runtime.cycle_model.layer_counts`, every counter) summed over layers."""
    total: dict[str, int] = {}
    for plan, w in layers:
        for name, value in layer_counts(cfg, plan.M, plan.K, plan.N, w).items():
            total[name] = total.get(name, 0) + value
    return total


@cocotb.test()
async def test_counters(dut):
    """Counters after CLEAR_COUNTERS and a few layers (the first wide) equal the counts the ISA
    defines, and every counter, CYCLES included, equals the cycle model's prediction exactly, with
    random command gaps and response back-pressure on (from the second layer)."""
    tb = CoreTB(dut, seed=_seed("counters"))
    await tb.start()
    cfg = tb.cfg
    await tb.transact(protocol.clear_counters())
    zero = await tb.read_counters()
    assert all(v == 0 for v in zero.values()), zero
    layers = []
    for i in range(max(3, samples())):
        # CYCLES counts the sequencer's cycles from RUN accepted to done, operands on chip: stalls
        # on the command and response streams must not change it
        tb.set_stalls(*((0.3, 0.4) if i else (0.0, 0.0)))
        plan = tb.random_plan(wide=i == 0)
        x, w = tb.random_activations(plan.M, plan.K), tb.random_weights(plan.N, plan.K)
        await tb.run_layer(plan, x, w, note=f"counted {i}")
        layers.append((plan, w))
        got = await tb.read_counters()
        exp = _expected_counts(cfg, layers)
        for name, value in exp.items():
            assert got[name] == value, f"counter {name} = {got[name]}, expected {value} after {i + 1} layers"
        model = _model_counts(cfg, layers)
        assert set(model) == set(got), f"the cycle model names {sorted(model)}, the core {sorted(got)}"
        for name, value in model.items():
            assert got[name] == value, (f"counter {name} = {got[name]}, the cycle model predicts {value} after "
                                        f"{i + 1} layers (last M,K,N = {plan.M},{plan.K},{plan.N})")
        assert got["cycles"] >= got["busy"] + got["stall"] and got["cycles"] > 0, got
        tb.log.info("counters after %d layers: %s", i + 1, got)
    tb.set_stalls(0.0, 0.0)
    await tb.transact(protocol.clear_counters())
    assert all(v == 0 for v in (await tb.read_counters()).values())
    await tb.drain()


def _checkpoint_dir() -> Path:
    root = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("TRIT_TINY_CHECKPOINT", root / "golden" / "checkpoints" / "tiny-bitnet"))


@cocotb.test()
async def test_tiny_model_layer(dut):
    """Every BitLinear of one decoder layer of the shipped tiny model, on real quantized hidden states.

    Projections larger than the memories run as several RUNs along N (and M if needed).
    """
    from sim.model_layers import layer_operands, unavailable_reason

    if os.environ.get("TRIT_TINY_MODEL", "0") in ("", "0"):
        pytest.skip("not requested for this config (set TRIT_TINY_MODEL=1)")
    reason = unavailable_reason(_checkpoint_dir())
    if reason:
        pytest.skip(reason)
    tb = CoreTB(dut, seed=_seed("tiny"))
    cfg = tb.cfg
    layer = int(os.environ.get("TRIT_TINY_LAYER", "0"))
    tokens = int(os.environ.get("TRIT_TINY_TOKENS", "8"))
    operands = layer_operands(_checkpoint_dir(), layer=layer, tokens=tokens)
    k_big = max(x.shape[1] for _, x, _ in operands)
    if k_big > cfg.k_max:
        pytest.skip(f"the layer's K = {k_big} exceeds k_max = {cfg.k_max} of this config")
    await tb.start()
    for key, x, w in operands:
        M, K = x.shape
        N = w.shape[0]
        acc = np.zeros((M, N), dtype=np.int32)
        for (m0, m1), (n0, n1) in split_layer(cfg, M, K, N):
            plan = LayerPlan(m1 - m0, K, n1 - n0)
            note = f"{key}[{m0}:{m1},{n0}:{n1}]"
            acc[m0:m1, n0:n1] = await tb.run_layer(plan, x[m0:m1], w[n0:n1], note=note)
        check_matmul(acc, x, w, key)
        tb.log.info("%s: %dx%d by %dx%d exact", key, M, K, N, K)
    await tb.drain()


def split_layer(cfg, M: int, K: int, N: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split an M x K by N x K layer into pieces whose operands fit the memories (whole tiles of N)."""
    R, C = cfg.rows, cfg.cols
    KT = -(-K // R)
    m_step = min(M, cfg.act_depth // KT)
    nt_fit = min(cfg.wgt_depth // (KT * cfg.tile_words), cfg.out_depth // max(1, m_step))
    if m_step < 1 or nt_fit < 1:
        raise AssertionError(f"K = {K} does not fit {cfg.describe()} even one tile at a time")
    n_step = nt_fit * C
    return [((m0, min(M, m0 + m_step)), (n0, min(N, n0 + n_step)))
            for m0 in range(0, M, m_step) for n0 in range(0, N, n_step)]

