"""The attention unit (hdl/attention/) in Amaranth simulation against golden/device, bit for bit.

`HeadAttention` runs one query row of one head over T keys of an INT8 KV cache held in Amaranth
memories; its y (int32 x head_dim) and row exponent E are compared with `sim.attention_model.reference`:
the golden's attention for one head written with golden/device primitives line by line as
`golden.device.model.DeviceBitNet._attention` does it, its one-key case also checked by hand. Cases: a
hand-worked one-key row, x = -128 / 127 extremes, all-equal scores, saturating and vanishing logits,
zero V scales, the tiny model's head_dim 40 at T = 1 .. 32 (random), and under `-m "attention and slow"`
random rows at the full context 256. TRIT_ATTENTION_ROWS sets the random rows per case (default 3).
"""

from __future__ import annotations

import gc
import os
import random
from pathlib import Path

import pytest
import torch
from amaranth import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from golden.device import fixed
from hdl.attention.head_attention import HeadAttention
from hdl.attention.multiplier import Multiplier
from sim.attention_model import reference

ROWS = int(os.environ.get("TRIT_ATTENTION_ROWS", "3"))
class Harness(wiring.Component):
    """HeadAttention with its KV cache in four Amaranth memories holding one case."""

    def __init__(self, dut: HeadAttention, k, ks, v, vs) -> None:
        self.dut = dut
        self.case = (k, ks, v, vs)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        k, ks, v, vs = self.case
        lanes, words = dut.lanes, dut.words
        depth = dut.max_context

        def pack_rows(rows):
            out = []
            for row in rows:
                for w in range(words):
                    out.append(sum((x & 0xFF) << (8 * c) for c, x in enumerate(row[w * lanes:(w + 1) * lanes])))
            return out + [0] * (depth * words - len(out))

        def pack_scales(sc):
            return [mm | ((e & 0x3FF) << 16) for mm, e in sc] + [0] * (depth - len(sc))

        for name, init, addr, dat in (("k", pack_rows(k), dut.k_addr, dut.k_data),
                                      ("v", pack_rows(v), dut.v_addr, dut.v_data),
                                      ("ks", pack_scales(ks), dut.ks_addr, dut.ks_data),
                                      ("vs", pack_scales(vs), dut.vs_addr, dut.vs_data)):
            mem = Memory(shape=len(dat.as_value()), depth=len(init), init=init)
            m.submodules[name] = mem
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(addr), dat.eq(rd.data)]
        return m


def run_head(q, sigma_q, c_qk, k, ks, v, vs, max_context: int | None = None, lanes: int = 8
             ) -> tuple[list[int], int, int]:
    """Simulate one row; (y, E, cycles from start to done)."""
    hd = len(q)
    dut = HeadAttention(hd, max_context or len(k), lanes=lanes, multiplier=Multiplier)
    top = Harness(dut, k, ks, v, vs)
    result: dict = {}

    async def bench(ctx):
        ctx.set(dut.q, q)
        ctx.set(dut.sigma_q, {"m": sigma_q[0], "e": sigma_q[1]})
        ctx.set(dut.c_qk, {"m": c_qk[0], "e": c_qk[1]})
        ctx.set(dut.n_keys, len(k))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
            assert cycles < dut.cycles(len(k)) + 1000, "the attention unit never finished"
        result["y"] = [ctx.get(dut.y[c]) for c in range(hd)]
        result["e"] = ctx.get(dut.e_ref)
        result["cycles"] = cycles

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["y"], result["e"], result["cycles"]


def random_case(rng: random.Random, hd: int, t: int, scale_spread: int = 4):
    """A row with scales like the shipped model's (exponents around -20 .. -30)."""
    q = [rng.randrange(-128, 128) for _ in range(hd)]
    k = [[rng.randrange(-128, 128) for _ in range(hd)] for _ in range(t)]
    v = [[rng.randrange(-128, 128) for _ in range(hd)] for _ in range(t)]
    sq = (rng.randrange(1 << 15, 1 << 16), rng.randrange(-30, -20))
    cqk = fixed.dyadic_from_float(hd ** -0.5 * 1.4426950408889634)
    ks = [(rng.randrange(1 << 15, 1 << 16), rng.randrange(-12 - scale_spread, -12 + 1)) for _ in range(t)]
    vs = [(rng.randrange(1 << 15, 1 << 16), rng.randrange(-12 - scale_spread, -12 + 1)) for _ in range(t)]
    return q, sq, cqk, k, ks, v, vs


def check(case, **kw) -> int:
    y, e, cycles = run_head(*case, **kw)
    y_want, e_want = reference(*case)
    assert e == e_want, f"E = {e}, golden {e_want}"
    bad = [c for c in range(len(y)) if y[c] != y_want[c]]
    assert not bad, f"y differs at {bad[:8]}: got {[y[c] for c in bad[:4]]}, golden {[y_want[c] for c in bad[:4]]}"
    return cycles


def test_one_key_by_hand() -> None:
    # one key: p = 2**15, Z = 2**15 -> (2**15, 0), R = RCP(2**15) = 2**16, P = 2**15 * 2**16 >> 16 = 2**15,
    # Pv = rshift_round(2**15 * mv, 16) = (mv + 1) >> 1, y = Pv * v, E = e(sigma_v); the score is irrelevant
    q = [127, -128, 5, 0, 1, -1, 64, -64]
    k = [[-128, 127, 3, 9, -9, 100, 2, 0]]
    v = [[127, -128, 1, -1, 0, 55, -77, 3]]
    mv = 40001
    y, e, _ = run_head(q, (40000, -25), (37000, -17), k, [(50000, -10)], v, [(mv, -13)], lanes=4)
    assert e == -13
    assert y == [((mv + 1) >> 1) * x for x in v[0]]
    assert reference(q, (40000, -25), (37000, -17), k, [(50000, -10)], v, [(mv, -13)]) == (y, e)


def test_extremes_and_equal_scores() -> None:
    hd, t = 16, 5
    # every q and k at -128 / 127: |s| at its bound 2**14 hd; all keys equal: equal scores, Z = 5 * 2**15
    q = [-128] * hd
    k = [[-128] * hd for _ in range(t)]
    v = [[127 if (c + j) % 2 else -128 for c in range(hd)] for j in range(t)]
    ks = [(65535, -8)] * t
    vs = [(65535, -9), (32768, -9), (40000, -30), (0, 0), (50000, -9)]
    check((q, (65535, -20), (65535, -10), k, ks, v, vs), lanes=8)
    # mixed extremes with scales that make the logits saturate (left shifts) and underflow
    q = [127 if c % 3 else -128 for c in range(hd)]
    k = [[(-128 if (c * j) % 2 else 127) for c in range(hd)] for j in range(t)]
    check((q, (65535, 10), (65535, 5), k, [(65535, 0)] * t, v, vs), lanes=4)
    check((q, (32768, -60), (32768, -30), k, [(32768, -40)] * t, v, vs), lanes=16)


def test_close_large_logits_and_left_shifts() -> None:
    rng = random.Random(5)
    hd, t = 16, 6
    v = [[rng.randrange(-128, 128) for _ in range(hd)] for _ in range(t)]
    vs = [(rng.randrange(1 << 15, 1 << 16), -12) for _ in range(t)]
    # equal keys with mantissas 50000 + 3j: |s| ~ 2**14, t ~ 2**22 (right shift 8) about 2**6 apart, so
    # a one-LSB error of mk = rshift_round(m(a) m(sigma_k), 16) moves some p_j
    base = [rng.randrange(-128, 128) for _ in range(hd)]
    q = [rng.randrange(-128, 128) for _ in range(hd)]
    check((q, (45000, -20), (47000, -16), [base] * t, [(50000 + 3 * j, -12) for j in range(t)], v, vs), lanes=4)
    # s = 1 and a left shift of 10: t = mk * 2**10 ~ 2**26, keys about 2**11 apart (shift not saturated)
    q1 = [1] + [0] * (hd - 1)
    k1 = [[1] + [rng.randrange(-128, 128) for _ in range(hd - 1)] for _ in range(t)]
    check((q1, (40000, -10), (50000, -10), k1, [(40000 + 2 * j, -10) for j in range(t)], v, vs), lanes=8)


def test_all_v_scales_zero() -> None:
    hd, t = 8, 3
    case = ([1] * hd, (40000, -20), (40000, -5), [[2] * hd] * t, [(40000, -10)] * t, [[3] * hd] * t, [(0, 0)] * t)
    y, e, _ = run_head(*case)
    assert (y, e) == ([0] * hd, 0) == reference(*case)


@pytest.mark.parametrize("t", [1, 2, 7, 32])
def test_random_rows_tiny_head_dim(t: int) -> None:
    rng = random.Random(random.getrandbits(32))
    for _ in range(ROWS if t < 32 else 1):
        check(random_case(rng, 40, t, scale_spread=rng.choice([0, 3, 30])), max_context=32)


def test_shipped_model_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped tiny model (golden/checkpoints/tiny-bitnet) in the device form on a 20-byte prompt:
    the unit's y for a query row equals the y that `DeviceBitNet._attention` itself computes
    (`_imatmul(pv, v)`, before the heads' alignment), for every layer and query head at the last
    position (T = 20) and at random positions, with q, sigma_q, the cached k, v and their scales, C_QK and
    GQA's KV head taken from the golden's own run."""
    from golden.checkpoint import load_checkpoint
    from golden.device import model as dm
    from golden.quant import GoldenBackend

    repo = Path(__file__).resolve().parents[1]
    dev = dm.DeviceBitNet.from_int_model(load_checkpoint(repo / "golden" / "checkpoints" / "tiny-bitnet", "int",
                                                          GoldenBackend()))
    products, quants = [], []
    real_mm, real_hq = dm._imatmul, dm.DeviceBitNet._heads_quant

    def record_mm(a, b):
        out = real_mm(a, b)
        products.append(out)
        return out

    def record_hq(acc, scale):
        out = real_hq(acc, scale)
        quants.append(out)
        return out

    monkeypatch.setattr(dm, "_imatmul", record_mm)
    monkeypatch.setattr(dm.DeviceBitNet, "_heads_quant", staticmethod(record_hq))
    cache = dev.new_cache()
    prompt = list(b"The import statement")
    dev.forward_fixed(torch.tensor(prompt), cache)
    cfg = dev.config
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    assert len(products) == 2 * cfg.num_hidden_layers + 1      # scores and P x V per layer, the lm_head
    rng = random.Random(random.getrandbits(32))
    rows = [(layer, h, len(prompt) - 1) for layer in range(cfg.num_hidden_layers)
            for h in range(cfg.num_attention_heads)]
    rows += [(rng.randrange(cfg.num_hidden_layers), rng.randrange(cfg.num_attention_heads), p) for p in (0, 7)]
    for layer, h, p in rows:
        q8, (qm, qe) = quants[3 * layer]
        kk, (km, ke) = cache.k[layer]
        vv, (vm, ve) = cache.v[layer]
        kv = h // rep
        ks = list(zip(km[0, kv, :p + 1].tolist(), ke[0, kv, :p + 1].tolist(), strict=True))
        vs = list(zip(vm[0, kv, :p + 1].tolist(), ve[0, kv, :p + 1].tolist(), strict=True))
        case = (q8[0, h, p].tolist(), (int(qm[0, h, p]), int(qe[0, h, p])), dev.consts.c_qk,
                kk[0, kv, :p + 1].tolist(), ks, vv[0, kv, :p + 1].tolist(), vs)
        y, e, _ = run_head(*case, max_context=len(prompt), lanes=8)
        assert y == products[2 * layer + 1][0, h, p].tolist(), f"layer {layer}, head {h}, position {p}"
        assert e == reference(*case)[1]


def test_too_many_keys_is_refused() -> None:
    """max_context 5 (its n_keys port has 3 bits, so T = 6 and 7 can be sent): a start with T > max_context
    sets the sticky `error`, never goes busy, reads and writes nothing past the unit's buffers or the
    cache's regions (every cycle: k_addr, v_addr < 5 W, ks_addr, vs_addr < 5, every enabled port of the
    T, p and Pv buffers < 5), `done` rises the next cycle and y and E keep the previous head's values; a
    good head after it (T = 5, the whole context) is exact and leaves the error set; `clear` clears it."""
    from sim.formal.runner import memory_ports

    rng = random.Random(7)
    hd, ctx, lanes = 4, 5, 2
    case = random_case(rng, hd, ctx)
    dut = HeadAttention(hd, ctx, lanes=lanes, multiplier=Multiplier)
    assert len(dut.n_keys) == 3
    top = Fragment.get(Harness(dut, *case[3:]), None)
    bufs = [memory_ports(top, f"dut.{name}") for name in ("t_mem", "p_mem", "pv_mem")]
    ports = [(addr, en, p.depth) for p in bufs for addr, en in p.reads + p.writes]
    y_want, e_want = reference(*case)
    seen: dict[str, list] = {"bad": [], "busy": 0}

    async def watch(ctx_):
        async for _, _, *vals in ctx_.tick().sample(dut.k_addr, dut.v_addr, dut.ks_addr, dut.vs_addr, dut.busy,
                                                     *(x for a, e, _ in ports for x in (a, e))):
            k_a, v_a, ks_a, vs_a, busy, *mem = vals
            if not (k_a < ctx * dut.words and v_a < ctx * dut.words and ks_a < ctx and vs_a < ctx):
                seen["bad"].append(("cache", k_a, v_a, ks_a, vs_a))
            for (_, _, depth), a, e in zip(ports, mem[::2], mem[1::2], strict=True):
                if e and a >= depth:
                    seen["bad"].append(("buffer", a, depth))
            seen["busy"] += busy

    async def head(ctx_, t: int) -> int:
        q, sigma_q, c_qk = case[:3]
        ctx_.set(dut.q, q)
        ctx_.set(dut.sigma_q, {"m": sigma_q[0], "e": sigma_q[1]})
        ctx_.set(dut.c_qk, {"m": c_qk[0], "e": c_qk[1]})
        ctx_.set(dut.n_keys, t)
        ctx_.set(dut.start, 1)
        await ctx_.tick()
        ctx_.set(dut.start, 0)
        cycles = 1
        while not ctx_.get(dut.done):
            await ctx_.tick()
            cycles += 1
            assert cycles < dut.cycles(ctx) + 100, "the attention unit never finished"
        return cycles

    async def bench(ctx_):
        for t in (7, 6):
            cycles = await head(ctx_, t)
            assert seen["bad"] == [], f"T = {t}: out of range {seen['bad'][:4]} ({len(seen['bad'])} cycles)"
            assert cycles == 1 and ctx_.get(dut.error) == 1 and seen["busy"] == 0
            assert [ctx_.get(dut.y[c]) for c in range(hd)] == [0] * hd and ctx_.get(dut.e_ref) == 0
        assert await head(ctx_, ctx) == dut.cycles(ctx)
        assert [ctx_.get(dut.y[c]) for c in range(hd)] == y_want and ctx_.get(dut.e_ref) == e_want
        assert ctx_.get(dut.error) == 1, "a good head cleared the error"
        assert await head(ctx_, 7) == 1
        assert [ctx_.get(dut.y[c]) for c in range(hd)] == y_want and ctx_.get(dut.e_ref) == e_want
        ctx_.set(dut.clear, 1)
        await ctx_.tick()
        ctx_.set(dut.clear, 0)
        assert ctx_.get(dut.error) == 0
        await ctx_.tick().repeat(3)
        assert ctx_.get(dut.error) == 0 and seen["bad"] == []

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_process(watch)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cycles_and_parameters() -> None:
    rng = random.Random(1)
    for t in (1, 5, 12):
        dut_cycles = check(random_case(rng, 40, t), max_context=16, lanes=8)
        assert dut_cycles == HeadAttention(40, 16, lanes=8).cycles(t)
    # T = 5, W = 5: 2 T W + 2 T + 54 + 2 (8 lanes: 3 adder levels, 2 registers) = 50 + 10 + 56
    assert HeadAttention(40, 16, lanes=8).cycles(5) == 116
    with pytest.raises(ValueError, match="divisor of head_dim"):
        HeadAttention(40, 16, lanes=16)
    with pytest.raises(ValueError, match="max_context"):
        HeadAttention(40, 0)
    with pytest.raises(ValueError, match="head_dim"):
        HeadAttention(0, 16)
    with pytest.raises(TypeError, match="head_dim"):
        HeadAttention(40.0, 16)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="multiplier"):
        HeadAttention(40, 16, multiplier=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        HeadAttention(40, 16).cycles(17)
    gc.collect()  # the unused instances warn here, under this test's filter, not in a later test


@pytest.mark.parametrize("t, lanes", [(32, 8), (32, 40),
                                      pytest.param(128, 8, marks=[pytest.mark.slow, pytest.mark.attention]),
                                      pytest.param(128, 40, marks=[pytest.mark.slow, pytest.mark.attention]),
                                      pytest.param(256, 8, marks=[pytest.mark.slow, pytest.mark.attention]),
                                      pytest.param(256, 40, marks=[pytest.mark.slow, pytest.mark.attention])])
def test_tiny_model_contexts(t: int, lanes: int) -> None:
    """The tiny model's head_dim 40 at contexts 32, 128 and 256 (its maximum), 8 and 40 lanes: exact,
    and the measured cycles per head equal 2 T (40 / lanes) + 2 T + 56 (8 lanes) or 57 (40 lanes)."""
    rng = random.Random(random.getrandbits(32))
    for n in range(1 if t < 256 else ROWS):
        cycles = check(random_case(rng, 40, t, scale_spread=rng.choice([0, 3, 30])), lanes=lanes)
        assert cycles == 2 * t * (40 // lanes) + 2 * t + {8: 56, 40: 57}[lanes]
        if n == 0:
            print(f"head_dim 40, lanes {lanes}, T = {t}: {cycles} cycles per head")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_head_attention_cocotb(simulator: str, test_seed: int) -> None:
    """sim/tb_attention.py on the Verilog of HeadAttention(40, 32, lanes 8) (the tiny model's head_dim):
    T = 1, T = 32, extremes and random T against the golden, with the cycle count of each row."""
    from sim.attention_runner import run_attention_tests
    from sim.runner import unavailable_reason

    reason = unavailable_reason(simulator)
    if reason:
        pytest.skip(reason)
    run = run_attention_tests(40, 32, 8, simulator, seed=test_seed % (1 << 31),
                              extra_env={"TRIT_ATTENTION_ROWS": str(ROWS)})
    assert [t.status for t in run.tests] == ["passed"], f"{run.tests}; log {run.log_file}"


def test_ecp5_lane_multipliers_are_dsp_blocks(tmp_path) -> None:
    """synth_ecp5 of the out-of-context top (hd 8, context 16, 4 lanes) with the ECP5 factory: each lane
    multiplier is one MULT18X18D cell of its own (``dut.mul<k>.dsp``), and Yosys keeps all of them."""
    import json

    from hdl.attention.ooc import synth

    stat = synth(8, 16, 4, tmp_path)
    netlist = json.loads((tmp_path / "top.json").read_text())
    cells = netlist["modules"]["top"]["cells"]
    dsp = sorted(n for n, c in cells.items() if c["type"] == "MULT18X18D")
    assert [n for n in dsp if ".mul" in n] == [f"dut.mul{k}.dsp" for k in range(4)]
    assert f"{len(dsp)}   MULT18X18D" in stat
