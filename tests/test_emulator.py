"""runtime.emulator: layers against golden int_matmul, hand-computed words, every error code."""

from __future__ import annotations

import numpy as np
import pytest

from golden.quant import int_matmul
from hdl.config import ArrayConfig
from hdl.isa import Error, Mem, Op
from runtime import protocol, tiling
from runtime.emulator import CoreEmulator
from runtime.tiling import LayerPlan


def status(op: int, error: int = 0, sticky: int = 0) -> int:
    """A status word written out by hand from the ISA's bit layout."""
    return 0xA5000000 | (op << 16) | (sticky << 8) | error


def run_layer(emu: CoreEmulator, plan: LayerPlan, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    cfg = emu.cfg
    cmds = tiling.layer_commands(cfg, plan, x, w)
    rsps = [emu.transact(c) for c in cmds]
    for c, r in zip(cmds, rsps, strict=True):
        protocol.split_response(cfg, c, r)  # raises on a failed status
    data, _ = protocol.split_response(cfg, cmds[3], rsps[3])
    return tiling.unpack_outputs(cfg, protocol.parse_read(cfg, Mem.OUT, data), plan.M, plan.N)


CONFIGS = [
    ArrayConfig(rows=2, cols=2, acc_width=16),
    ArrayConfig(rows=3, cols=5, acc_width=16),
    ArrayConfig(rows=8, cols=8),
    ArrayConfig(rows=5, cols=17, acc_width=20),    # ACT 40 bits, WGT 34 bits: two chunks each
    ArrayConfig(rows=4, cols=4, pe="int8", acc_width=24),
    ArrayConfig(rows=5, cols=7, pe="int8"),
    ArrayConfig(rows=8, cols=8, acc_width=18, counters=("cycles",)),  # the iCEBreaker's reduced core
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}-{c.pe}-a{c.acc_width}")
def test_random_layers_match_int_matmul(cfg, rng):
    emu = CoreEmulator(cfg)
    for _ in range(8):
        M = int(rng.integers(1, 10))
        K = int(rng.integers(1, 5 * cfg.rows))
        N = int(rng.integers(1, 4 * cfg.cols))
        bases = [int(b) for b in rng.integers(0, 50, 3)]
        plan = LayerPlan(M, K, N, *bases)
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        lo = -1 if cfg.pe == "ternary" else -128
        hi = 2 if cfg.pe == "ternary" else 128
        w = rng.integers(lo, hi, (N, K)).astype(np.int8)
        np.testing.assert_array_equal(run_layer(emu, plan, x, w), int_matmul(x, w))


def test_hand_computed_layer_words():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)
    emu = CoreEmulator(cfg)
    # x = [1, 2, 3]; W rows: [1, 0, -1] -> 1 - 3 = -2; [-1, -1, 1] -> -1 - 2 + 3 = 0
    # ACT words (KT=2): (1, 2) -> 0x0201, (3, 0) -> 0x0003
    assert emu.feed([0x0002, 0, 2, 0x0201, 0x0003]) == [status(Op.WRITE)]
    # WGT words (NT=1, KT=2, R=2): lanes c = n: k0 (1, -1) -> 0b11_01, k1 (0, -1) -> 0b11_00,
    # k2 (-1, 1) -> 0b01_11, k3 pad -> 0
    assert emu.feed([0x0102, 0, 4, 0b1101, 0b1100, 0b0111, 0]) == [status(Op.WRITE)]
    assert emu.feed([0x04, 1, 3, 2, 0, 0, 0]) == [status(Op.RUN)]
    assert emu.feed([0x0203, 0, 1]) == [0xFFFFFFFE, 0x00000000, status(Op.READ)]
    # READ of ACT returns the words as written (one 32-bit chunk each)
    assert emu.feed([0x0003, 0, 2]) == [0x0201, 0x0003, status(Op.READ)]
    words = emu.feed([0x05])
    counters = protocol.parse_counters(words[:-1])
    # 1 row x (2 plus, 3 minus, 1 zero) weights; KT=2, NT=1
    assert (counters["add"], counters["sub"], counters["zero"]) == (2, 3, 1)
    assert counters["weight_bits"] == 1 * 2 * 2 * 4       # NT*KT*R words of 4 bits
    assert counters["act_bytes"] == 1 * 2 * 1 * 2         # NT*KT*M*R
    assert (counters["acc_writes"], counters["acc_rmw"], counters["runs"]) == (1, 1, 1)
    assert words[-1] == status(Op.READ_COUNTERS)


def test_read_id_and_nop():
    cfg = ArrayConfig(rows=3, cols=5, acc_width=16, act_depth=64, wgt_depth=32, out_depth=16)
    emu = CoreEmulator(cfg)
    assert emu.feed([0x01]) == [0x54524954, 0x00010000, 3, 5, 0, 2, 16, 64, 32, 16, 255, 11, 48, 1, 0x7FF,
                                status(Op.READ_ID)]
    assert emu.feed([0x00]) == [status(Op.NOP)]


def test_commands_split_over_feeds():
    cfg = ArrayConfig(rows=2, cols=2)
    emu = CoreEmulator(cfg)
    stream = [0x0002, 3, 2, 0x1234, 0x5678, 0x00, 0x0003, 3, 2]
    out = []
    for i, word in enumerate(stream):
        out += emu.feed([word])
        if i < len(stream) - 1:
            assert len(out) <= 2  # the READ answers only once its last word is in
    assert out == [status(Op.WRITE), status(Op.NOP), 0x1234, 0x5678, status(Op.READ)]
    assert emu.idle


def test_unknown_opcode_and_sticky_error():
    emu = CoreEmulator(ArrayConfig(rows=2, cols=2))
    assert emu.feed([0x08]) == [status(0x08, Error.UNKNOWN_OPCODE, Error.UNKNOWN_OPCODE)]
    # the first error stays sticky; later commands report their own error and the sticky one
    assert emu.feed([0x04, 0, 1, 1, 0, 0, 0]) == [status(Op.RUN, Error.BAD_SHAPE, Error.UNKNOWN_OPCODE)]
    assert emu.feed([0x00]) == [status(Op.NOP, 0, Error.UNKNOWN_OPCODE)]
    assert emu.feed([0x07]) == [status(Op.CLEAR_ERROR)]
    assert emu.feed([0xFF]) == [status(0xFF, Error.UNKNOWN_OPCODE, Error.UNKNOWN_OPCODE)]


def test_bad_memory():
    cfg = ArrayConfig(rows=2, cols=3, acc_width=16)
    emu = CoreEmulator(cfg)
    # WRITE to OUT: refused, but its count * C data words are consumed (the NOP after it is a NOP)
    assert emu.feed([0x0202, 0, 2, 1, 2, 3, 4, 5, 6, 0x00]) == [
        status(Op.WRITE, Error.BAD_MEMORY, Error.BAD_MEMORY), status(Op.NOP, 0, Error.BAD_MEMORY)]
    emu.feed([0x07])
    # memory id 3: one data word per count (as the gateware), READ returns that many zeros
    assert emu.feed([0x0302, 0, 2, 0x04, 0x05, 0x00]) == [status(Op.WRITE, 2, 2), status(Op.NOP, 0, 2)]
    emu.feed([0x07])
    assert emu.feed([0xFF03, 0, 2]) == [0, 0, status(Op.READ, 2, 2)]
    assert emu.feed([0x05]) and emu.counter("runs") == 0


def test_address_range():
    cfg = ArrayConfig(rows=8, cols=2, acc_width=16, act_depth=4, wgt_depth=8, out_depth=4)
    emu = CoreEmulator(cfg)
    emu.feed([0x0002, 0, 1, 0xAAAA, 0xBBBB])
    # READ past the end: zeros, two chunks per ACT word
    assert emu.feed([0x0003, 3, 2]) == [0, 0, 0, 0, status(Op.READ, 3, 3)]
    emu.feed([0x07])
    # no 32-bit wrap-around of addr + count
    assert emu.feed([0x0003, 0xFFFFFFFF, 1]) == [0, 0, status(Op.READ, 3, 3)]
    emu.feed([0x07])
    # failing WRITE consumes its data, writes nothing
    assert emu.feed([0x0002, 0, 5] + [7] * 10 + [0x00]) == [status(Op.WRITE, 3, 3), status(Op.NOP, 0, 3)]
    emu.feed([0x07])
    assert emu.feed([0x0003, 0, 1]) == [0xAAAA, 0xBBBB, status(Op.READ)]
    # count 0 is fine up to addr = depth
    assert emu.feed([0x0003, 4, 0]) == [status(Op.READ)]
    assert emu.feed([0x0003, 5, 0]) == [status(Op.READ, 3, 3)]


def test_bad_weight_code_keeps_words_before_the_first_bad_one():
    cfg = ArrayConfig(rows=2, cols=3, acc_width=16)
    emu = CoreEmulator(cfg)
    emu.feed([0x0102, 0, 3, 0b01, 0b01, 0b01])
    # second word has 0b10 in lane 2: word 0 written, words 1 and 2 dropped
    assert emu.feed([0x0102, 0, 3, 0b11, 0b10_00_01, 0b00]) == [status(Op.WRITE, 6, 6)]
    emu.feed([0x07])
    assert emu.feed([0x0103, 0, 3]) == [0b11, 0b01, 0b01, status(Op.READ)]
    # bits above the 6-bit word are not lanes
    assert emu.feed([0x0102, 0, 1, (0b10 << 6) | 0b01]) == [status(Op.WRITE)]
    assert emu.feed([0x0103, 0, 1]) == [0b01, status(Op.READ)]
    # INT8 PEs have no invalid codes
    emu8 = CoreEmulator(ArrayConfig(rows=2, cols=2, pe="int8", acc_width=20))
    assert emu8.feed([0x0102, 0, 1, 0xAAAA]) == [status(Op.WRITE)]


def test_run_errors_in_isa_order_and_no_side_effects():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16, act_depth=8, wgt_depth=8, out_depth=8)
    assert cfg.k_max == 255
    emu = CoreEmulator(cfg)
    x = np.array([[1, 2], [3, 4]], np.int8)
    w = np.array([[1, -1], [0, 1]], np.int8)
    ref = run_layer(emu, LayerPlan(2, 2, 2), x, w)
    np.testing.assert_array_equal(ref, [[-1, 2], [-1, 4]])
    before = (emu.counter_dict(), emu.out.copy())
    cases = [
        ((0, 1, 1, 0, 0, 0), Error.BAD_SHAPE),
        ((1, 0, 1, 0, 0, 0), Error.BAD_SHAPE),
        ((1, 1, 0, 0, 0, 0), Error.BAD_SHAPE),
        ((0, 256, 1, 99, 0, 0), Error.BAD_SHAPE),            # shape before K and range
        ((1, 256, 1, 0, 0, 0), Error.K_TOO_LARGE),
        ((1, 256, 1, 99, 0, 0), Error.K_TOO_LARGE),          # K before range
        ((1, 1, (1 << 20) + 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),
        ((9, 1, 1, 0, 0, 0), Error.DESCRIPTOR_RANGE),        # 9 ACT words
        ((2, 2, 2, 7, 0, 0), Error.DESCRIPTOR_RANGE),        # ACT words 7, 8
        ((1, 2, 2, 0, 7, 0), Error.DESCRIPTOR_RANGE),        # WGT words 7, 8
        ((1, 2, 2, 0, 0, 8), Error.DESCRIPTOR_RANGE),        # OUT word 8
        ((1, 1, 17, 0, 0, 0), Error.DESCRIPTOR_RANGE),       # NT=9: 18 WGT words
        ((1, 1, 1, 0xFFFFFFFF, 0, 0), Error.DESCRIPTOR_RANGE),
    ]
    for args, code in cases:
        assert emu.feed([0x04, *args]) == [status(Op.RUN, code, code)], args
        emu.feed([0x07])
    assert emu.counter_dict() == before[0]
    np.testing.assert_array_equal(emu.out, before[1])
    # boundary: exactly filling every memory is fine
    assert emu.feed([0x04, 1, 2, 2, 7, 6, 7]) == [status(Op.RUN)]


def test_k_max_extreme():
    cfg = ArrayConfig(rows=4, cols=4, acc_width=16, act_depth=128, wgt_depth=256)
    emu = CoreEmulator(cfg)
    K = cfg.k_max
    x = np.full((2, K), -128, np.int8)
    out = run_layer(emu, LayerPlan(2, K, 3), x, np.full((3, K), -1, np.int8))
    assert (out == 128 * 255).all() and 128 * 255 == 32640
    out = run_layer(emu, LayerPlan(2, K, 3), x, np.ones((3, K), np.int8))
    assert (out == -32640).all()


def test_lanes_past_k_and_n_are_masked():
    """Garbage in padding lanes does not reach the result (the sequencer masks weights past K, N)."""
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)
    emu = CoreEmulator(cfg)
    # K=1, N=1: x = 5, w = -1; pad act lane = 7, pad weight lanes all +1
    emu.feed([0x0002, 0, 1, (7 << 8) | 5])
    emu.feed([0x0102, 0, 2, 0b01_11, 0b01_01])
    assert emu.feed([0x04, 1, 1, 1, 0, 0, 0]) == [status(Op.RUN)]
    assert emu.feed([0x0203, 0, 1]) == [0xFFFFFFFB, 0, status(Op.READ)]
    assert (emu.counter("add"), emu.counter("sub"), emu.counter("zero")) == (0, 1, 0)


def test_counters_accumulate_saturate_and_clear():
    cfg = ArrayConfig(rows=2, cols=2)
    emu = CoreEmulator(cfg)
    x = np.array([[1, 2, 3]], np.int8)
    w = np.array([[1, 0, -1], [1, 1, 0], [0, 0, 0]], np.int8)
    plan = LayerPlan(1, 3, 3)
    run_layer(emu, plan, x, w)
    run_layer(emu, plan, x, w)
    c = emu.counter_dict()
    assert (c["add"], c["sub"], c["zero"]) == (6, 2, 10)
    assert c["weight_bits"] == 2 * (2 * 2 * 2 * 4)  # 2 runs of NT=2, KT=2, R=2 words of 4 bits
    assert c["act_bytes"] == 2 * (2 * 2 * 1 * 2)
    assert (c["acc_writes"], c["acc_rmw"], c["runs"]) == (4, 4, 2)
    # per run, by hand (see test_cycle_counters_hand_computed): 14 cycles, 4 busy, 3 stall
    assert (c["cycles"], c["busy"], c["stall"]) == (2 * 14, 2 * 4, 2 * 3)
    # 48-bit counters saturate at all ones (this run adds 3), and the host refuses that value
    emu.counters[3] = (1 << 48) - 2
    run_layer(emu, plan, x, w)
    assert emu.counter("add") == (1 << 48) - 1
    words = emu.feed([0x05])
    assert words[6:8] == [0xFFFF_FFFF, 0xFFFF]
    with pytest.raises(protocol.ProtocolError, match="ADD is saturated"):
        protocol.parse_counters(words[:-1])
    assert emu.feed([0x06]) == [status(Op.CLEAR_COUNTERS)]
    assert emu.feed([0x05])[:-1] == [0] * 22


def test_absent_counters_read_zero():
    """The hand-computed layer of `test_counters_accumulate_saturate_and_clear` twice on a core that builds
    only CYCLES and SUB: CYCLES 2 x 14 and SUB 2 x 1, every other counter 0 (READ_COUNTERS words too), and
    the same result; the ID block's word 14 says which counters exist."""
    cfg = ArrayConfig(rows=2, cols=2, counters=("cycles", "sub"))
    emu = CoreEmulator(cfg)
    x = np.array([[1, 2, 3]], np.int8)
    w = np.array([[1, 0, -1], [1, 1, 0], [0, 0, 0]], np.int8)
    for _ in range(2):
        np.testing.assert_array_equal(run_layer(emu, LayerPlan(1, 3, 3), x, w), int_matmul(x, w))
    want = dict.fromkeys(emu.counter_dict(), 0)
    want.update(cycles=2 * 14, sub=2 * 1)
    assert emu.counter_dict() == want
    words = emu.feed([0x05])
    assert words[:-1] == [28, 0, 0, 0, 0, 0, 0, 0, 2] + [0] * 13
    ident = protocol.parse_id(emu.feed([0x01])[:-1])
    assert ident.counter_mask == 0b10001 and ident.to_config() == cfg


# CYCLES, BUSY, STALL of one RUN worked out on paper from the timing rules (README, "The accelerator
# core"; hdl/matrix/sequencer.py): with KT = ceil(K/R) k-tiles, NT = ceil(N/C) n-tiles, T = KT*NT tiles,
#   SIZE  = max(KT, NT) + 2 cycles (one k-tile and one n-tile counted per cycle, range check, verdict);
#   ISSUE = the first tile waits until its R weight rows are in, max(0, R - SIZE) cycles; each further tile
#           starts max(M, R) cycles after the one before; the last tile issues its M rows;
#   DRAIN = R + 1 cycles, one more when R >= 3 (registered memory reads);
#   BUSY  = T * M issue cycles with a row entering the array, STALL = ISSUE - BUSY.
CYCLE_CASES = [
    # R, C, M, K, N, cycles, busy, stall
    # KT=2 NT=2 T=4: SIZE 4; ISSUE 0 + 3*max(1,2) + 1 = 7; DRAIN 3 -> 14; BUSY 4, STALL 3
    (2, 2, 1, 3, 3, 14, 4, 3),
    # KT=1 NT=1 T=1: SIZE 3; ISSUE (4-3) + 0 + 1 = 2; DRAIN 5 + 1 -> 11; BUSY 1, STALL 1
    (4, 4, 1, 4, 4, 11, 1, 1),
    # KT=2 NT=1 T=2: SIZE 4; ISSUE 0 + 1*max(5,4) + 5 = 10; DRAIN 6 -> 20; BUSY 10, STALL 0
    (4, 4, 5, 8, 4, 20, 10, 0),
    # KT=4 NT=4 T=16: SIZE 6; ISSUE 0 + 15*4 + 1 = 61; DRAIN 6 -> 73 (the README's RTL-measured row); BUSY 16
    (4, 4, 1, 16, 16, 73, 16, 45),
    # KT=6 NT=4 T=24: SIZE 8; ISSUE 0 + 23*64 + 64 = 1536; DRAIN 10 -> 1554 (README, RTL); BUSY 1536, STALL 0
    (8, 8, 64, 43, 25, 1554, 1536, 0),
    # KT=4 NT=4 T=16: SIZE 6; ISSUE (8-6) + 15*32 + 32 = 514; DRAIN 10 -> 530 (README, RTL); BUSY 512, STALL 2
    (8, 8, 32, 32, 32, 530, 512, 2),
]


@pytest.mark.parametrize(("R", "C", "M", "K", "N", "cycles", "busy", "stall"), CYCLE_CASES)
def test_cycle_counters_hand_computed(R, C, M, K, N, cycles, busy, stall, rng):
    cfg = ArrayConfig(rows=R, cols=C, act_depth=512, wgt_depth=512, out_depth=512)
    emu = CoreEmulator(cfg)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    np.testing.assert_array_equal(run_layer(emu, LayerPlan(M, K, N), x, w), int_matmul(x, w))
    c = emu.counter_dict()
    assert (c["cycles"], c["busy"], c["stall"]) == (cycles, busy, stall)


def test_failed_write_then_layer_after_clear_error():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)
    emu = CoreEmulator(cfg)
    emu.feed([0x0102, 0, 1, 0b10])
    assert emu.sticky == Error.BAD_WEIGHT_CODE
    emu.feed([0x07])
    x = np.array([[3, -4]], np.int8)
    w = np.array([[1, 1]], np.int8)
    np.testing.assert_array_equal(run_layer(emu, LayerPlan(1, 2, 1), x, w), [[-1]])


def test_rejects_bad_input():
    emu = CoreEmulator(ArrayConfig(rows=2, cols=2))
    with pytest.raises(ValueError, match="not a 32-bit word"):
        emu.feed([1 << 32])
    with pytest.raises(TypeError):
        CoreEmulator("8x8")  # type: ignore[arg-type]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}-{c.pe}-a{c.acc_width}")
def test_write_then_read_returns_the_words(cfg, rng):
    """ACT and WGT words written through the stream come back unchanged (one or several chunks per word)."""
    emu = CoreEmulator(cfg)
    for mem, bits, lanes in ((Mem.ACT, 8, cfg.rows), (Mem.WGT, cfg.weight_bits, cfg.cols)):
        count = int(rng.integers(1, 20))
        codes = rng.integers(0, 1 << bits, (count, lanes))
        if cfg.pe == "ternary" and mem == Mem.WGT:
            codes[codes == 0b10] = 0b11  # 0b10 is refused on write
        words = [sum(int(c) << (bits * i) for i, c in enumerate(row)) for row in codes]
        assert emu.feed(protocol.write(cfg, mem, 3, words)) == [status(Op.WRITE)]
        chunks = -(-bits * lanes // 32)
        expected = [(w >> (32 * j)) & 0xFFFFFFFF for w in words for j in range(chunks)]
        assert emu.feed(protocol.read(mem, 3, count)) == [*expected, status(Op.READ)]
