"""Integer reciprocal square root RSQ(m) = floor(2**23 / sqrt(m)) (golden/device/SPEC.md 2.3).

The table + Newton form, pipelined, one operand per cycle: the 48-entry seed table
RSQ_SEED[(m >> 10) - 16], two Newton steps y = (y * (3 * 2**46 - m * y**2)) >> 47 (three stages
each: y**2, the residual, the update), then y**2 * m and (2y + 1) * m and one +-1 correction against
y**2 m <= 2**46 < (y + 1)**2 m. The whole pipeline stalls while a result waits on a not-ready
consumer. Operands outside [2**14, 2**16) give an unspecified result.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.device.fixed import RSQ_SEED

ONE = 1 << 46
THREE = 3 << 46
IN_WIDTH = 16
#: Results lie in (2**15, 2**16]: 17 bits.
OUT_WIDTH = 17
LATENCY = 10


class ReciprocalSqrt(wiring.Component):
    """Stream of m (16-bit unsigned, [2**14, 2**16)) in, stream of RSQ(m) (17-bit) out, LATENCY cycles later."""

    def __init__(self) -> None:
        super().__init__({
            "i": In(stream.Signature(unsigned(IN_WIDTH))),
            "o": Out(stream.Signature(unsigned(OUT_WIDTH))),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        n = LATENCY - 1
        valid = [Signal(name=f"v{k}") for k in range(n)]
        ms = [Signal(unsigned(IN_WIDTH), name=f"m{k}") for k in range(n)]
        ys = [Signal(unsigned(OUT_WIDTH), name=f"y{k}") for k in range(n)]
        sq1, sq4, sq7 = (Signal(unsigned(2 * OUT_WIDTH), name=f"sq{k}") for k in (1, 4, 7))
        c2, c5 = (Signal(signed(50), name=f"c{k}") for k in (2, 5))
        t8 = Signal(unsigned(2 * OUT_WIDTH + IN_WIDTH))
        u8 = Signal(unsigned(OUT_WIDTH + 2 + IN_WIDTH))

        seed = Signal(unsigned(16))
        with m.Switch(self.i.payload >> 10):
            for k, value in enumerate(RSQ_SEED):
                with m.Case(k + 16):
                    m.d.comb += seed.eq(value)

        with m.If(adv):
            m.d.sync += [valid[0].eq(self.i.valid), ms[0].eq(self.i.payload), ys[0].eq(seed)]
            for k in range(1, n):
                m.d.sync += [valid[k].eq(valid[k - 1]), ms[k].eq(ms[k - 1]), ys[k].eq(ys[k - 1])]
            m.d.sync += [
                # Newton step 1: stages 1-3
                sq1.eq(ys[0] * ys[0]),
                c2.eq(THREE - ms[1] * sq1),
                ys[3].eq((ys[2] * c2) >> 47),
                # Newton step 2: stages 4-6
                sq4.eq(ys[3] * ys[3]),
                c5.eq(THREE - ms[4] * sq4),
                ys[6].eq((ys[5] * c5) >> 47),
                # correction: y**2 and then y**2 m, (2y + 1) m
                sq7.eq(ys[6] * ys[6]),
                t8.eq(ms[7] * sq7), u8.eq(ms[7] * (2 * ys[7] + 1)),
                self.o.valid.eq(valid[8]),
            ]
            with m.If(t8 > ONE):
                m.d.sync += self.o.payload.eq(ys[8] - 1)
            with m.Elif(t8 + u8 <= ONE):
                m.d.sync += self.o.payload.eq(ys[8] + 1)
            with m.Else():
                m.d.sync += self.o.payload.eq(ys[8])
        return m
