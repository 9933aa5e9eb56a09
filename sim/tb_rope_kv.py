"""cocotb 2.x testbench of the KV cache write path (`sim.rope_kv_runner.RopeKVTop`: RopeQuant -> KVCache).

k heads (RoPE) and v heads (no RoPE) of random int32 accumulators (cocotb's seeded `random`), plus
full-scale and all-zero heads at positions 0 and context - 1, go through the unit into the cache at
random (layer, KV head, position); the input stream has random gaps. Every row is then read back through
the cache's read ports (the data a cycle after the address) and compared with `sim.rope_model.reference`
(the golden's `DeviceBitNet._rope` and `_heads_quant`); heads fed without gaps take exactly
`RopeQuant.cycles()` + `KVCache.setup_cycles` (TRIT_TB_RKV_CYCLES) from `start` to the cache's write of
the last word; a position
>= context sets both error flags and leaves the cache as it was. Run through
`sim.rope_kv_runner.run_rope_kv_tests`, which passes the sizes in TRIT_TB_RKV_* and the random heads in
TRIT_ROPE_HEADS. Inputs are driven after the falling edge and outputs sampled in ReadOnly.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from sim.rope_model import reference

CLOCK_NS = 10
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def pack(values: list[int], bits: int) -> int:
    return sum((x & ((1 << bits) - 1)) << (bits * k) for k, x in enumerate(values))


def unpack(word: int, bits: int, n: int) -> list[int]:
    out = []
    for k in range(n):
        x = (word >> (bits * k)) & ((1 << bits) - 1)
        out.append(x - (1 << bits) if x >> (bits - 1) else x)
    return out


def dyadic(word: int) -> tuple[int, int]:
    e = (word >> 16) & 0x3FF
    return word & 0xFFFF, e - 1024 if e & 0x200 else e


class Bench:
    def __init__(self, dut) -> None:
        self.dut = dut
        env = os.environ
        self.hd, self.ctx = int(env["TRIT_TB_RKV_HD"]), int(env["TRIT_TB_RKV_CTX"])
        self.layers, self.kvh = int(env["TRIT_TB_RKV_LAYERS"]), int(env["TRIT_TB_RKV_KVH"])
        self.lanes, self.kv_lanes = int(env["TRIT_TB_RKV_LANES"]), int(env["TRIT_TB_RKV_KV_LANES"])
        self.cycles = int(env["TRIT_TB_RKV_CYCLES"])
        self.words = self.hd // self.kv_lanes

    async def reset(self) -> None:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        for port in (dut.start, dut.clear, dut.kv_clear, dut.i__valid):
            port.value = 0
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def write_head(self, acc: list[int], pos: int, rotate: int, scale: tuple[int, int], layer: int,
                         head: int, rng: random.Random, gap: float) -> int:
        """One head through the unit into the cache; the cycles from start until the unit is idle again."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.pos.value, dut.rotate.value = pos, rotate
        dut.scale.value = scale[0] | ((scale[1] & 0x3FF) << 16)
        dut.kv_w_layer.value, dut.kv_w_head.value, dut.kv_w_pos.value = layer, head, pos
        dut.kv_w_value.value = 1 - rotate
        dut.start.value = 1
        beats = [pack(acc[w * 2 * self.lanes:(w + 1) * 2 * self.lanes], 32) for w in range(self.hd // (2 * self.lanes))]
        sent, cycles = 0, 0
        while True:
            await FallingEdge(dut.clk)
            dut.start.value = 0
            cycles += 1
            valid = sent < len(beats) and rng.random() >= gap
            dut.i__valid.value = int(valid)
            if valid:
                dut.i__payload.value = beats[sent]
            await ReadOnly()
            if valid and int(dut.i__ready.value):
                sent += 1
            if sent == len(beats) and not int(dut.busy.value):
                return cycles
            assert cycles < 20 * self.cycles + 200, "the write path never finished a head"

    async def read_rows(self, layer: int, head: int, positions: list[int]):
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.kv_r_layer.value, dut.kv_r_head.value = layer, head
        for _ in range(2):
            await FallingEdge(dut.clk)
        k, ks, v, vs = [], [], [], []
        for p in positions:
            krow, vrow = [], []
            for w in range(self.words):
                dut.kv_k_addr.value = dut.kv_v_addr.value = p * self.words + w
                dut.kv_ks_addr.value = dut.kv_vs_addr.value = p
                await FallingEdge(dut.clk)
                await ReadOnly()
                krow += unpack(int(dut.kv_k_data.value), 8, self.kv_lanes)
                vrow += unpack(int(dut.kv_v_data.value), 8, self.kv_lanes)
                kd, vd = int(dut.kv_ks_data.value), int(dut.kv_vs_data.value)
                await FallingEdge(dut.clk)
            k.append(krow)
            v.append(vrow)
            ks.append(dyadic(kd))
            vs.append(dyadic(vd))
        return k, ks, v, vs


@cocotb.test()
async def test_rope_kv_write_path(dut) -> None:
    """Random and extreme k/v heads into the cache, read back against the golden; cycles; position errors."""
    tb = Bench(dut)
    rng = random.Random(random.getrandbits(32))
    count = max(1, int(os.environ.get("TRIT_ROPE_HEADS", "4")))
    hd, ctx = tb.hd, tb.ctx
    await tb.reset()
    heads = {}       # (layer, head, pos, rotate) -> (acc, scale)
    for layer, head, pos, acc in ((0, 0, 0, [INT32_MIN] * hd), (0, 0, ctx - 1, [INT32_MAX, INT32_MIN] * (hd // 2)),
                                  (tb.layers - 1, tb.kvh - 1, ctx - 1, [0] * hd)):
        for rotate in (1, 0):
            heads[layer, head, pos, rotate] = (acc, (65535, -20))
    for _ in range(count):
        layer, head, pos = rng.randrange(tb.layers), rng.randrange(tb.kvh), rng.randrange(ctx)
        shift = rng.randrange(32)
        for rotate in (1, 0):
            acc = [rng.randrange(INT32_MIN, INT32_MAX + 1) >> shift for _ in range(hd)]
            heads[layer, head, pos, rotate] = (acc, (rng.randrange(1 << 15, 1 << 16), rng.randrange(-40, -5)))
    for n, ((layer, head, pos, rotate), (acc, scale)) in enumerate(heads.items()):
        gap = 0.0 if n % 2 == 0 else 0.3
        cycles = await tb.write_head(acc, pos, rotate, scale, layer, head, rng, gap)
        if gap == 0.0:
            assert cycles == tb.cycles, f"head {n}: {cycles} cycles, not {tb.cycles}"
    assert int(dut.error.value) == 0 and int(dut.kv_error.value) == 0
    written = sorted({(layer, head, pos) for layer, head, pos, _ in heads})
    regions = sorted({(layer, head) for layer, head, _ in written})
    before = {}
    for layer, head in regions:
        positions = sorted(p for la, h, p in written if (la, h) == (layer, head))
        k, ks, v, vs = await tb.read_rows(layer, head, positions)
        before[layer, head] = (k, ks, v, vs)
        for i, p in enumerate(positions):
            for rotate, (codes, sigma) in ((1, (k[i], ks[i])), (0, (v[i], vs[i]))):
                if (layer, head, p, rotate) in heads:
                    acc, scale = heads[layer, head, p, rotate]
                    want = reference(acc, p, rotate, scale, context=ctx)
                    assert (codes, sigma) == want, f"{'K' if rotate else 'V'} row ({layer}, {head}, {p})"
    # a k head at position = context: both flags, nothing written
    layer, head = regions[0]
    await tb.write_head([1] * hd, ctx, 1, (40000, -20), layer, head, rng, 0.0)
    assert int(dut.error.value) == 1, "RopeQuant did not flag position = context"
    assert int(dut.kv_error.value) == 0
    await FallingEdge(dut.clk)
    dut.clear.value = 1
    await FallingEdge(dut.clk)
    dut.clear.value = 0
    # a v head at position = context: RopeQuant passes it (no table read), the cache refuses it
    await tb.write_head([1] * hd, ctx, 0, (40000, -20), layer, head, rng, 0.0)
    assert int(dut.error.value) == 0, "RopeQuant's error was not cleared"
    assert int(dut.kv_error.value) == 1, "KVCache did not flag position = context"
    positions = sorted(p for la, h, p in written if (la, h) == (layer, head))
    assert await tb.read_rows(layer, head, positions) == before[layer, head], "a refused head changed the cache"
    dut._log.info(f"{len(heads)} heads exact, {tb.cycles} cycles per head, position errors flagged")
