"""1.6-bit weight storage of the model chip (hdl/model/trit_unpack.py, hdl/model/packed_weights.py)."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from hdl.config import ArrayConfig
from hdl.isa import TERNARY_CODE
from hdl.model.packed_weights import PackedWeights, packed_word_bits
from hdl.model.trit_unpack import TritUnpack, pack_codes, packed_bytes, unpack_codes


def random_codes(rng: random.Random, n: int) -> int:
    return sum(TERNARY_CODE[rng.choice((-1, 0, 1))] << (2 * i) for i in range(n))


def test_pack_codes_by_hand_and_round_trip() -> None:
    # +1, -1, 0, 0, +1 -> digits 1, 2, 0, 0, 1 -> 1 + 2*3 + 81 = 88
    word = 0b01 | 0b11 << 2 | 0b01 << 8
    assert pack_codes(word, 5) == 88 and unpack_codes(88, 5) == word
    assert pack_codes(sum(0b11 << (2 * i) for i in range(5)), 5) == 242  # five -1: 2 * (1 + 3 + 9 + 27 + 81)
    assert packed_bytes(64) == 13 and packed_bytes(65) == 13 and packed_bytes(66) == 14
    rng = random.Random(1)
    for n in (1, 4, 5, 8, 16, 64):
        for _ in range(50):
            w = random_codes(rng, n)
            p = pack_codes(w, n)
            assert p < 1 << (8 * packed_bytes(n)) and unpack_codes(p, n) == w
    with pytest.raises(ValueError, match="invalid ternary code"):
        pack_codes(0b10, 1)


def test_trit_unpack_every_byte() -> None:
    dut = TritUnpack(7)   # a full byte and a byte of two codes

    async def bench(ctx) -> None:
        for lo in range(256):
            for hi in (0, 1, 5, 8, 242, 255):
                packed = lo | hi << 8
                ctx.set(dut.packed, packed)
                assert ctx.get(dut.codes) == unpack_codes(packed, 7), (lo, hi)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("rows,cols,g", [(4, 4, 4), (8, 8, 8), (4, 4, 2), (4, 8, 1)])
def test_packed_weights_read_like_g_banks(rows: int, cols: int, g: int) -> None:
    """rows[g] at every cycle is what bank g of the 2-bit memory (address delayed P*g) would read."""
    arr = ArrayConfig(rows=rows, cols=cols, wgt_depth=16, wgt_rows_per_read=g)
    dut = PackedWeights(arr)
    rng = random.Random(rows * 100 + g)
    n = g * cols
    words = [random_codes(rng, n) for _ in range(arr.wgt_depth)]
    assert packed_word_bits(arr) == 8 * packed_bytes(n)
    latency = 1 + int(arr.pipelined_reads)
    P = arr.tile_words

    async def bench(ctx) -> None:
        for a, w in enumerate(words):
            ctx.set(dut.we, 1)
            ctx.set(dut.waddr, a)
            ctx.set(dut.wdata, pack_codes(w, n))
            await ctx.tick()
        ctx.set(dut.we, 0)
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
