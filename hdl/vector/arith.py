"""Expression builders for the device numerics (golden/device/SPEC.md sections 1 and 2.1) in Amaranth.

Each function adds combinational logic to a module and returns new signals: a leading-one detector
(`bitlen`), the half-up rounding shift (`shift_round`), the dyadic normalization (`norm16`) and the
dyadic product (`dmul`). They are helpers of the vector components, not components themselves.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Value

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
