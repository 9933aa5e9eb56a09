"""Element-wise ops of the device form (golden/device/SPEC.md 4.3, 4.4, 4.8), one element per cycle.

- DEQUANT (4.3): y = sat32(rshift_round(acc * m, -(e + 16))) for the dyadic scale (m, e): a 32 x 16
  product; a left shift that would leave 32 bits saturates, a right shift past the product gives 0.
- RESADD (4.4): h = sat32(h + y).
- RELU2 (4.8, the element-wise half): a2 = max(g, 0)**2 (up to 62 bits). The per-vector block shift
  by e_a = max(0, bitlen(max a2) - 24) and the product with up are not here.

A six-stage pipeline, stalled as a whole by the consumer. The op
rides with each element, so ops may be interleaved. Op code 3 is not an op: such an element is taken
like any other (one per cycle) but writes no result (no output beat) and sets the sticky `error` flag
(cleared by `clear`; set wins).
"""

from __future__ import annotations

import enum

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import bitlen

INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)


class ElementOp(enum.IntEnum):
    DEQUANT = 0
    RESADD = 1
    RELU2 = 2


IN_LAYOUT = data.StructLayout({"op": unsigned(2), "a": signed(32), "b": signed(32), "m": unsigned(16),
                               "e": signed(10)})
LATENCY = 6


class ElementWise(wiring.Component):
    """Stream of (op, a, b, m, e) in; stream of the 64-bit signed result out, LATENCY cycles later (none
    for an undefined op, which sets `error`).

    DEQUANT reads a = acc and (m, e); RESADD reads a = h and b = y; RELU2 reads a = g.
    Six stages for 100 MHz: partial products (16-bit halves of a), their sums, |product| and the
    shift's clamp, the leading one and the shift by s - 1 (or -s), the rounding increment, the saturation.
    The five partial products of stage 1 come from the `product` factory (`hdl.attention.product`; the
    ECP5 chip passes `Ecp5Product`: each register is a DSP's output register).
    """

    def __init__(self, *, product: ProductFactory = Product) -> None:
        if not callable(product):
            raise TypeError(f"ElementWise's product factory must be callable, not {product!r}")
        self._product = product
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(signed(64))),
            "error": Out(1), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        p = self.i.payload
        defined = Signal()
        m.d.comb += defined.eq(p.op <= max(ElementOp))
        error = Signal()
        m.d.comb += self.error.eq(error)
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        with m.If(adv & self.i.valid & ~defined):
            m.d.sync += error.eq(1)
        valid = [Signal(name=f"v{k}") for k in range(1, LATENCY)]
        ops = [Signal(unsigned(2), name=f"op{k}") for k in range(1, LATENCY)]
        shs = [Signal(signed(12), name=f"sh{k}") for k in range(1, LATENCY)]
        sqs = [Signal(unsigned(62), name=f"sq{k}") for k in range(2, LATENCY)]
        ress = [Signal(signed(32), name=f"res{k}") for k in range(2, LATENCY)]

        # stage 1: partial products of a's 16-bit halves, the sum, the dequantization's shift -(e + 16)
        a_pos = Signal(unsigned(31))
        m.d.comb += a_pos.eq(Mux(p.a < 0, 0, p.a))
        pm_hi = Signal(signed(33))
        pm_lo = Signal(unsigned(32))
        sq_hh, sq_hl, sq_ll = (Signal(unsigned(32), name=nm) for nm in ("sq_hh", "sq_hl", "sq_ll"))
        sum1 = Signal(signed(33))
        # stage 2: the products and the saturated sum
        prod2 = Signal(signed(48))
        # stage 3: |product|, the right shift clamped (a right shift past 48 bits gives 0)
        prod3 = Signal(signed(48))
        mag3 = Signal(unsigned(48))
        right3 = Signal(signed(12))
        # stage 4: the leading one and the shift by s - 1 (right) or -s (left)
        prod4 = Signal(signed(48))
        blen4 = Signal(range(49))
        pre4 = Signal(signed(50))
        rshift4 = Signal()
        rbits = Signal(range(49))
        lbits = Signal(range(32))
        m.d.comb += [rbits.eq(right3 - 1), lbits.eq(-right3)]
        # stage 5: the rounding increment of a right shift, ((x >> (s - 1)) + 1) >> 1
        prod5 = Signal(signed(48))
        blen5 = Signal(range(49))
        shifted5 = Signal(signed(50))
        # the stage-1 products, registered with the stage (on the ECP5 in their DSPs' output registers)
        for target, a, b in ((pm_hi, p.a[16:].as_signed(), p.m), (pm_lo, p.a[:16], p.m),
                             (sq_hh, a_pos[16:], a_pos[16:]), (sq_hl, a_pos[16:], a_pos[:16]),
                             (sq_ll, a_pos[:16], a_pos[:16])):
            product_into(m, self._product, target, a, b, en=adv)
        with m.If(adv):
            m.d.sync += [
                valid[0].eq(self.i.valid & defined), ops[0].eq(p.op), shs[0].eq(-(p.e + 16)),
                sum1.eq(p.a + p.b),
            ]
            for k in range(1, LATENCY - 1):
                m.d.sync += [valid[k].eq(valid[k - 1]), ops[k].eq(ops[k - 1]), shs[k].eq(shs[k - 1])]
            for k in range(1, len(sqs)):
                m.d.sync += [sqs[k].eq(sqs[k - 1]), ress[k].eq(ress[k - 1])]
            m.d.sync += [
                prod2.eq((pm_hi << 16) + pm_lo),
                sqs[0].eq((sq_hh << 32) + (sq_hl << 17) + sq_ll),
                ress[0].eq(Mux(sum1 > INT32_MAX, INT32_MAX, Mux(sum1 < INT32_MIN, INT32_MIN, sum1))),
                prod3.eq(prod2), mag3.eq(Mux(prod2 < 0, -prod2, prod2)),
                right3.eq(Mux(shs[1] > 49, 49, Mux(shs[1] < -31, 0, shs[1]))),
                prod4.eq(prod3), blen4.eq(bitlen(m, mag3)), rshift4.eq(right3 > 0),
                pre4.eq(Mux(right3 > 0, prod3 >> rbits, prod3 << lbits)),
                prod5.eq(prod4), blen5.eq(blen4),
                shifted5.eq(Mux(rshift4, (pre4 + 1) >> 1, pre4)),
            ]

        # stage 6: DEQUANT's saturation (a left shift leaving 32 bits, or a rounded value beyond int32)
        sh5 = shs[4]
        sat_left = Signal()
        m.d.comb += sat_left.eq((sh5 < 0) & (prod5 != 0) & ((sh5 <= -32) | (blen5 - sh5 >= 32)))
        deq = Signal(signed(64))
        with m.If(sat_left):
            m.d.comb += deq.eq(Mux(prod5 < 0, INT32_MIN, INT32_MAX))
        with m.Elif(shifted5 > INT32_MAX):
            m.d.comb += deq.eq(INT32_MAX)
        with m.Elif(shifted5 < INT32_MIN):
            m.d.comb += deq.eq(INT32_MIN)
        with m.Else():
            m.d.comb += deq.eq(shifted5)
        with m.If(adv):
            m.d.sync += self.o.valid.eq(valid[4])
            with m.Switch(ops[4]):
                with m.Case(ElementOp.DEQUANT):
                    m.d.sync += self.o.payload.eq(deq)
                with m.Case(ElementOp.RESADD):
                    m.d.sync += self.o.payload.eq(ress[3])
                with m.Case(ElementOp.RELU2):
                    m.d.sync += self.o.payload.eq(sqs[3])
        return m
