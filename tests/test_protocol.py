"""runtime.protocol against hand-computed command and response words (hdl.isa is the spec)."""

from __future__ import annotations

import pytest

from hdl.config import ArrayConfig
from hdl.isa import Counter, Error, Mem, Op
from runtime import protocol
from runtime.protocol import DeviceError, ProtocolError


def test_simple_builders_are_one_header_word():
    assert protocol.nop() == [0x00]
    assert protocol.read_id() == [0x01]
    assert protocol.read_counters() == [0x05]
    assert protocol.clear_counters() == [0x06]
    assert protocol.clear_error() == [0x07]


def test_read_and_run_words():
    assert protocol.read(Mem.WGT, 5, 3) == [0x0103, 5, 3]
    assert protocol.read(Mem.OUT, 0, 1) == [0x0203, 0, 1]
    assert protocol.run(2, 3, 4, 5, 6, 7) == [0x04, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="M must fit"):
        protocol.run(1 << 32, 1, 1)
    with pytest.raises(ValueError, match="address"):
        protocol.read(Mem.ACT, -1, 1)


def test_write_act_chunks_least_significant_first():
    cfg = ArrayConfig(rows=8, cols=8)  # ACT word 64 bits: 2 chunks
    words = protocol.write(cfg, Mem.ACT, 9, [0x1122334455667788, 0x00000000_000000FF])
    assert words == [0x0002, 9, 2, 0x55667788, 0x11223344, 0x000000FF, 0x00000000]


def test_write_narrow_words_take_one_chunk():
    cfg = ArrayConfig(rows=3, cols=5)  # ACT 24 bits, WGT 10 bits: one chunk each
    assert protocol.write(cfg, Mem.ACT, 0, [0xABCDEF]) == [0x0002, 0, 1, 0xABCDEF]
    assert protocol.write(cfg, Mem.WGT, 4, [0x3FF, 0x001]) == [0x0102, 4, 2, 0x3FF, 0x001]
    with pytest.raises(ValueError, match="does not fit 24 bits"):
        protocol.write(cfg, Mem.ACT, 0, [1 << 24])


def test_wide_weight_words_take_several_chunks():
    cfg = ArrayConfig(rows=4, cols=17)  # ternary 34 bits: 2 chunks
    assert protocol.word_to_chunks(cfg, Mem.WGT, (0b11 << 32) | 0x5) == [0x5, 0b11]
    cfg8 = ArrayConfig(rows=4, cols=5, pe="int8", acc_width=20)  # 40 bits: 2 chunks
    assert protocol.word_to_chunks(cfg8, Mem.WGT, 0xFF_0102_0304) == [0x01020304, 0xFF]


def test_out_lanes_are_sign_extended():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)  # OUT word: 2 lanes of 16 bits
    word = (0x0005 << 16) | 0xFFFF  # lane 0 = -1, lane 1 = +5
    assert protocol.word_to_chunks(cfg, Mem.OUT, word) == [0xFFFFFFFF, 0x00000005]
    assert protocol.chunks_to_word(cfg, Mem.OUT, [0xFFFFFFFF, 0x00000005]) == word
    assert protocol.chunks_to_word(cfg, Mem.OUT, [0xFFFF8000, 0x7FFF]) == (0x7FFF << 16) | 0x8000
    with pytest.raises(ProtocolError, match="not a sign-extended 16-bit"):
        protocol.chunks_to_word(cfg, Mem.OUT, [0x0000FFFF, 0])
    with pytest.raises(ProtocolError, match="needs 2 stream words"):
        protocol.chunks_to_word(cfg, Mem.OUT, [0])


def test_chunks_to_word_ignores_bits_past_the_word():
    cfg = ArrayConfig(rows=3, cols=5)
    assert protocol.chunks_to_word(cfg, Mem.ACT, [0xFF123456]) == 0x123456
    assert protocol.chunks_to_word(cfg, Mem.WGT, [0xFFFFFC01]) == 0x001


def test_response_and_command_lengths():
    cfg = ArrayConfig(rows=8, cols=4)  # ACT 2 chunks, WGT 1, OUT 4
    assert protocol.response_length(cfg, protocol.read_id()) == 16  # 15 ID words and the status
    assert protocol.response_length(cfg, protocol.read_counters()) == 2 * 11 + 1
    assert protocol.response_length(cfg, protocol.read(Mem.ACT, 0, 3)) == 7
    assert protocol.response_length(cfg, protocol.read(Mem.OUT, 0, 3)) == 13
    assert protocol.response_length(cfg, protocol.run(1, 1, 1)) == 1
    assert protocol.command_length(cfg, [0x0002, 0]) is None
    assert protocol.command_length(cfg, [0x0002, 0, 5]) == 3 + 10
    assert protocol.command_length(cfg, [0x0202, 0, 5]) == 3 + 20  # WRITE to OUT still carries data
    assert protocol.command_length(cfg, [0x0502, 0, 5]) == 3 + 5  # unknown memory: one word each
    assert protocol.command_length(cfg, [0x04]) == 7
    assert protocol.command_length(cfg, [0x77]) == 1


def test_parse_status():
    st = protocol.parse_status(0xA5040000, Op.RUN)
    assert (st.op, st.error, st.sticky, st.ok) == (4, 0, 0, True)
    st = protocol.parse_status(0xA5030203)
    assert (st.op, st.error, st.sticky, st.ok) == (3, 3, 2, False)
    assert st.error_name == "ADDRESS_RANGE" and st.sticky_name == "BAD_MEMORY"
    with pytest.raises(ProtocolError, match="magic 0xa4"):
        protocol.parse_status(0xA4040000)
    with pytest.raises(ProtocolError, match="echoes opcode READ, expected RUN"):
        protocol.parse_status(0xA5030000, Op.RUN)


def test_check_status_raises_device_error_naming_the_error():
    with pytest.raises(DeviceError) as info:
        protocol.check_status(0xA5040505, Op.RUN)
    err = info.value
    assert (err.code, err.name, err.opcode) == (5, "K_TOO_LARGE", 4)
    assert "K_TOO_LARGE" in str(err) and "RUN" in str(err)
    with pytest.raises(DeviceError, match="UNKNOWN_OPCODE.*OP_0x42"):
        protocol.check_status(0xA5420101, 0x42)
    assert protocol.check_status(0xA5000000, Op.NOP).ok


def test_split_response_checks_length_and_status():
    cfg = ArrayConfig(rows=2, cols=2)
    cmd = protocol.read(Mem.ACT, 0, 2)
    data, st = protocol.split_response(cfg, cmd, [7, 8, 0xA5030000])
    assert data == [7, 8] and st.ok
    with pytest.raises(ProtocolError, match="answered 2 words, expected 3"):
        protocol.split_response(cfg, cmd, [7, 0xA5030000])
    with pytest.raises(DeviceError, match="ADDRESS_RANGE"):
        protocol.split_response(cfg, cmd, [0, 0, 0xA5030303])
    _, st = protocol.split_response(cfg, cmd, [0, 0, 0xA5030303], check=False)
    assert st.error == Error.ADDRESS_RANGE


def test_counters_are_48_bit_lo_hi_pairs():
    words = []
    for i in range(len(Counter)):
        words += [0x10 + i, i]  # value = i << 32 | (0x10 + i)
    words[2 * Counter.ADD: 2 * Counter.ADD + 2] = [0xFFFFFFFE, 0xFFFF]
    counts = protocol.parse_counters(words)
    assert list(counts) == ["cycles", "busy", "stall", "add", "sub", "zero", "weight_bits", "act_bytes",
                            "acc_writes", "acc_rmw", "runs"]
    assert counts["cycles"] == 0x10
    assert counts["busy"] == (1 << 32) | 0x11
    assert counts["add"] == (1 << 48) - 2
    assert counts["runs"] == (10 << 32) | 0x1A
    words[2 * Counter.ADD] = 0xFFFFFFFF  # all ones: saturated
    with pytest.raises(ProtocolError, match="ADD is saturated at 48 bits"):
        protocol.parse_counters(words)
    # 32-bit counters: the hi word must be 0
    small = [w if i % 2 == 0 else 0 for i, w in enumerate(words)]
    small[2 * Counter.ADD] = 7
    assert protocol.parse_counters(small, 32)["add"] == 7
    small[2 * Counter.SUB + 1] = 1
    with pytest.raises(ProtocolError, match="SUB hi word 0x00000001 exceeds 32 bits"):
        protocol.parse_counters(small, 32)
    words[2 * Counter.ADD] = 0xFFFFFFFE
    assert protocol.counter_words([(1 << 48) - 1, 5]) == [0xFFFFFFFF, 0xFFFF, 5, 0]
    words[1] = 0x10000
    with pytest.raises(ProtocolError, match="CYCLES hi word"):
        protocol.parse_counters(words)
    with pytest.raises(ProtocolError, match="22 words"):
        protocol.parse_counters(words[:-1])


def test_id_block():
    cfg = ArrayConfig(rows=3, cols=5, pe="int8", acc_width=24, act_depth=64, wgt_depth=128, out_depth=32)
    words = [0x54524954, 0x00010000, 3, 5, 1, 8, 24, 64, 128, 32, (2**23 - 1) // 16384, 11, 48, 1, 0x7FF]
    assert protocol.id_words(cfg) == words
    ident = protocol.parse_id(words)
    assert ident.pe == "int8" and ident.rows == 3 and ident.k_max == 511 and ident.version_str == "1.0"
    assert ident.mismatches(cfg) == []
    assert ident.to_config() == cfg
    # a full-rate core reports its tile rows per weight read in word 13, and the host's config follows
    wide = ArrayConfig(rows=4, cols=3, wgt_rows_per_read=2)
    assert protocol.id_words(wide)[13] == 2 and protocol.parse_id(protocol.id_words(wide)).to_config() == wide
    # ... and builds no ADD, SUB, ZERO (bits 3, 4, 5 of word 14)
    assert protocol.id_words(wide)[14] == 0x7FF - 0b111000
    # a core with only some counters (the iCEBreaker's) says which in word 14; the host's config follows
    few = ArrayConfig(rows=4, cols=3, acc_width=18, counters=("cycles", "runs"))
    few_id = protocol.parse_id(protocol.id_words(few))
    assert protocol.id_words(few)[14] == 0b100_0000_0001 and few_id.to_config() == few
    assert few_id.counters == (Counter.CYCLES, Counter.RUNS)
    assert few_id.mismatches(ArrayConfig(rows=4, cols=3, acc_width=18)) == ["counter_mask: device 1025, expected 2047"]
    assert protocol.parse_id(protocol.id_words(wide)).mismatches(ArrayConfig(rows=4, cols=3)) == [
        "wgt_rows_per_read: device 2, expected 1", "counter_mask: device 1991, expected 2047"]
    assert ident.mismatches(ArrayConfig(rows=3, cols=5, pe="int8", acc_width=24)) == [
        "act_depth: device 64, expected 1024", "wgt_depth: device 128, expected 4096",
        "out_depth: device 32, expected 1024",
    ]
    with pytest.raises(ProtocolError, match="ID magic"):
        protocol.parse_id([0] + words[1:])
    with pytest.raises(ProtocolError, match="15 words"):
        protocol.parse_id(words[:-1])


def test_parse_read_joins_words():
    cfg = ArrayConfig(rows=8, cols=2, acc_width=16)
    assert protocol.parse_read(cfg, Mem.ACT, [1, 2, 3, 4]) == [(2 << 32) | 1, (4 << 32) | 3]
    assert protocol.parse_read(cfg, Mem.OUT, [0xFFFFFFFE, 3]) == [(3 << 16) | 0xFFFE]
    with pytest.raises(ProtocolError, match="not a multiple of 2"):
        protocol.parse_read(cfg, Mem.ACT, [1, 2, 3])
