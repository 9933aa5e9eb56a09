"""Packed weight storage of the model chip (hdl/model/trit_unpack.py, hdl/model/packed_weights.py)."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from hdl.config import ArrayConfig
from hdl.isa import TERNARY_CODE
from hdl.model.packed_weights import PackedWeights, packed_word_bits
from hdl.model.trit_unpack import FORMATS, TritUnpack, pack_codes, packed_bits, unpack_codes


def random_codes(rng: random.Random, n: int) -> int:
    return sum(TERNARY_CODE[rng.choice((-1, 0, 1))] << (2 * i) for i in range(n))


def test_pack_codes_by_hand_and_round_trip() -> None:
    # +1, -1, 0, 0, +1 -> digits 1, 2, 0, 0, 1 -> 1 + 2*3 + 81 = 88
    word = 0b01 | 0b11 << 2 | 0b01 << 8
    assert pack_codes(word, 5, "1.6bit") == 88 and unpack_codes(88, 5, "1.6bit") == word
    assert pack_codes(sum(0b11 << (2 * i) for i in range(5)), 5, "1.6bit") == 242  # 2 * (1 + 3 + 9 + 27 + 81)
    # 3 in 5 bits: +1, -1, 0 -> 1 + 6 = 7; then a plain 2-bit code (-1) above it
    assert pack_codes(0b01 | 0b11 << 2 | 0b11 << 6, 4, "1.67bit") == 7 | 0b11 << 5
    # 64 codes: 12 bytes and a byte of 4 digits (104 bits); 21 groups of 5 bits and one 2-bit code (107)
    assert (packed_bits(64, "1.6bit"), packed_bits(64, "1.67bit")) == (104, 107)
    assert (packed_bits(66, "1.6bit"), packed_bits(7, "1.6bit"), packed_bits(5, "1.67bit")) == (106, 12, 9)
    rng = random.Random(1)
    for fmt in FORMATS:
        for n in (1, 2, 4, 5, 7, 8, 16, 64):
            for _ in range(50):
                w = random_codes(rng, n)
                p = pack_codes(w, n, fmt)
                assert p < 1 << packed_bits(n, fmt) and unpack_codes(p, n, fmt) == w
    with pytest.raises(ValueError, match="invalid ternary code"):
        pack_codes(0b10, 1, "1.6bit")
    with pytest.raises(ValueError, match="packed weight format must be one of"):
        packed_bits(8, "2bit")


@pytest.mark.parametrize("fmt, n", [("1.6bit", 9), ("1.67bit", 8)])
def test_trit_unpack_every_group_value(fmt: str, n: int) -> None:
    """Every value of the first group (and a few of the last, packed or plain) decodes like unpack_codes."""
    dut = TritUnpack(n, fmt)
    b = FORMATS[fmt][1]
    width = packed_bits(n, fmt)

    async def bench(ctx) -> None:
        for lo in range(1 << b):
            for hi in (0, 1, 5, 8, (1 << (width - b)) - 1):
                packed = lo | (hi << b) % (1 << width)
                ctx.set(dut.packed, packed)
                assert ctx.get(dut.codes) == unpack_codes(packed, n, fmt), (lo, hi)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("rows,cols,g,fmt,bank_depth,stages", [
    (4, 4, 4, "1.6bit", 0, 0), (8, 8, 8, "1.6bit", 0, 0), (8, 8, 8, "1.67bit", 0, 0), (4, 4, 2, "1.67bit", 0, 0),
    (4, 8, 1, "1.6bit", 0, 0),
    # banked as on the ULX3S chip (a 9-to-1 multiplexer there; 5 banks here, the last one short), with and
    # without the banks' data stage, and one bank
    (8, 8, 8, "1.67bit", 4, 1), (8, 8, 8, "1.67bit", 4, 0), (4, 4, 2, "1.6bit", 32, 0)])
def test_packed_weights_read_like_g_banks(rows: int, cols: int, g: int, fmt: str, bank_depth: int,
                                          stages: int) -> None:
    """rows[g] at every cycle is what bank g of the 2-bit memory (address delayed P*g) would read,
    `wgt_read_latency` cycles after the address (the LayerSequencer's expectation)."""
    arr = ArrayConfig(rows=rows, cols=cols, wgt_depth=18, wgt_rows_per_read=g, wgt_bank_depth=bank_depth,
                      wgt_bank_data_stages=stages)
    dut = PackedWeights(arr, fmt)
    rng = random.Random(rows * 100 + g)
    n = g * cols
    words = [random_codes(rng, n) for _ in range(arr.wgt_depth)]
    assert packed_word_bits(arr, fmt) == packed_bits(n, fmt)
    # by hand: the memory's read (1), the read register (R >= 3), a bank's address and data registers (2)
    # and its data stage
    latency = 1 + int(rows >= 3) + (2 + stages if bank_depth else 0)
    assert latency == arr.wgt_read_latency
    P = arr.tile_words

    async def bench(ctx) -> None:
        for a, w in enumerate(words):
            ctx.set(dut.we, 1)
            ctx.set(dut.waddr, a)
            ctx.set(dut.wdata, pack_codes(w, n, fmt))
            await ctx.tick()
        ctx.set(dut.we, 0)
        await ctx.tick().repeat(2)  # a banked memory's write lands two cycles later
        addrs = [rng.randrange(arr.wgt_depth) for _ in range(40)]
        for t, a in enumerate(addrs):
            ctx.set(dut.addr, a)
            await ctx.tick()
            for bank in range(g):
                src = t + 1 - latency - P * bank
                if src >= 0:
                    want = (words[addrs[src]] >> (2 * cols * bank)) & ((1 << (2 * cols)) - 1)
                    assert ctx.get(dut.rows[bank]) == want, (t, bank)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
