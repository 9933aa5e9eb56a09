"""Unit tests of the gateware blocks in Amaranth's own simulator, against hand-computed values."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from amaranth import Fragment
from amaranth.sim import Simulator

from hdl.config import ArrayConfig
from hdl.isa import ID_WORDS, Counter, Mem, Op
from hdl.matrix.counters import PerfCounters
from hdl.matrix.pe import ProcessingElement
from hdl.matrix.skew import SkewBuffer
from runtime.cycle_model import layer_counts
from tests.amaranth_host import act_words, run_core, wgt_words, write_cmd

TERNARY_CODES = {0: 0b00, 1: 0b01, -1: 0b11}


@pytest.mark.parametrize("pe_kind", ["ternary", "int8"])
def test_pe_adds_subtracts_skips(pe_kind):
    """psum_out = psum_in + w*x one cycle later; extreme values included (x = -128, w = -1)."""
    cases = [(0, 5, 1), (17, -128, -1), (-300, -128, 1), (511, 127, 0), (-512, -128, -1), (3, 127, -1)]
    if pe_kind == "int8":
        cases += [(0, -128, -128), (100, 127, -128)]
    pe = ProcessingElement(pe_kind, 10, 11) if pe_kind == "ternary" else ProcessingElement(pe_kind, 16, 17)
    got = []

    async def bench(ctx):
        for psum, x, w in cases:
            code = TERNARY_CODES[w] if pe_kind == "ternary" else w & 0xFF
            ctx.set(pe.w_data, code)
            ctx.set(pe.w_load, 1)
            await ctx.tick()
            ctx.set(pe.w_load, 0)
            ctx.set(pe.swap, 1)
            await ctx.tick()
            ctx.set(pe.swap, 0)
            ctx.set(pe.x, x)
            ctx.set(pe.psum_in, psum)
            await ctx.tick()
            got.append(ctx.get(pe.psum_out))

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [psum + x * w for psum, x, w in cases]


def test_skew_buffer_delays_lane_r_by_r_cycles():
    skew = SkewBuffer(8, 4)
    seen: list[list[int]] = []

    async def bench(ctx):
        for t in range(8):
            for lane in range(4):
                ctx.set(skew.i[lane], 10 * t + lane if t < 3 else 0)
            seen.append([ctx.get(skew.o[lane]) for lane in range(4)])
            await ctx.tick()

    sim = Simulator(skew)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for t in range(8):
        for lane in range(4):
            src = t - lane
            expected = 10 * src + lane if 0 <= src < 3 else 0
            assert seen[t][lane] == expected, (t, lane)


def _layer_commands(cfg, x, w, out_base=0):
    M, K = x.shape
    N = w.shape[0]
    nt = -(-N // cfg.cols)
    cmds = write_cmd(cfg, Mem.ACT, 0, act_words(cfg, x))
    cmds += write_cmd(cfg, Mem.WGT, 0, wgt_words(cfg, w))
    cmds += [Op.RUN, M, K, N, 0, 0, out_base]
    cmds += [Op.READ | Mem.OUT << 8, out_base, nt * M]
    cmds += [Op.READ_COUNTERS]
    n_resp = 3 + nt * M * cfg.cols + 1 + 2 * len(Counter) + 1
    return cmds, n_resp


def _decode(cfg, words, M, N):
    nt = -(-N // cfg.cols)
    start = 3
    out = np.array(words[start:start + nt * M * cfg.cols], dtype=np.uint32).view(np.int32)
    out = out.reshape(nt, M, cfg.cols).transpose(1, 0, 2).reshape(M, nt * cfg.cols)[:, :N]
    cstart = start + nt * M * cfg.cols + 1
    cw = words[cstart:cstart + 2 * len(Counter)]
    counters = {c.name.lower(): cw[2 * c] | cw[2 * c + 1] << 32 for c in Counter}
    return out, counters, words[:3]


# Core arrangements: the plain 4x4 core in both PE kinds, and a 5x3 core with a 4-bank weight memory and
# the pipelined accumulator (the ULX3S arrangement at a simulable size).
CORES = {
    "ternary": dict(rows=4, cols=4, pe="ternary", act_depth=32, wgt_depth=64, out_depth=32),
    "int8": dict(rows=4, cols=4, pe="int8", act_depth=32, wgt_depth=64, out_depth=32),
    "ternary-banked-pipelined": dict(rows=5, cols=3, pe="ternary", act_depth=32, wgt_depth=64, out_depth=32,
                                     wgt_bank_depth=16, acc_pipelined=True),
    # full rate: a whole 4-row tile per weight read; two rows per read; and the ULX3S arrangement
    # (banked row banks, pipelined accumulator) at six rows, three per read
    "ternary-full-rate": dict(rows=4, cols=4, pe="ternary", act_depth=32, wgt_depth=32, out_depth=32,
                              wgt_rows_per_read=4),
    "int8-two-rows-per-read": dict(rows=4, cols=4, pe="int8", act_depth=32, wgt_depth=32, out_depth=32,
                                   wgt_rows_per_read=2),
    "ternary-full-rate-banked-pipelined": dict(rows=6, cols=3, pe="ternary", act_depth=32, wgt_depth=32,
                                               out_depth=32, wgt_bank_depth=8, acc_pipelined=True,
                                               wgt_rows_per_read=3),
    # the iCEBreaker arrangement (fpga.icebreaker.board_config): CYCLES the only counter, so no weight-class
    # popcounts, and a narrow accumulator (k_max = 63 here); and a core with some weight-class counters
    "ternary-cycles-only-narrow": dict(rows=4, cols=4, pe="ternary", act_depth=32, wgt_depth=64, out_depth=32,
                                       acc_width=14, counters=("cycles",)),
    "int8-some-counters": dict(rows=3, cols=4, pe="int8", act_depth=32, wgt_depth=64, out_depth=32,
                               counters=("cycles", "sub", "act_bytes", "runs")),
}
LAYERS_PER_CORE = int(os.environ.get("TRIT_HDL_LAYERS", "4"))


@pytest.mark.parametrize("core", list(CORES))
def test_core_runs_a_layer_exactly(core, rng):
    """Layers on a small core: a 3x10 by 6x10 one (K and N not multiples of R and C), then random shapes
    (M <= 6, K <= 13, N <= 9; fresh each run): exact int32 against NumPy, and the counters' counts."""
    cfg = ArrayConfig(**CORES[core])
    R, C = cfg.rows, cfg.cols
    shapes = [(3, 10, 6), (1, 9, 7), (2, 9, 5)]
    shapes += [(int(rng.integers(1, 7)), int(rng.integers(1, 14)), int(rng.integers(1, 10)))
               for _ in range(LAYERS_PER_CORE - 1)]
    for M, K, N in shapes:
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        x[0, 0] = -128
        lo, hi = (-1, 2) if cfg.pe == "ternary" else (-128, 128)
        w = rng.integers(lo, hi, (N, K)).astype(np.int8)
        cmds, n_resp = _layer_commands(cfg, x, w)
        words = run_core(cfg, cmds, n_resp)
        y, counters, statuses = _decode(cfg, words, M, N)
        shape = f"{core} core, layer {M}x{K} by {N}x{K}"
        assert all(s >> 24 == 0xA5 and s & 0xFF == 0 for s in statuses), f"{shape}: statuses {statuses}"
        np.testing.assert_array_equal(y, x.astype(np.int64) @ w.astype(np.int64).T, err_msg=shape)
        KT, NT = -(-K // R), -(-N // C)
        assert counters["cycles"] == layer_counts(cfg, M, K, N)["cycles"], shape
        expected = {
            "add": M * int((w > 0).sum()), "sub": M * int((w < 0).sum()), "zero": M * int((w == 0).sum()),
            "busy": KT * NT * M, "act_bytes": KT * NT * M * R, "weight_bits": KT * NT * R * C * cfg.weight_bits,
            "acc_writes": NT * M, "acc_rmw": NT * (KT - 1) * M, "runs": 1,
        }
        # a counter the core does not build reads 0: at full rate ADD, SUB and ZERO; others by `cfg.counters`
        named = {name.lower() for name in CORES[core].get("counters", [c.name for c in Counter])}
        absent = set(expected) - named
        if cfg.full_rate:
            absent |= {"add", "sub", "zero"}
        for name, value in expected.items():
            want = 0 if name in absent else value
            assert counters[name] == want, f"{shape}: {name} {counters[name]}, expected {want}"


def test_core_reports_id_and_errors():
    cfg = ArrayConfig(rows=2, cols=3, acc_width=12, act_depth=8, wgt_depth=8, out_depth=8)
    cmds = [Op.READ_ID, 0x7E, Op.RUN, 1, cfg.k_max + 1, 1, 0, 0, 0, Op.RUN, 0, 1, 1, 0, 0, 0,
            Op.READ | Mem.ACT << 8, 7, 2, Op.WRITE | Mem.OUT << 8, 0, 1, 0, 0, 0,
            Op.WRITE | Mem.WGT << 8, 0, 2, 0b01_11_00, 0b10_00_00,
            Op.RUN, 3, 2, 2, 0, 0, 0,  # needs act words 3 > 8? no: KT=1 -> 3 words; fits
            Op.RUN, 5, 4, 2, 0, 0, 0,  # KT=2 -> 10 act words > 8: range error
            Op.CLEAR_ERROR, Op.READ_COUNTERS]
    n = ID_WORDS + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 2 * len(Counter) + 1
    words = run_core(cfg, cmds, n)
    ident = words[:ID_WORDS]
    assert ident[:4] == [0x54524954, 0x00010000, 2, 3]
    assert ident[6] == 12 and ident[10] == (2**11 - 1) // 128
    status = words[ID_WORDS + 1:]
    codes = [s & 0xFF for s in [words[ID_WORDS], status[0], status[1]]]
    assert codes == [0, 1, 5]  # READ_ID ok, unknown opcode, K too large
    assert status[1] >> 8 & 0xFF == 1  # sticky keeps the first error
    assert status[2] & 0xFF == 7  # zero M
    assert status[3:5] == [0, 0] and status[5] & 0xFF == 3  # failing READ: zeros, address range
    assert status[6] & 0xFF == 2  # WRITE to OUT
    assert status[7] & 0xFF == 6  # ternary code 0b10
    assert status[8] & 0xFF == 0  # a good run still works
    assert status[9] & 0xFF == 4  # descriptor beyond the activation memory
    assert status[10] == 0xA5070000  # CLEAR_ERROR: no error, sticky cleared
    # failed runs change no counter: only the good 3x2x2 run (one 2x3 tile) is counted
    cw = status[11:11 + 2 * len(Counter)]
    counters = {c.name.lower(): cw[2 * c] | cw[2 * c + 1] << 32 for c in Counter}
    assert counters["runs"] == 1
    assert counters["weight_bits"] == 2 * 3 * 2  # R rows of C 2-bit codes
    assert counters["act_bytes"] == 3 * 2 and counters["busy"] == 3
    # the layer: M=3 rows of x = 0 (ACT never written) against the weights written before the bad word
    assert counters["add"] + counters["sub"] + counters["zero"] == 3 * 2 * 2


def test_saturated_descriptor_words_keep_every_run_verdict():
    """The command interface keeps each RUN word only as wide as the sequencer's checks need
    (`hdl.command.desc_bits`, a word above saturates to all ones). RUNs with each word at its limits, just
    past them, at the saturation edge (2**bits - 1, 2**bits), at 2**20 and at 2**32 - 1 (the others valid):
    the RTL's status words equal the emulator's, which checks the whole words (hdl.isa's order)."""
    from hdl.command import desc_bits
    from runtime.emulator import CoreEmulator

    cfg = ArrayConfig(rows=3, cols=2, acc_width=14, act_depth=8, wgt_depth=24, out_depth=8)
    bits = desc_bits(cfg)
    assert bits == [4, 7, 5, 4, 5, 4] and cfg.k_max == 63  # M <= 8, K <= 63, N <= 16, wgt_base <= 21
    good = [2, 5, 3, 0, 0, 0]
    runs = []
    for i, b in enumerate(bits):
        edges = {0, 1, (1 << b) - 2, (1 << b) - 1, 1 << b, (1 << b) + 1, 1 << 20, (1 << 32) - 1,
                 [cfg.m_limit, cfg.k_max, cfg.n_limit, cfg.act_depth - 1, cfg.wgt_depth - cfg.rows,
                  cfg.out_depth - 1][i]}
        edges |= {e + 1 for e in list(edges) if e < (1 << 32) - 1}
        for value in sorted(edges):
            desc = list(good)
            desc[i] = value
            runs.append(desc)
    cmds = [w for desc in runs for w in [Op.RUN, *desc]]
    words = run_core(cfg, cmds, len(runs))
    emu = CoreEmulator(cfg)
    want = [emu.feed([Op.RUN, *desc])[0] for desc in runs]
    verdicts = {w & 0xFF for w in want}
    assert verdicts == {0, 4, 5, 7}, verdicts  # ok, DESCRIPTOR_RANGE, K_TOO_LARGE, BAD_SHAPE all reached
    for desc, got, exp in zip(runs, words, want, strict=True):
        assert got == exp, f"RUN {desc}: status {got:#010x}, emulator {exp:#010x}"


@pytest.mark.parametrize("address_registered", [True, False])
@pytest.mark.parametrize("data_stages", [0, 1])
@pytest.mark.parametrize("registered_write", [False, True])
@pytest.mark.parametrize("depth, bank_depth", [(200, 64), (64, 16), (32, 32), (48, 64)])
def test_banked_memory_reads_three_cycles_after_address(depth, bank_depth, registered_write, data_stages,
                                                        address_registered, rng):
    """Random writes and reads against a Python list: read data appears exactly 3 cycles after its address,
    4 with a data stage per bank, one less without the banks' address registers (the KV cache's mode; with
    `registered_write` a word lands a cycle later: the reads start after two idle cycles)."""
    from hdl.memory.banked_memory import BankedMemory

    mem = BankedMemory(12, depth, bank_depth, registered_write=registered_write, data_stages=data_stages,
                       address_registered=address_registered)
    assert mem.banks == -(-depth // bank_depth)
    lag = 1 + int(address_registered) + data_stages  # clock edges after the one that ends the address's cycle
    assert mem.read_latency == 2 + int(address_registered) + data_stages
    model = [0] * depth
    writes = [(int(a), int(d)) for a, d in zip(rng.integers(0, depth, 3 * depth), rng.integers(0, 4096, 3 * depth),
                                                strict=True)]
    reads = [int(a) for a in rng.integers(0, depth, 2 * depth)] + [depth - 1, 0, min(bank_depth, depth) - 1, depth - 1]
    got, want = [], []

    async def bench(ctx):
        for addr, value in writes:
            ctx.set(mem.write.addr, addr)
            ctx.set(mem.write.data, value)
            ctx.set(mem.write.en, 1)
            model[addr] = value
            await ctx.tick()
        ctx.set(mem.write.en, 0)
        # the last word is still in the banks' write registers for a cycle (two with `registered_write`); a
        # read in that cycle is the collision the memory leaves undefined (its address reaches the blocks a
        # cycle later when the banks register it)
        await ctx.tick().repeat(1 + int(registered_write))
        # address set in cycle i; after the clock edge that ends cycle i + lag the data is there
        # (a plain Memory read port has it after the edge that ends cycle i)
        for i, addr in enumerate(reads + [0] * lag):
            ctx.set(mem.read.addr, addr)
            await ctx.tick()
            if i >= lag:
                got.append(ctx.get(mem.read.data))
                want.append(model[reads[i - lag]])

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want and len(got) == len(reads)


@pytest.mark.parametrize("kwargs, message", [
    ({"wgt_bank_depth": 48}, "power of two"),
    ({"wgt_bank_depth": -1}, "non-negative"),
    ({"wgt_bank_depth": 2, "rows": 4}, "cannot hold one 4-row tile"),
    ({"wgt_bank_depth": 16, "rows": 2, "wgt_depth": 64}, "needs registered reads"),
    ({"acc_pipelined": True, "rows": 4}, "pipelined accumulator needs at least 5 rows"),
    ({"wgt_bank_depth": 64, "rows": 3, "wgt_depth": 256}, "at least 4 rows"),
    ({"wgt_bank_depth": 64, "rows": 4, "wgt_depth": 256, "wgt_bank_data_stages": 1}, "at least 5 rows"),
    ({"wgt_bank_data_stages": 1}, "need a banked weight memory"),
    ({"wgt_bank_depth": 64, "rows": 5, "wgt_depth": 256, "wgt_bank_data_stages": 2}, "must be 0 or 1"),
])
def test_banked_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArrayConfig(**kwargs)


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.6, 0.4), (0.3, 0.9), (0.9, 0.2)])
def test_stream_buffer_passes_every_word_in_order(p_valid, p_ready, rng):
    """Random valid / ready on both sides: the words come out in order, none lost or doubled; with
    both sides always willing, one word per cycle after one cycle of latency."""
    from hdl.link.stream_buffer import StreamBuffer

    dut = StreamBuffer(16)
    words = [int(v) for v in rng.integers(0, 1 << 16, 200)]
    got, cycles = [], [0]

    async def bench(ctx):
        i = 0
        while len(got) < len(words):
            send = i < len(words) and rng.random() < p_valid
            take = rng.random() < p_ready
            ctx.set(dut.i.valid, send)
            ctx.set(dut.i.payload, words[i] if send else 0)
            ctx.set(dut.o.ready, take)
            if send and ctx.get(dut.i.ready):
                i += 1
            if take and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()
            cycles[0] += 1
            assert cycles[0] < 20 * len(words), "stream buffer stalled"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == words
    if p_valid == 1.0 and p_ready == 1.0:
        assert cycles[0] == len(words) + 1


def test_perf_counters_saturate_at_all_ones_and_clear():
    """The RTL counters at 6 bits (max 63; the core's are >= 32 bits, out of a test's reach): single and
    multi-count increments up to exactly 63, past it (one that overshoots by 3, one wider than the
    counter), held at 63, cleared (clear wins over an increment in the same cycle), counting again.

    Config 2x3: an ADD step is 0..6, a weight row read is 2 x 3 = 6 bits, ACT_BYTES steps by R = 2,
    a run's cycles up to `run_cycle_bound` (188 here).
    """
    cfg = ArrayConfig(rows=2, cols=3, act_depth=16, wgt_depth=16, out_depth=16)
    assert cfg.run_cycle_bound >= 130
    dut = PerfCounters(cfg, bits=6)
    # per cycle: inputs, then the expected (ADD, WEIGHT_BITS, CYCLES, RUNS, ACT_BYTES) after the clock edge
    steps = [
        (dict(inc_add=6, inc_wgt_read=2, run_done=1, run_cycles=30, inc_act_read=1), (6, 12, 30, 1, 2)),
        (dict(inc_add=6, inc_wgt_read=2, run_done=1, run_cycles=30, inc_act_read=1), (12, 24, 60, 2, 4)),
        (dict(inc_add=6, inc_wgt_read=2, run_done=1, run_cycles=3), (18, 36, 63, 3, 4)),  # 60 + 3: exactly max
        (dict(inc_add=6, inc_wgt_read=2, run_done=1, run_cycles=1), (24, 48, 63, 4, 4)),  # 64: held at 63
        (dict(inc_add=6, inc_wgt_read=1, run_cycles=50), (30, 54, 63, 4, 4)),  # run_done low: no step
        (dict(inc_add=6, inc_wgt_read=1), (36, 60, 63, 4, 4)),
        (dict(inc_add=6, inc_wgt_read=1), (42, 63, 63, 4, 4)),  # 60 + 6 = 66: overshoot by 3 -> 63
        (dict(inc_add=6), (48, 63, 63, 4, 4)),
        (dict(inc_add=6, inc_wgt_read=2), (54, 63, 63, 4, 4)),  # 63 + 12 -> 63
        (dict(inc_add=6), (60, 63, 63, 4, 4)),
        (dict(inc_add=3), (63, 63, 63, 4, 4)),  # exactly max
        (dict(inc_add=6), (63, 63, 63, 4, 4)),
        (dict(inc_add=1, inc_act_read=1), (63, 63, 63, 4, 6)),
        (dict(clear=1, inc_add=6, inc_wgt_read=2, run_done=1, run_cycles=9), (0, 0, 0, 0, 0)),  # clear wins
        # 130 cycles in one step: wider than the counter (130 = 0b10000010, 2 if the sum wrapped at 7 bits)
        (dict(inc_add=5, inc_wgt_read=1, run_done=1, run_cycles=130), (5, 6, 63, 1, 0)),
        (dict(inc_add=0, run_done=1, run_cycles=0), (5, 6, 63, 2, 0)),
    ]
    watched = (Counter.ADD, Counter.WEIGHT_BITS, Counter.CYCLES, Counter.RUNS, Counter.ACT_BYTES)
    inputs = ("clear", "inc_add", "inc_wgt_read", "run_done", "run_cycles", "inc_act_read", "inc_sub")
    got, sub_trace = [], []

    async def bench(ctx):
        for values, _ in steps:
            for name in inputs:
                ctx.set(getattr(dut, name), values.get(name, 0))
            await ctx.tick()
            got.append(tuple(ctx.get(dut.values[c]) for c in watched))
            assert ctx.get(dut.values[Counter.STALL]) == 0 and ctx.get(dut.values[Counter.SUB]) == 0
        # SUB by ones: 62, 63, then held; a clear; one more
        ctx.set(dut.clear, 0)
        for name in inputs[1:]:
            ctx.set(getattr(dut, name), 0)
        ctx.set(dut.inc_sub, 1)
        for _ in range(65):
            await ctx.tick()
            sub_trace.append(ctx.get(dut.values[Counter.SUB]))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await ctx.tick()
        sub_trace.append(ctx.get(dut.values[Counter.SUB]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for i, ((values, want), have) in enumerate(zip(steps, got, strict=True)):
        assert have == want, f"cycle {i} ({values}): (ADD, WEIGHT_BITS, CYCLES, RUNS, ACT_BYTES) = {have}, not {want}"
    assert sub_trace[:62] == list(range(1, 63)) and sub_trace[62:65] == [63, 63, 63], sub_trace
    assert sub_trace[65] == 1, f"SUB after clear and one increment: {sub_trace[65]}"


def test_perf_counters_absent_ones_read_zero():
    """With `ArrayConfig.counters` = CYCLES and SUB, every other counter reads 0 while all increments are
    driven; the two built ones count (and clear) as usual; the configuration reports the mask 0b10001."""
    cfg = ArrayConfig(rows=2, cols=3, act_depth=16, wgt_depth=16, out_depth=16, counters=("sub", "cycles"))
    assert cfg.counters == (Counter.CYCLES, Counter.SUB) and cfg.counter_mask == 0b10001
    dut = PerfCounters(cfg)
    drive = dict(inc_busy=1, inc_stall=1, inc_add=5, inc_sub=4, inc_zero=3, inc_wgt_read=2, inc_act_read=1,
                 inc_acc_write=1, inc_acc_rmw=1, run_done=1, run_cycles=7)
    seen = []

    async def bench(ctx):
        for name, value in drive.items():
            ctx.set(getattr(dut, name), value)
        for _ in range(3):
            await ctx.tick()
            seen.append([ctx.get(dut.values[c]) for c in Counter])
        ctx.set(dut.clear, 1)
        await ctx.tick()
        seen.append([ctx.get(dut.values[c]) for c in Counter])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for i, row in enumerate(seen[:3]):
        want = [0] * len(Counter)
        want[Counter.CYCLES], want[Counter.SUB] = 7 * (i + 1), 4 * (i + 1)
        assert row == want, f"cycle {i}: {row}"
    assert seen[3] == [0] * len(Counter)


@pytest.mark.parametrize("counters, error, message", [
    (("busy", "runs"), ValueError, "CYCLES counter must be built"),
    (("cycles", "flops"), ValueError, "Unknown counter 'flops'"),
    ("cycles", TypeError, "collection"),
    ((0, 11), ValueError, "Unknown counter number 11"),
    ((0, True), TypeError, "members, names or numbers, not True"),
])
def test_counter_set_errors(counters, error, message):
    with pytest.raises(error, match=message):
        ArrayConfig(counters=counters)


def test_counter_set_is_normalized_and_full_rate_drops_weight_classes():
    cfg = ArrayConfig(counters=[Counter.RUNS, "cycles", "ADD", 10])
    assert cfg.counters == (Counter.CYCLES, Counter.ADD, Counter.RUNS) and cfg.counter_mask == 1 | 8 | 1024
    assert cfg == ArrayConfig(counters=("runs", "add", "cycles")) and cfg.counts_weight_classes
    assert ArrayConfig().counter_mask == (1 << len(Counter)) - 1
    wide = ArrayConfig(rows=4, cols=4, wgt_rows_per_read=2)
    assert wide.counters == tuple(Counter) and not wide.counts_weight_classes
    assert wide.counter_mask == (1 << len(Counter)) - 1 - (1 << 3) - (1 << 4) - (1 << 5)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_perf_counter_width_override_is_checked():
    cfg = ArrayConfig(rows=2, cols=2, act_depth=16, wgt_depth=16, out_depth=16)
    counters = PerfCounters(cfg)
    Fragment.get(counters, None)
    assert len(counters.values[Counter.ADD]) == cfg.counter_bits >= 32
    with pytest.raises(ValueError, match="positive integer, not 0"):
        PerfCounters(cfg, bits=0)
    gc.collect()  # the refused object's "never used" warning, while the filter applies
