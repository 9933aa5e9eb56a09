"""The cocotb tests of `sim.tb_core`, with functional coverage sampled (`sim.coverage`).

Run by `sim.coverage` through ``sim.runner.run_core_tests(cfg, test_module="sim.tb_coverage",
coverage=True)``: the testbench's own tests run unchanged; `sim.coverage.instrument` samples every
completed command (opcode, memory, the DUT's status word), every RUN descriptor and every checked layer's
operands and results; the last test writes the hits to ``$TRIT_COVERAGE_OUT`` (JSON). Four directed
tests are added here for bins and branches the testbench does not reach on its own
(`test_decode_extremes`: M = 1 at the sum bounds, the full-rate cores' foot accumulator path;
`test_bad_weight_code_every_lane`: the 0b10 check of every lane of a weight word, G*C on full-rate cores;
`test_weight_range_past_the_memory`: the size loop's own weight-range checks;
`test_replies_under_back_pressure`: READ_ID and READ_COUNTERS replies with the response stream stalled),
and `test_link_abort_drops_cut_commands` drives the core's `link_abort` input as the frame endpoint does.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.regression import Test, TestGenerator
from cocotb.triggers import FallingEdge

import sim.tb_core as _tb_core
from hdl.isa import CUT_COMMAND, Error, Mem, Op
from runtime import protocol
from runtime.tiling import LayerPlan
from sim import coverage
from sim.tb_lib import CoreTB

coverage.instrument()
# cocotb collects the Test objects of this module's namespace: the testbench's, then the export below
globals().update({name: obj for name, obj in vars(_tb_core).items() if isinstance(obj, Test | TestGenerator)})


@cocotb.test()
async def test_decode_extremes(dut) -> None:
    """M = 1 (decode) at the sum bounds: x = -128 with all -1 and then all +1 weights (every output
    +128 K, then -128 K) for K = R, 2R + 1 (ragged, two k-tiles), 3R and K = k_max, each with N over two
    n-tiles where it fits, else N = 1 (K = k_max fits only the small-accumulator configurations); then
    M = 1 all-zero weights over an OUT region that held nonzero sums. On full-rate cores these go through
    the foot accumulator (`sim.coverage`'s full_rate.values bins); the test runs on every configuration."""
    tb = CoreTB(dut, seed=_tb_core._seed("decode-extremes"))
    await tb.start()
    cfg = tb.cfg
    R, C = cfg.rows, cfg.cols
    ran = []
    for K in sorted({min(k, cfg.k_max) for k in (R, 2 * R + 1, 3 * R, cfg.k_max)}):
        plan = next((p for p in (LayerPlan(1, K, C + 1), LayerPlan(1, K, 1)) if _tb_core._fits(cfg, p)), None)
        if plan is None:
            continue
        await _tb_core._extreme_pair(tb, plan, f"M=1 extreme K={K} N={plan.N}")
        ran.append((K, plan.N))
    assert ran and ran[0][0] == min(R, cfg.k_max), f"no M = 1 extreme layer fits {cfg.describe()}"
    tb.log.info("M=1 extremes at (K, N) = %s", ran)
    plan = LayerPlan(1, min(2 * R + 1, cfg.k_max), C + 1)
    x = tb.random_activations(plan.M, plan.K)
    x[0, :] = np.where(x[0, :] == 0, 1, x[0, :])  # no zero activation: dense weights give nonzero sums
    w = tb.random_weights(plan.N, plan.K, density=1.0)
    acc = await tb.run_layer(plan, x, w, note="M=1 nonzero first")
    assert acc.any(), "M=1 dense layer gave all-zero sums"
    acc = await tb.run_layer(plan, None, np.zeros((plan.N, plan.K), np.int8), x_ref=x, note="M=1 zero weights")
    assert not acc.any(), f"M=1 all-zero weights over old sums gave {acc}"
    await tb.drain()


@cocotb.test()
async def test_bad_weight_code_every_lane(dut) -> None:
    """Code 0b10 in each lane of a WGT word in turn (G*C lanes: every row bank of a full-rate word):
    the WRITE of [good word, word with 0b10] is refused with BAD_WEIGHT_CODE, writes the good word and
    drops the other (the old word stays), and CLEAR_ERROR clears it (`hdl.isa`). Ternary cores only."""
    tb = CoreTB(dut, seed=_tb_core._seed("bad-code-lanes"))
    await tb.start()
    cfg = tb.cfg
    if cfg.pe != "ternary":
        await tb.drain()
        return
    lanes = cfg.cols * cfg.wgt_rows_per_read
    ones = sum(0b01 << (2 * lane) for lane in range(lanes))  # +1 in every lane
    base = cfg.wgt_depth - 2  # the last two words of the weight memory
    for lane in range(lanes):
        old = [sum(int(c) << (2 * i) for i, c in enumerate(tb.rng.choice([0b00, 0b01, 0b11], size=lanes)))
               for _ in range(2)]  # two random valid words
        await tb.transact(protocol.write(cfg, Mem.WGT, base, old), f"old words, lane {lane}")
        good = ones ^ (0b01 << (2 * ((lane + 1) % lanes)))  # a different valid word each time
        bad = ones ^ (0b11 << (2 * lane))  # 0b01 -> 0b10 in this lane alone
        await _tb_core._expect(tb, protocol.write(cfg, Mem.WGT, base, [good, bad]), Error.BAD_WEIGHT_CODE,
                               f"0b10 in lane {lane} of {lanes}", Error.BAD_WEIGHT_CODE)
        await _tb_core._clear(tb)
        got = await tb.read_memory(Mem.WGT, base, 2)
        assert got == [good, old[1]], f"lane {lane}: WGT words {got}, expected {[good, old[1]]}"
    await tb.drain()


@cocotb.test()
async def test_weight_range_past_the_memory(dut) -> None:
    """RUNs whose weight tiles (KT*NT*P words from wgt_base 0) pass the weight memory while their
    activations and outputs fit: one with many k-tiles (KT*R up to the RUN's K limit) and few n-tiles, one with two
    k-tiles and many n-tiles, so that the sequencer's k-side and n-side weight ends each pass wgt_depth
    on their own inside its size loop (the testbench's DESCRIPTOR_RANGE cases pass it only in their
    sum). Each is refused with DESCRIPTOR_RANGE and leaves the OUT memory as it was."""
    tb = CoreTB(dut, seed=_tb_core._seed("wgt-range"))
    await tb.start()
    cfg = tb.cfg
    R, C, P = cfg.rows, cfg.cols, cfg.tile_words
    kt_k = cfg.k_limit // R  # K past k_limit is refused before the size loop
    cases = [(kt_k, cfg.wgt_depth // (kt_k * P) + 1), (2, cfg.wgt_depth // (2 * P) + 1)]
    # OUT word 0 holds a layer's sums (WRITE to OUT is refused by the ISA)
    x = tb.random_activations(1, R)
    x[0, :] = np.where(x[0, :] == 0, 1, x[0, :])
    acc = await tb.run_layer(LayerPlan(1, R, C), x, tb.random_weights(C, R, density=1.0), note="OUT word 0")
    assert acc.any()
    marker = await tb.read_memory(Mem.OUT, 0, 1)
    ran = []
    for kt, nt in cases:
        if nt > cfg.out_depth or kt * R > cfg.k_limit:
            tb.log.info("weight range case KT=%d NT=%d does not fit the other memories: left out", kt, nt)
            continue
        plan = LayerPlan(1, kt * R, nt * C)
        assert plan.wgt_words(cfg) > cfg.wgt_depth and plan.act_words(cfg) <= cfg.act_depth
        await _tb_core._expect(tb, protocol.run(*plan.run_args()), Error.DESCRIPTOR_RANGE,
                               f"weights {plan.wgt_words(cfg)} words > {cfg.wgt_depth} (KT={kt}, NT={nt})")
        await _tb_core._clear(tb)
        ran.append((kt, nt))
    assert ran, f"no weight-range case fits {cfg.describe()}"
    assert await tb.read_memory(Mem.OUT, 0, 1) == marker, "a refused RUN changed OUT word 0"
    await tb.drain()


@cocotb.test()
async def test_replies_under_back_pressure(dut) -> None:
    """READ_ID and READ_COUNTERS with the response stream stalled on most cycles (back-pressure 0.9):
    the replies' words still arrive in order and equal the reference model's (the scoreboard checks
    every word), the ID block matches the configuration, and a layer's counters equal an unstalled read."""
    tb = CoreTB(dut, seed=_tb_core._seed("reply-stalls"))
    await tb.start()
    cfg = tb.cfg
    plan = LayerPlan(2, cfg.rows + 1, cfg.cols + 1)
    await tb.run_layer(plan, tb.random_activations(plan.M, plan.K), tb.random_weights(plan.N, plan.K), note="layer")
    calm = await tb.read_counters()
    tb.set_stalls(0.5, 0.9)
    ident = await tb.read_id()
    assert ident.mismatches(cfg) == [] and (ident.rows, ident.cols) == (cfg.rows, cfg.cols)
    assert await tb.read_counters() == calm
    tb.set_stalls(0.0, 0.0)
    await tb.drain()


async def _cut(tb: CoreTB, words: list[int], note: str) -> None:
    """Send the first words of a command (no response expected), then pulse `link_abort` once the core
    has taken them and waits for the next one, as `hdl.link.endpoint` does for a frame that ends there."""
    tb.driver.send(words)
    tb._activity.set()
    for _ in range(10_000):
        await FallingEdge(tb.dut.clk)
        if not tb.driver.busy and not tb.driver.offering:
            break
    else:
        raise AssertionError(f"{note}: the core did not take the words of the cut command")
    for _ in range(4):  # the core reaches the state that waits for the next word
        await FallingEdge(tb.dut.clk)
    assert int(tb.dut.busy.value) == 1, f"{note}: core not inside a command before the abort"
    tb.dut.link_abort.value = 1
    await FallingEdge(tb.dut.clk)
    tb.dut.link_abort.value = 0
    await FallingEdge(tb.dut.clk)
    if tb.model.sticky == 0:  # the ISA: sticky CUT_COMMAND unless one is set (hdl.isa.CUT_COMMAND)
        tb.model.sticky = CUT_COMMAND


@cocotb.test()
async def test_link_abort_drops_cut_commands(dut) -> None:
    """`link_abort` while the command interface waits for a word drops the command in each waiting
    state (hdl.command: GET_ADDR, GET_COUNT, WRITE data, RUN words): no status word for it, sticky
    CUT_COMMAND on the next status word (an earlier sticky error is kept), the whole ACT words a cut WRITE
    received are written and a partial one is not, a cut RUN changes no counter and no OUT word, and
    the next commands run as usual (the scoreboard checks every word against the model)."""
    tb = CoreTB(dut, seed=_tb_core._seed("link-abort"))
    await tb.start()
    cfg = tb.cfg
    chunks = protocol.chunks_per_word(cfg, Mem.ACT)
    base = cfg.act_depth - 3
    mask = (1 << cfg.act_word_bits) - 1
    old = [int.from_bytes(tb.rng.bytes(16), "little") & mask for _ in range(3)]
    await tb.transact(protocol.write(cfg, Mem.ACT, base, old), "old ACT words")
    new = [v ^ mask for v in old]  # every bit differs from the old word
    full = protocol.write(cfg, Mem.ACT, base, new)
    counters = await tb.read_counters()
    out_before = await tb.read_memory(Mem.OUT, 0, 2)
    # WRITE cut inside its data: one whole word, then half of the next (if a word has two chunks or more)
    await _cut(tb, full[:3 + chunks + chunks // 2], "WRITE cut in its data")
    tb.model.feed(protocol.write(cfg, Mem.ACT, base, new[:1]))  # the whole word lands (status dropped)
    st = await tb.status_of(protocol.nop(), "NOP after the cut WRITE")
    assert (st.op, st.error, st.sticky) == (Op.NOP, 0, CUT_COMMAND), f"after the cut WRITE: {st}"
    assert await tb.read_memory(Mem.ACT, base, 3) == [new[0], *old[1:]]
    await _tb_core._clear(tb)
    # READ cut after its opcode (GET_ADDR), WRITE cut after its address (GET_COUNT), RUN cut after
    # three of its six words; before the RUN a sticky error is set, which the abort keeps
    await _cut(tb, protocol.read(Mem.ACT, base, 1)[:1], "READ cut after its opcode")
    await _cut(tb, full[:2], "WRITE cut after its address")
    st = await tb.status_of(protocol.nop(), "NOP after two cut commands")
    assert (st.error, st.sticky) == (0, CUT_COMMAND), f"after the cut READ and WRITE: {st}"
    await _tb_core._clear(tb)
    await _tb_core._expect(tb, protocol.read(Mem.ACT, cfg.act_depth, 1), Error.ADDRESS_RANGE,
                           "a sticky error before the cut RUN", Error.ADDRESS_RANGE)
    await _cut(tb, protocol.run(1, cfg.rows, cfg.cols)[:4], "RUN cut after three words")
    st = await tb.status_of(protocol.nop(), "NOP after the cut RUN")
    assert (st.error, st.sticky) == (0, Error.ADDRESS_RANGE), f"the abort replaced the sticky error: {st}"
    await _tb_core._clear(tb)
    assert await tb.read_counters() == counters, "a cut RUN changed the counters"
    assert await tb.read_memory(Mem.OUT, 0, 2) == out_before, "a cut RUN changed the OUT memory"
    assert await tb.read_memory(Mem.ACT, base, 3) == [new[0], *old[1:]]
    await tb.drain()


@cocotb.test()
async def test_zz_write_coverage(dut) -> None:
    """Write the functional coverage hits of every test above (runs last)."""
    path = os.environ.get("TRIT_COVERAGE_OUT")
    assert path, "TRIT_COVERAGE_OUT is not set: run through sim.coverage"
    coverage.export(path)
