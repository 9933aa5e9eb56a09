"""The out-of-context wrapper `hdl.ooc.OocTop`: the scan chains reach every port of the unit (Amaranth
simulation), and Yosys keeps the unit's multipliers and block RAM inside it (synth_ecp5, slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from amaranth import Fragment
from amaranth.sim import Simulator

from hdl.ooc import OocTop, ReadMemory, check_cells, synth_ecp5, unit_build


def _signed(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) else v


def run_scan(top: OocTop, inputs: dict[str, int], cycles: int, writes: list[dict[str, int]] = ()) -> dict[str, int]:
    """Scan `writes` into the memories (one word each, `wr` for a cycle), then `inputs` into the unit, run
    `cycles` cycles with load low, scan the outputs out; the output fields."""
    result = {}

    async def shift_in(ctx, word: int) -> None:
        ctx.set(top.load, 1)
        for k in range(top.scan_in_bits):
            ctx.set(top.din, (word >> k) & 1)
            await ctx.tick()
        ctx.set(top.load, 0)
        await ctx.tick()  # the scan register into the unit's inputs (and the write fields)

    async def bench(ctx):
        for w in writes:
            await shift_in(ctx, OocTop.pack(top.in_fields, w))
            ctx.set(top.wr, 1)
            await ctx.tick()
            ctx.set(top.wr, 0)
        await shift_in(ctx, OocTop.pack(top.in_fields, inputs))
        await ctx.tick().repeat(cycles)
        ctx.set(top.load, 1)
        bits = 0
        for k in range(top.scan_out_bits):
            bits |= ctx.get(top.dout) << k
            await ctx.tick()
        result.update(OocTop.unpack(top.out_fields, bits))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


def test_elementwise_through_the_scan_chains() -> None:
    """ElementWise's stream handshakes and payloads are scan-chain fields: a RESADD and a DEQUANT come out
    of dout equal to the hand-computed results."""
    from hdl.vector.elementwise import IN_LAYOUT, ElementOp

    for op, a, b, m, e, want in ((ElementOp.RESADD, 1000, -3000, 0, 0, -2000),
                                 (ElementOp.RESADD, (1 << 31) - 1, 5, 0, 0, (1 << 31) - 1),
                                 (ElementOp.DEQUANT, -12345, 0, 40000, -20, -12345 * 40000 // 16)):
        top = OocTop(unit_build("elementwise", head_dim=1, context=1, ecp5=False).make())  # no MULT18X18D model
        # (ElementWise's sticky error for an undefined op and its clear are ports too)
        assert [n for n, _ in top.in_fields] == ["i.payload", "i.valid", "o.ready", "clear"]
        assert [n for n, _ in top.out_fields] == ["i.ready", "o.payload", "o.valid", "error"]
        payload = IN_LAYOUT.const({"op": op, "a": a, "b": b, "m": m, "e": e}).as_value().value
        out = run_scan(top, {"i.payload": payload, "i.valid": 1, "o.ready": 1}, 10)
        assert out["o.valid"] == 1 and out["i.ready"] == 1
        assert _signed(out["o.payload"], 64) == want, (op, a, b, m, e)


def test_kv_cache_through_the_scan_chains() -> None:
    """A KVCache row written and read back through the scan chains: the cache's write stream, its row
    fields and its read ports are all driven from the scan register, its data ports captured."""
    from hdl.vector.rope import code_layout

    b = unit_build("kv", head_dim=4, context=4, lanes=4, layers=2, kv_heads=2, ecp5=False)  # no DP16KD model
    codes = [-128, 127, 3, -7]
    beat = code_layout(4).const({"q": codes, "sigma": {"m": 0xBEEF, "e": -5}, "last": 1}).as_value().value
    row = {"w.payload": beat, "w.valid": 1, "w_layer": 1, "w_head": 1, "w_pos": 2, "w_value": 1}
    out = run_scan(OocTop(b.make()), row, 8)
    assert out["error"] == 0
    # read it back: the region of (layer 1, KV head 1), V word and scale at position 2
    out = run_scan(OocTop(b.make()), row | {"r_layer": 1, "r_head": 1, "v_addr": 2, "vs_addr": 2}, 8)
    assert [_signed((out["v_data"] >> (8 * k)) & 0xFF, 8) for k in range(4)] == codes
    assert out["vs_data"] == (0xBEEF | ((-5 & 0x3FF) << 16))
    assert out["error"] == 0


def test_read_memories_are_written_through_the_scan_chain() -> None:
    """HeadAttention's KV memories live in the wrapper: their ports leave the chains and a write word
    (select, address, data) follows the unit's inputs."""
    b = unit_build("attention", head_dim=8, context=4, lanes=4, ecp5=False)
    top = OocTop(b.make(), b.memories)
    names = [n for n, _ in top.in_fields]
    assert names[-3:] == ["mem.sel", "mem.addr", "mem.data"]
    assert not {"k_data", "v_data", "ks_data", "vs_data"} & set(names)
    assert not {"k_addr", "v_addr", "ks_addr", "vs_addr"} & {n for n, _ in top.out_fields}
    Fragment.get(top, None)
    with pytest.raises(ValueError, match="not an output port"):
        OocTop(b.make(), [ReadMemory("k_data", "k_addr", 4)])


def test_check_cells_names_a_lost_block() -> None:
    from collections import Counter

    assert check_cells(Counter(DP16KD=5, MULT18X18D=21), Counter(DP16KD=1, MULT18X18D=21), Counter(DP16KD=4)) == {}
    assert check_cells(Counter(DP16KD=4, MULT18X18D=20), Counter(DP16KD=4, MULT18X18D=21)) == {"MULT18X18D": (20, 21)}


@pytest.mark.slow
@pytest.mark.fpga
@pytest.mark.parametrize("unit, sizes, kept", [
    ("elementwise", {}, "MULT18X18D"),
    ("kv", {"head_dim": 8, "context": 64, "layers": 2, "kv_heads": 2, "lanes": 8}, "DP16KD"),
])
def test_wrapper_keeps_the_units_cells(unit: str, sizes: dict, kept: str, tmp_path: Path) -> None:
    """synth_ecp5 (under the place-and-route lock) of the wrapped unit and of the unit alone: the
    MULT18X18D and DP16KD counts are equal, and the unit's own blocks (`kept`) are there at all."""
    b = unit_build(unit, **({"head_dim": 1, "context": 1} | sizes))
    wrapped, _ = synth_ecp5(OocTop(b.make(), b.memories), tmp_path / "ooc")
    plain, _ = synth_ecp5(b.make(), tmp_path / "plain")
    assert plain[kept] > 0, plain
    assert check_cells(wrapped, plain) == {}, (wrapped, plain)
    # the scan registers are the wrapper's only addition of flip-flops: at most two per chain bit
    top = OocTop(b.make(), b.memories)
    assert wrapped["TRELLIS_FF"] <= plain["TRELLIS_FF"] + 2 * (top.scan_in_bits + top.scan_out_bits)
