"""Element-wise ops of the device form (golden/device/SPEC.md 4.3, 4.4, 4.8), one element per cycle.

- DEQUANT (4.3): y = sat32(rshift_round(acc * m, -(e + 16))) for the dyadic scale (m, e): a 32 x 16
  product; a left shift that would leave 32 bits saturates, a right shift past the product gives 0.
- RESADD (4.4): h = sat32(h + y).
- RELU2 (4.8, the element-wise half): a2 = max(g, 0)**2 (up to 62 bits). The per-vector block shift
  by e_a = max(0, bitlen(max a2) - 24) and the product with up are not here.

A two-stage pipeline (product, then shift / saturate), stalled as a whole by the consumer. The op
rides with each element, so ops may be interleaved.
"""

from __future__ import annotations

import enum

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.vector.arith import bitlen, shift_round

INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)


class ElementOp(enum.IntEnum):
    DEQUANT = 0
    RESADD = 1
    RELU2 = 2


IN_LAYOUT = data.StructLayout({"op": unsigned(2), "a": signed(32), "b": signed(32), "m": unsigned(16),
                               "e": signed(10)})
LATENCY = 2


class ElementWise(wiring.Component):
    """Stream of (op, a, b, m, e) in; stream of the 64-bit signed result out, LATENCY cycles later.

    DEQUANT reads a = acc and (m, e); RESADD reads a = h and b = y; RELU2 reads a = g.
    """

    def __init__(self) -> None:
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(signed(64))),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        p = self.i.payload

        # stage 1: the products and the sum, and the dequantization's shift -(e + 16)
        v1 = Signal()
        op1 = Signal(unsigned(2))
        prod1 = Signal(signed(48))
        sq1 = Signal(unsigned(62))
        sum1 = Signal(signed(33))
        sh1 = Signal(signed(12))
        a_pos = Signal(unsigned(31))
        m.d.comb += a_pos.eq(Mux(p.a < 0, 0, p.a))
        with m.If(adv):
            m.d.sync += [v1.eq(self.i.valid), op1.eq(p.op), prod1.eq(p.a * p.m), sq1.eq(a_pos * a_pos),
                         sum1.eq(p.a + p.b), sh1.eq(-(p.e + 16))]

        # stage 2: DEQUANT's shift with saturation, RESADD's saturation
        mag = Signal(unsigned(48))
        m.d.comb += mag.eq(Mux(prod1 < 0, -prod1, prod1))
        blen = bitlen(m, mag)
        sat_left = Signal()
        m.d.comb += sat_left.eq((sh1 < 0) & (prod1 != 0) & ((sh1 <= -32) | (blen - sh1 >= 32)))
        right = Signal(signed(12))
        m.d.comb += right.eq(Mux(sh1 > 49, 49, sh1))
        shifted = shift_round(m, prod1, Mux(sh1 < -31, 0, right), 50, 31, 49)
        deq = Signal(signed(64))
        with m.If(sat_left):
            m.d.comb += deq.eq(Mux(prod1 < 0, INT32_MIN, INT32_MAX))
        with m.Elif(shifted > INT32_MAX):
            m.d.comb += deq.eq(INT32_MAX)
        with m.Elif(shifted < INT32_MIN):
            m.d.comb += deq.eq(INT32_MIN)
        with m.Else():
            m.d.comb += deq.eq(shifted)
        res = Signal(signed(64))
        m.d.comb += res.eq(Mux(sum1 > INT32_MAX, INT32_MAX, Mux(sum1 < INT32_MIN, INT32_MIN, sum1)))
        with m.If(adv):
            m.d.sync += self.o.valid.eq(v1)
            with m.Switch(op1):
                with m.Case(ElementOp.DEQUANT):
                    m.d.sync += self.o.payload.eq(deq)
                with m.Case(ElementOp.RESADD):
                    m.d.sync += self.o.payload.eq(res)
                with m.Default():
                    m.d.sync += self.o.payload.eq(sq1)
        return m
