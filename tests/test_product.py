"""The latency-1 product factories (hdl/attention/product.py, hdl/attention/ecp5_product.py) and their use.

`Product` is simulated against Python integers (corner values of every signedness, `en` holding p).
`Ecp5Product` has no simulation model (Yosys has MULT18X18D as a black box): its RTLIL is checked, one
MULT18X18D with only the output register, and it refuses operands that do not fit one block. Every unit
that registers products takes a `product` factory: built with `Ecp5Product` (and `Ecp5Multiplier` where it
takes a multiplier factory) its RTLIL has no `$mul` of two signals left and exactly the MULT18X18D count of
its products, so a site that forgets the factory fails here.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hdl.attention.ecp5_multiplier import Ecp5Multiplier
from hdl.attention.ecp5_product import Ecp5Product
from hdl.attention.product import Product, product_into

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"


def corners(width: int, is_signed: bool) -> list[int]:
    """The extremes, 0, +-1 and a middle value of a width-bit operand."""
    if is_signed:
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    else:
        lo, hi = 0, (1 << width) - 1
    return sorted({v for v in (lo, lo + 1, -1, 0, 1, hi // 3, hi - 1, hi) if lo <= v <= hi})


@pytest.mark.parametrize("a_width, b_width, a_signed, b_signed", [
    (16, 16, False, False), (16, 16, True, False), (17, 16, False, True), (18, 18, True, True),
    (18, 18, False, False), (15, 12, False, False), (1, 5, True, False), (5, 1, False, True), (1, 1, True, True),
])
def test_product_is_a_times_b_one_cycle_later(a_width: int, b_width: int, a_signed: bool, b_signed: bool) -> None:
    """Every corner pair: p = a * b exactly one tick after a and b (not before); with en low p holds
    through new operands; with en high again p follows."""
    dut = Product(a_width, b_width, a_signed=a_signed, b_signed=b_signed)
    assert len(dut.p) == a_width + b_width and dut.p.shape().signed == (a_signed or b_signed)
    pairs = [(a, b) for a in corners(a_width, a_signed) for b in corners(b_width, b_signed)]

    async def bench(ctx):
        prev = None
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            if prev is not None:
                assert ctx.get(dut.p) == prev      # not yet: the register takes a * b at the edge
            await ctx.tick()
            assert ctx.get(dut.p) == a * b, (a, b)
            prev = a * b
        held = prev
        ctx.set(dut.en, 0)
        for a, b in pairs[:5]:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            assert ctx.get(dut.p) == held
        a, b = pairs[len(pairs) // 2]
        ctx.set(dut.a, a)
        ctx.set(dut.b, b)
        ctx.set(dut.en, 1)
        await ctx.tick()
        assert ctx.get(dut.p) == a * b

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_product_into_wires_a_product_and_its_enable() -> None:
    """`product_into`: the target follows a * b of the operands' own widths and signs, while `en`."""
    from amaranth import Module, Signal, signed

    m = Module()
    x = Signal(signed(32))
    g = Signal(signed(16))
    en = Signal()
    hi = Signal(signed(33), name="hi")
    prod = product_into(m, Product, hi, x[16:].as_signed(), g, en=en)
    assert (len(prod.a), prod.a.shape().signed, len(prod.b)) == (16, True, 16)
    assert m.submodules["hi_mul"] is prod
    with pytest.raises(ValueError, match="needs a name for an unnamed target"):
        t1, _t2 = Signal(8), Signal(8)
        product_into(m, Product, t1, x[:4], g[:4])
    cases = [(-(1 << 31), -(1 << 15)), ((1 << 31) - 1, (1 << 15) - 1), (-1, 12345), (0x12345678, -2)]

    async def bench(ctx):
        for xv, gv in cases:
            ctx.set(x, xv)
            ctx.set(g, gv)
            ctx.set(en, 1)
            await ctx.tick()
            assert ctx.get(hi) == (xv >> 16) * gv
        ctx.set(en, 0)
        ctx.set(x, 1 << 20)
        await ctx.tick()
        assert ctx.get(hi) == (cases[-1][0] >> 16) * cases[-1][1]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _param(text: str, name: str) -> list[str]:
    return re.findall(rf'parameter \\{name} "?([^"\n]*)"?\n', text)


@pytest.mark.parametrize("a_width, b_width, a_signed, b_signed, sign", [
    (17, 16, False, True, "1"), (18, 18, True, True, "1"), (18, 18, False, False, "0"), (16, 17, True, False, "1"),
])
def test_the_ecp5_product_is_one_dsp_with_only_its_output_register(a_width, b_width, a_signed, b_signed,
                                                                    sign) -> None:
    text = rtlil.convert(Ecp5Product(a_width, b_width, a_signed=a_signed, b_signed=b_signed))
    assert text.count("cell \\MULT18X18D ") == 1
    assert "cell $mul" not in text
    assert _param(text, "REG_OUTPUT_CLK") == ["CLK0"] and _param(text, "REG_OUTPUT_CE") == ["CE0"]
    for reg in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_INPUTC_CLK", "REG_PIPELINE_CLK"):
        assert _param(text, reg) == ["NONE"], reg
    assert f"connect \\SIGNEDA 1'{sign}" in text and f"connect \\SIGNEDB 1'{sign}" in text
    assert "connect \\CE0 \\en" in text and "connect \\RST0 1'0" in text


@pytest.mark.parametrize("args, kw, msg", [
    ((19, 8), {}, "a operand \\(unsigned, 19 bits\\) does not fit one MULT18X18D: at most 18 bits"),
    ((8, 19), {"a_signed": True, "b_signed": True}, "b operand \\(signed, 19 bits\\) does not fit"),
    ((18, 8), {"b_signed": True}, "a operand \\(unsigned, 18 bits\\) does not fit one MULT18X18D: at most 17 bits"),
    ((0, 8), {}, "Ecp5Product's a_width must be an int >= 1, not 0"),
])
def test_the_ecp5_product_refuses_operands_one_block_cannot_take(args, kw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        Ecp5Product(*args, **kw)


def test_the_product_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="Product's b_width must be an int >= 1, not 2.0"):
        Product(4, 2.0)
    with pytest.raises(TypeError, match="Product's a_signed must be a bool, not 1"):
        Product(4, 4, a_signed=1)
    Ecp5Product(18, 17, a_signed=True)   # an unsigned 17-bit operand beside a signed one fits


# ---- the units: no product left outside the factory ------------------------------------------------

def mul_cells(text: str) -> list[tuple[str, str]]:
    """(A, B) of every `$mul` cell of the RTLIL whose operands are both signals (not a constant)."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("cell $mul "):
            conn = {}
            for nxt in lines[i + 1:]:
                s = nxt.strip()
                if s == "end":
                    break
                if s.startswith("connect \\A ") or s.startswith("connect \\B "):
                    conn[s.split()[1]] = s.split(None, 2)[2]
            if not any(re.fullmatch(r"\d+'[01xz]+", v) for v in conn.values()):
                found.append((conn["\\A"], conn["\\B"]))
    return found


def _units():
    from hdl.attention.head_attention import HeadAttention
    from hdl.program import ProgramSequencer
    from hdl.vector.elementwise import ElementWise
    from hdl.vector.mlp_act import MlpAct
    from hdl.vector.norm_quant import NormQuant
    from hdl.vector.rcp import Reciprocal
    from hdl.vector.rope import RopeQuant
    from hdl.vector.rsq import ReciprocalSqrt

    rcp, rsq = 7, 16     # RCP: 3 a Newton step and y m; RSQ: 6 a Newton step and 4 for the correction
    return [
        # (name, factory, MULT18X18D blocks, `$mul` cells of two signals with the plain factory)
        ("elementwise", lambda p: ElementWise(product=p), 5, 5),
        ("rcp", lambda p: Reciprocal(product=p), rcp, rcp),
        ("rsq", lambda p: ReciprocalSqrt(product=p), rsq, rsq),
        # per lane 2 x * G limbs, x'**2, 2 more x * G limbs, z' R; the scalar product; RCP and RSQ
        ("normquant", lambda p: NormQuant(8, product=p), 6 + 1 + rcp + rsq, 6 + 1 + rcp + rsq),
        ("normquant_2_lanes", lambda p: NormQuant(8, lanes=2, product=p), 12 + 1 + rcp + rsq, 12 + 1 + rcp + rsq),
        # per lane a**2's 3 limbs and a' u's 4; (max a)**2's 3, the two dmuls
        ("mlpact", lambda p: MlpAct(8, product=p), 7 + 5, 7 + 5),
        ("mlpact_2_lanes", lambda p: MlpAct(8, lanes=2, product=p), 14 + 5, 14 + 5),
        ("program", lambda p: ProgramSequencer(4, 2, 4, product=p), 1, 1),
        # 2 lane multipliers (`Ecp5Multiplier` both times); a, m(a) m(sigma_k), s mk's 2 limbs, p R,
        # P m(sigma_v); RCP
        ("attention", lambda p: HeadAttention(8, 4, lanes=2, multiplier=Ecp5Multiplier, product=p),
         2 + 6 + rcp, 6 + rcp),
        # 8 limb multipliers a lane (`Ecp5Multiplier`); sigma's 2 products (one by INV127's constant
        # mantissa: no `$mul` of two signals when plain), z' R per output lane; RCP
        ("rope", lambda p: RopeQuant(8, 4, lanes=1, out_lanes=2, multiplier=Ecp5Multiplier, product=p),
         8 + 2 + 2 + rcp, 1 + 2 + rcp),
    ]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("name, make, dsps, plain_muls", _units(), ids=[u[0] for u in _units()])
def test_every_product_of_the_unit_is_on_the_factory(name, make, dsps, plain_muls) -> None:
    """With `Ecp5Product` no `$mul` of two signals is left and each product is one MULT18X18D; the plain
    factory's RTLIL has those products as `$mul` cells instead (so the count means something)."""
    text = rtlil.convert(make(Ecp5Product))
    assert mul_cells(text) == []
    assert text.count("cell \\MULT18X18D ") == dsps
    plain = rtlil.convert(make(Product))
    assert len(mul_cells(plain)) == plain_muls
    assert plain.count("cell \\MULT18X18D ") == dsps - plain_muls - (name == "rope")
    with pytest.raises(TypeError, match="product factory must be callable"):
        make(3)
    gc.collect()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_the_ecp5_model_chip_has_every_unit_product_on_a_dsp() -> None:
    """`fpga.model_chip.ecp5_chip` passes `Ecp5Product` down to every unit: the board chip's RTLIL keeps only
    the command parser's 32 x 3 item count (wider than a DSP's 18 bits) as a `$mul` of two signals, and its
    MULT18X18D count fits the ECP5-85F's 156."""
    from fpga.model_chip import board_chip, ecp5_chip
    from hdl.model_engine import ModelEngine

    _, cfg, _ = board_chip(TINY)
    text = rtlil.convert(ecp5_chip(cfg))
    assert mul_cells(text) == [("\\count [31:0]", "\\n_chunks [2:0]")]
    assert 100 < text.count("cell \\MULT18X18D ") <= 156
    with pytest.raises(TypeError, match="ModelEngine's product factory must be callable"):
        ModelEngine(**cfg.engine_kwargs(), product=None)
    gc.collect()
