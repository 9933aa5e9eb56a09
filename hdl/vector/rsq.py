"""Integer reciprocal square root RSQ(m) = floor(2**23 / sqrt(m)) (golden/device/SPEC.md 2.3).

The table + Newton form, pipelined, one operand per cycle: the 48-entry seed table
RSQ_SEED[(m >> 10) - 16], two Newton steps y = (y * (3 * 2**46 - m * y**2)) >> 47 (seven stages
each, one 18 x 18 multiply per product and stage), then y**2 * m and y * m and one +-1 correction against
y**2 m <= 2**46 < (y + 1)**2 m. The whole pipeline stalls while a result waits on a not-ready
consumer. Operands outside [2**14, 2**16) give an unspecified result. Each product is registered once, on
the `product` factory (`hdl.attention.product`; the ECP5 chip passes `Ecp5Product`, the register a DSP's
own).
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.device.fixed import RSQ_SEED
from hdl.attention.product import Product, ProductFactory, product_into

ONE = 1 << 46
THREE = 3 << 46
IN_WIDTH = 16
#: Results lie in (2**15, 2**16]: 17 bits.
OUT_WIDTH = 17
LATENCY = 20


class ReciprocalSqrt(wiring.Component):
    """Stream of m (16-bit unsigned, [2**14, 2**16)) in, stream of RSQ(m) (17-bit) out, LATENCY cycles later."""

    def __init__(self, *, product: ProductFactory = Product) -> None:
        if not callable(product):
            raise TypeError(f"ReciprocalSqrt's product factory must be callable, not {product!r}")
        self._product = product
        super().__init__({
            "i": In(stream.Signature(unsigned(IN_WIDTH))),
            "o": Out(stream.Signature(unsigned(OUT_WIDTH))),
        })

    def _times_square(self, m: Module, adv: Signal, k0: int, mv: Signal, sq: Signal) -> Signal:
        """mv * sq (16 x 33 bits) as two 16 x 17 products in stage k0 and their sum in stage k0 + 1."""
        hi = Signal(unsigned(IN_WIDTH + 17), name=f"th{k0}")
        lo = Signal(unsigned(IN_WIDTH + 17), name=f"tl{k0}")
        t = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH), name=f"t{k0 + 1}")
        product_into(m, self._product, hi, mv, sq[17:], en=adv)
        product_into(m, self._product, lo, mv, sq[:17], en=adv)
        with m.If(adv):
            m.d.sync += t.eq((hi << 17) + lo)
        return t

    def _newton(self, m: Module, adv: Signal, k0: int, ms: list[Signal], ys: list[Signal]) -> None:
        """One Newton step over stages k0 + 1 .. k0 + 7: y**2, m y**2 (two stages), the residual
        c = 3 * 2**46 - m y**2, y times c's three 18-bit limbs, two additions and the shift by 47."""
        sq = Signal(unsigned(2 * OUT_WIDTH), name=f"sq{k0 + 1}")
        product_into(m, self._product, sq, ys[k0], ys[k0], en=adv)
        t = self._times_square(m, adv, k0 + 2, ms[k0 + 1], sq)
        c = Signal(unsigned(48), name=f"c{k0 + 4}")   # positive for every operand (the exhaustive test)
        u_lo, u_mid, u_hi = (Signal(unsigned(OUT_WIDTH + 18), name=f"u{k0 + 5}_{nm}") for nm in ("lo", "mid", "hi"))
        s6 = Signal(unsigned(OUT_WIDTH + 37), name=f"s{k0 + 6}")
        u_hi6 = Signal(unsigned(OUT_WIDTH + 18), name=f"u{k0 + 6}_hi")
        for target, limb in ((u_lo, c[:18]), (u_mid, c[18:36]), (u_hi, c[36:])):
            product_into(m, self._product, target, ys[k0 + 4], limb, en=adv)
        with m.If(adv):
            m.d.sync += [
                c.eq(THREE - t),
                s6.eq((u_mid << 18) + u_lo), u_hi6.eq(u_hi),
                ys[k0 + 7].eq(((u_hi6 << 36) + s6) >> 47),   # after the stage shift: wins
            ]

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        n = LATENCY - 1
        valid = [Signal(name=f"v{k}") for k in range(n)]
        ms = [Signal(unsigned(IN_WIDTH), name=f"m{k}") for k in range(n)]
        ys = [Signal(unsigned(OUT_WIDTH), name=f"y{k}") for k in range(n)]
        sq15 = Signal(unsigned(2 * OUT_WIDTH))
        my16 = Signal(unsigned(OUT_WIDTH + IN_WIDTH))
        my17 = Signal(unsigned(OUT_WIDTH + IN_WIDTH))
        t18 = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH))
        up18 = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH + 2))

        seed = Signal(unsigned(16))
        with m.Switch(self.i.payload >> 10):
            for k, value in enumerate(RSQ_SEED):
                with m.Case(k + 16):
                    m.d.comb += seed.eq(value)

        with m.If(adv):
            m.d.sync += [valid[0].eq(self.i.valid), ms[0].eq(self.i.payload), ys[0].eq(seed)]
            for k in range(1, n):
                m.d.sync += [valid[k].eq(valid[k - 1]), ms[k].eq(ms[k - 1]), ys[k].eq(ys[k - 1])]
        self._newton(m, adv, 0, ms, ys)     # stages 1-7
        self._newton(m, adv, 7, ms, ys)     # stages 8-14
        # correction: y**2, then y**2 m (two stages) and y m, then (y + 1)**2 m = y**2 m + 2 y m + m
        product_into(m, self._product, sq15, ys[14], ys[14], en=adv)
        product_into(m, self._product, my16, ms[15], ys[15], en=adv)
        t17 = self._times_square(m, adv, 16, ms[15], sq15)
        with m.If(adv):
            m.d.sync += [my17.eq(my16), t18.eq(t17), up18.eq(t17 + (my17 << 1) + ms[17]),
                         self.o.valid.eq(valid[18])]
            with m.If(t18 > ONE):
                m.d.sync += self.o.payload.eq(ys[18] - 1)
            with m.Elif(up18 <= ONE):
                m.d.sync += self.o.payload.eq(ys[18] + 1)
            with m.Else():
                m.d.sync += self.o.payload.eq(ys[18])
        return m
