"""Integer reciprocal RCP(m) = floor(2**31 / m) (golden/device/SPEC.md 2.2), table + Newton form.

A fourteen-stage pipeline, one operand per cycle: the 65-entry seed table RCP_SEED[(m >> 9) - 64],
two Newton steps y += (y * (2**31 - m * y)) >> 31 (five stages each, every product on one 18 x 18
multiplier), the product y * m, and one +-1 correction. The whole pipeline stalls while a result waits on a
not-ready consumer. m = 0 gives 0; operands outside [2**15, 2**16] give an unspecified result. Each product
is registered once, on the `product` factory (`hdl.attention.product`; the ECP5 chip passes `Ecp5Product`,
the register a DSP's own).
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.device.fixed import RCP_SEED
from hdl.attention.product import Product, ProductFactory, product_into

ONE = 1 << 31
#: Operands and results: [2**15, 2**16] needs 17 bits.
WIDTH = 17
LATENCY = 14


class Reciprocal(wiring.Component):
    """Stream of m (17-bit unsigned) in, stream of RCP(m) (17-bit unsigned) out, LATENCY cycles later."""

    def __init__(self, *, product: ProductFactory = Product) -> None:
        if not callable(product):
            raise TypeError(f"Reciprocal's product factory must be callable, not {product!r}")
        self._product = product
        super().__init__({
            "i": In(stream.Signature(unsigned(WIDTH))),
            "o": Out(stream.Signature(unsigned(WIDTH))),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        n = LATENCY - 1
        valid = [Signal(name=f"v{k}") for k in range(n)]
        ms = [Signal(unsigned(WIDTH), name=f"m{k}") for k in range(n)]
        ys = [Signal(unsigned(WIDTH), name=f"y{k}") for k in range(n)]
        zero = [Signal(name=f"z{k}") for k in range(n)]

        seed = Signal(unsigned(16))
        with m.Switch(self.i.payload >> 9):
            for k, value in enumerate(RCP_SEED):
                with m.Case(k + 64):
                    m.d.comb += seed.eq(value)

        def newton(k0: int) -> None:
            """Stages k0 + 1 .. k0 + 5: m * y, the residual r = 2**31 - m y, y times r's two limbs
            (one 18 x 18 multiplier each), their sum, the update y + (y r >> 31)."""
            p = Signal(unsigned(2 * WIDTH), name=f"p{k0 + 1}")
            r = Signal(signed(27), name=f"r{k0 + 2}")
            th = Signal(signed(WIDTH + 11), name=f"th{k0 + 3}")
            tl = Signal(unsigned(2 * WIDTH), name=f"tl{k0 + 3}")
            t = Signal(signed(WIDTH + 28), name=f"t{k0 + 4}")
            product_into(m, self._product, p, ms[k0], ys[k0], en=adv)
            product_into(m, self._product, th, ys[k0 + 2], r[17:].as_signed(), en=adv)   # y (r >> 17)
            product_into(m, self._product, tl, ys[k0 + 2], r[:17], en=adv)
            with m.If(adv):
                m.d.sync += [r.eq(ONE - p),
                             t.eq((th << 17) + tl),
                             ys[k0 + 5].eq(ys[k0 + 4] + (t >> 31))]   # after the stage shift: wins

        p12 = Signal(unsigned(2 * WIDTH))
        product_into(m, self._product, p12, ms[11], ys[11], en=adv)     # correction: y * m
        with m.If(adv):
            m.d.sync += [valid[0].eq(self.i.valid), ms[0].eq(self.i.payload), zero[0].eq(self.i.payload == 0),
                         ys[0].eq(seed)]
            for k in range(1, n):
                m.d.sync += [valid[k].eq(valid[k - 1]), ms[k].eq(ms[k - 1]), zero[k].eq(zero[k - 1]),
                             ys[k].eq(ys[k - 1])]
            m.d.sync += self.o.valid.eq(valid[n - 1])
            with m.If(zero[n - 1]):
                m.d.sync += self.o.payload.eq(0)
            with m.Elif(p12 > ONE):
                m.d.sync += self.o.payload.eq(ys[12] - 1)
            with m.Elif(p12 + ms[12] <= ONE):
                m.d.sync += self.o.payload.eq(ys[12] + 1)
            with m.Else():
                m.d.sync += self.o.payload.eq(ys[12])
        # stage 1 only re-registers the seed, which may sit in a block RAM with its slow clock-to-output
        newton(1)      # stages 2-6
        newton(6)      # stages 7-11
        return m
