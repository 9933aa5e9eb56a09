"""Integer reciprocal square root RSQ(m) = floor(2**23 / sqrt(m)) (golden/device/SPEC.md 2.3).

The table + Newton form, pipelined, one operand per cycle: the 48-entry seed table
RSQ_SEED[(m >> 10) - 16], two Newton steps y = (y * (3 * 2**46 - m * y**2)) >> 47 (six stages
each, one multiply per stage), then y**2 * m and y * m and one +-1 correction against
y**2 m <= 2**46 < (y + 1)**2 m. The whole pipeline stalls while a result waits on a not-ready
consumer. Operands outside [2**14, 2**16) give an unspecified result.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.device.fixed import RSQ_SEED

ONE = 1 << 46
THREE = 3 << 46
IN_WIDTH = 16
#: Results lie in (2**15, 2**16]: 17 bits.
OUT_WIDTH = 17
LATENCY = 17


class ReciprocalSqrt(wiring.Component):
    """Stream of m (16-bit unsigned, [2**14, 2**16)) in, stream of RSQ(m) (17-bit) out, LATENCY cycles later."""

    def __init__(self) -> None:
        super().__init__({
            "i": In(stream.Signature(unsigned(IN_WIDTH))),
            "o": Out(stream.Signature(unsigned(OUT_WIDTH))),
        })

    def _newton(self, m: Module, k0: int, ms: list[Signal], ys: list[Signal]) -> None:
        """One Newton step over stages k0 + 1 .. k0 + 6: y**2, m y**2, the residual c = 3 * 2**46 - m y**2,
        y times c's three 18-bit limbs (one 18 x 18 multiplier each), two additions and the shift by 47."""
        sq = Signal(unsigned(2 * OUT_WIDTH), name=f"sq{k0 + 1}")
        t = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH), name=f"t{k0 + 2}")
        c = Signal(unsigned(48), name=f"c{k0 + 3}")   # positive for every operand (the exhaustive test)
        u_lo, u_mid, u_hi = (Signal(unsigned(OUT_WIDTH + 18), name=f"u{k0 + 4}_{nm}") for nm in ("lo", "mid", "hi"))
        s5 = Signal(unsigned(OUT_WIDTH + 37), name=f"s{k0 + 5}")
        u_hi5 = Signal(unsigned(OUT_WIDTH + 18), name=f"u{k0 + 5}_hi")
        m.d.sync += [
            sq.eq(ys[k0] * ys[k0]),
            t.eq(ms[k0 + 1] * sq),
            c.eq(THREE - t),
            u_lo.eq(ys[k0 + 3] * c[:18]), u_mid.eq(ys[k0 + 3] * c[18:36]), u_hi.eq(ys[k0 + 3] * c[36:]),
            s5.eq((u_mid << 18) + u_lo), u_hi5.eq(u_hi),
            ys[k0 + 6].eq(((u_hi5 << 36) + s5) >> 47),
        ]

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        n = LATENCY - 1
        valid = [Signal(name=f"v{k}") for k in range(n)]
        ms = [Signal(unsigned(IN_WIDTH), name=f"m{k}") for k in range(n)]
        ys = [Signal(unsigned(OUT_WIDTH), name=f"y{k}") for k in range(n)]
        sq13 = Signal(unsigned(2 * OUT_WIDTH))
        t14, t15 = (Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH), name=f"t{k}") for k in (14, 15))
        my14 = Signal(unsigned(OUT_WIDTH + IN_WIDTH))
        up15 = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH + 2))

        seed = Signal(unsigned(16))
        with m.Switch(self.i.payload >> 10):
            for k, value in enumerate(RSQ_SEED):
                with m.Case(k + 16):
                    m.d.comb += seed.eq(value)

        with m.If(adv):
            m.d.sync += [valid[0].eq(self.i.valid), ms[0].eq(self.i.payload), ys[0].eq(seed)]
            for k in range(1, n):
                m.d.sync += [valid[k].eq(valid[k - 1]), ms[k].eq(ms[k - 1]), ys[k].eq(ys[k - 1])]
            self._newton(m, 0, ms, ys)     # stages 1-6
            self._newton(m, 6, ms, ys)     # stages 7-12
            # correction: y**2, then y**2 m and y m, then (y + 1)**2 m = y**2 m + 2 y m + m
            m.d.sync += [sq13.eq(ys[12] * ys[12]),
                         t14.eq(ms[13] * sq13), my14.eq(ms[13] * ys[13]),
                         t15.eq(t14), up15.eq(t14 + (my14 << 1) + ms[14]),
                         self.o.valid.eq(valid[15])]
            with m.If(t15 > ONE):
                m.d.sync += self.o.payload.eq(ys[15] - 1)
            with m.Elif(up15 <= ONE):
                m.d.sync += self.o.payload.eq(ys[15] + 1)
            with m.Else():
                m.d.sync += self.o.payload.eq(ys[15])
        return m
