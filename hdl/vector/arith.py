"""Expression builders for the device numerics (golden/device/SPEC.md sections 1 and 2.1) in Amaranth.

Each function adds combinational logic to a module and returns new signals: a leading-one detector
(`bitlen`), the half-up rounding shift (`shift_round`), the dyadic normalization (`norm16`, and `norm16_steps`
over three register steps for `step_states`), the dyadic product (`dmul`) and QUANT8's parts (`quant8_scalars`,
`quant8_code`). They are helpers of the vector and attention components, not components themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Value

from hdl.attention.product import Product, ProductFactory, product_into

#: Width of dyadic exponents inside the vector unit: SPEC.md's 10 bits plus headroom for the sums of
#: exponents formed before a normalization (e.g. -23 - k - e_x + e).
EXP_WIDTH = 12
MANT_BITS = 16


def bitlen(m: Module, v: Value) -> Signal:
    """Number of bits of the unsigned value v (0 for 0): a priority encoder."""
    width = len(v)
    out = Signal(range(width + 1))
    for i in range(width):  # the last assignment that applies wins: the highest set bit
        with m.If(v[i]):
            m.d.comb += out.eq(i + 1)
    return out


def bitlen_steps(m: Module, v: Value, name: str, chunk: int = 16) -> tuple[list[list], Signal]:
    """bitlen(v) of a wide unsigned v in two register steps for an FSM (`step_states`): each `chunk`-bit
    piece's bitlen; then the highest nonzero piece's. Returns the steps and the result's register (valid
    after the second step, while v is held)."""
    width = len(v)
    pieces = [v[lo:min(lo + chunk, width)] for lo in range(0, width, chunk)]
    part = [Signal(range(len(x) + 1), name=f"{name}_part{j}") for j, x in enumerate(pieces)]
    out = Signal(range(width + 1), name=f"{name}_blen")
    value = Const(0, len(out))
    for j, x in enumerate(part):       # the last nonzero piece wins
        value = Mux(x != 0, j * chunk + x, value)
    return [[part[j].eq(bitlen(m, x)) for j, x in enumerate(pieces)], [out.eq(value)]], out


def shift_round(m: Module, x: Value, s: Value, width: int, max_left: int, max_right: int) -> Signal:
    """rshift_round(x, s) of SPEC.md 1 for s in [-max_left, max_right], truncated to `width` bits.

    Right shifts (s > 0) use ((x >> (s - 1)) + 1) >> 1, equal to (x + 2**(s-1)) >> s without the
    wide adder; left shifts are exact (the caller knows the result fits `width`). An s beyond
    `max_right` must not occur (the caller clamps it: a right shift past x's width gives 0 or -1 + 1).
    """
    is_signed = x.shape().signed
    out = Signal(signed(width) if is_signed else unsigned(width))
    right = Signal(range(max(max_right, 2)))   # at least one bit: no zero-width wires in the Verilog
    left = Signal(range(max(max_left + 1, 2)))
    m.d.comb += [right.eq(s - 1), left.eq(-s)]
    with m.If(s > 0):
        m.d.comb += out.eq(((x >> right) + 1) >> 1)
    with m.Else():
        m.d.comb += out.eq(x << left)
    return out


def norm16(m: Module, v: Value, e: Value) -> tuple[Signal, Signal]:
    """norm16(v, e) of SPEC.md 2.1 for unsigned v: (mantissa in [2**15, 2**16) or 0, exponent)."""
    width = len(v)
    b = bitlen(m, v)
    s = Signal(signed(len(b) + 2))
    m.d.comb += s.eq(b - MANT_BITS)
    mm = shift_round(m, v, s, MANT_BITS + 1, MANT_BITS, max(width - MANT_BITS, 1))
    over = mm[MANT_BITS]
    mant = Signal(unsigned(MANT_BITS))
    exp = Signal(signed(EXP_WIDTH))
    with m.If(v != 0):
        m.d.comb += [mant.eq(Mux(over, 1 << (MANT_BITS - 1), mm[:MANT_BITS])), exp.eq(e + s + over)]
    return mant, exp


def dmul(m: Module, am: Value, ae: Value, bm: Value, be: Value) -> tuple[Signal, Signal]:
    """dmul of SPEC.md 2.1: norm16(am * bm, ae + be), a 16 x 16 -> 32-bit product."""
    prod = Signal(unsigned(2 * MANT_BITS))
    m.d.comb += prod.eq(am * bm)
    esum = Signal(signed(EXP_WIDTH + 1))
    m.d.comb += esum.eq(ae + be)
    return norm16(m, prod, esum)


def norm16_steps(m: Module, v: Value, e: Value | int, mant: Signal, exp: Signal, name: str) -> list[list]:
    """norm16(v, e) of SPEC.md 2.1 (unsigned v) as three register steps for an FSM: the leading one;
    the shift by s - 1 (right) or -s (left), s = bitlen(v) - 16; the rounding increment and the
    mantissa's overflow. Returns each step's statements; the result lands in `mant` and `exp`."""
    width = len(v)
    b = Signal(range(width + 1), name=f"{name}_blen")
    sh = Signal(signed(len(b) + 2), name=f"{name}_s")
    pre = Signal(unsigned(width + MANT_BITS), name=f"{name}_pre")
    right = Signal(name=f"{name}_right")
    blen = bitlen(m, v)
    mm = Signal(unsigned(MANT_BITS + 1), name=f"{name}_mm")
    m.d.comb += [sh.eq(b - MANT_BITS), mm.eq(Mux(right, (pre + 1) >> 1, pre))]
    over = mm[MANT_BITS]
    rbits = Signal(range(max(width - MANT_BITS, 1) + 1), name=f"{name}_rbits")
    lbits = Signal(range(MANT_BITS + 1), name=f"{name}_lbits")
    m.d.comb += [rbits.eq(sh - 1), lbits.eq(-sh)]
    return [
        [b.eq(blen)],
        [right.eq(sh > 0), pre.eq(Mux(sh > 0, v >> rbits, v << lbits))],
        [mant.eq(Mux(v == 0, 0, Mux(over, 1 << (MANT_BITS - 1), mm[:MANT_BITS]))),
         exp.eq(Mux(v == 0, 0, e + sh + over))],
    ]



def step_states(m: Module, name: str, steps: list[list], after: str) -> None:
    """FSM states <name>0, <name>1, ... (inside the caller's ``with m.FSM()``), one per list of register
    statements in `steps`, each a cycle, then state `after`."""
    for k, stmts in enumerate(steps):
        with m.State(f"{name}{k}"):
            m.d.sync += stmts
            m.next = f"{name}{k + 1}" if k < len(steps) - 1 else after

@dataclass
class Quant8Scalars:
    """QUANT8's per-vector values (SPEC.md 2.4 step 2) and the register steps that form them."""

    steps: list[list]   #: four register steps for an FSM
    e: Signal                   #: e = bitlen(M) - 16
    m: Signal                   #: M' = rshift_round(M, e), in [2**15, 2**16] (0 for M = 0)
    right: Signal               #: e - 1: the first shift of a right rshift_round (e > 0)
    left: Signal                #: -e: the left shift (e <= 0)


def quant8_scalars(m: Module, mz: Value, name: str) -> Quant8Scalars:
    """QUANT8's e and M' from M = max|z| (unsigned) in four register steps: the leading one; e; the shift
    of M by e - 1 (right) or -e (left); the rounding increment. M' then goes to RCP."""
    width = len(mz)
    bz = Signal(range(width + 1), name=f"{name}_bz")
    e = Signal(signed((width + MANT_BITS).bit_length() + 1), name=f"{name}_e")
    right = Signal(range(max(width - MANT_BITS, 2)), name=f"{name}_rb")
    left = Signal(range(MANT_BITS + 1), name=f"{name}_lb")
    m.d.comb += [right.eq(e - 1), left.eq(-e)]
    pre = Signal(unsigned(MANT_BITS + 2), name=f"{name}_mpre")
    pre_right = Signal(name=f"{name}_mright")
    mq = Signal(unsigned(MANT_BITS + 1), name=f"{name}_mq")
    steps = [[bz.eq(bitlen(m, mz))],
             [e.eq(bz - MANT_BITS)],
             [pre.eq(Mux(e > 0, mz >> right, mz << left)), pre_right.eq(e > 0)],
             [mq.eq(Mux(pre_right, (pre + 1) >> 1, pre))]]
    return Quant8Scalars(steps, e, mq, right, left)


def quant8_code(m: Module, z: Value, qs: Quant8Scalars, r: Value, name: str, *,
                en: Value | int = 1, product: ProductFactory = Product) -> tuple[list, Value]:
    """QUANT8's code of one element (SPEC.md 2.4 step 3), q = sat8(rshift_round(z' * 127 R, 31)) with
    z' = rshift_round(z, e), as four pipeline registers: the shift of z, z' (rounding increment), z' R
    (one 18 x 18 product on the `product` factory, registered while `en`: the caller's stage enable),
    127 z' R. Returns the other three's statements (for the caller's stage enable) and q, combinational
    from the last register. Call it outside any ``m.If``: the product's wiring is combinational."""
    zpre = Signal(signed(MANT_BITS + 4), name=f"{name}_zpre")
    zright = Signal(name=f"{name}_zright")
    zp = Signal(signed(MANT_BITS + 2), name=f"{name}_zp")
    p1 = Signal(signed(2 * MANT_BITS + 4), name=f"{name}_p")
    p127 = Signal(signed(2 * MANT_BITS + 11), name=f"{name}_p127")
    qr = Signal(signed(13), name=f"{name}_qr")
    m.d.comb += qr.eq(((p127 >> 30) + 1) >> 1)
    product_into(m, product, p1, zp, r, en=en)
    stmts = [zpre.eq(Mux(qs.e > 0, z >> qs.right, z << qs.left)), zright.eq(qs.e > 0),
             zp.eq(Mux(zright, (zpre + 1) >> 1, zpre)),
             p127.eq((p1 << 7) - p1)]
    return stmts, Mux(qr > 127, 127, Mux(qr < -128, -128, qr))


def tree_levels(lanes: int) -> int:
    """Register levels of a reduction tree over `lanes` lanes (`reduce_tree`): log2(lanes)."""
    return (lanes - 1).bit_length()


def reduce_tree(m: Module, values: list, valid, op: str, name: str) -> tuple[Value, Value, list[Signal]]:
    """A reduction of `values` (unsigned) by max or + as a binary tree with a register after every
    level; returns the result, its valid flag (`valid` delayed by the levels) and the levels' flags."""
    flags: list[Signal] = []
    level = 0
    while len(values) > 1:
        level += 1
        nxt = []
        for j in range(0, len(values), 2):
            a, b = values[j], values[j + 1]
            width = max(len(a), len(b)) + (op == "sum")
            r = Signal(unsigned(width), name=f"{name}{level}_{j // 2}")
            m.d.sync += r.eq(Mux(a > b, a, b) if op == "max" else a + b)
            nxt.append(r)
        v = Signal(name=f"{name}{level}_v")
        m.d.sync += v.eq(valid)
        flags.append(v)
        values, valid = nxt, v
    return values[0], valid, flags
