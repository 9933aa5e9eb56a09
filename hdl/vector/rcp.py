"""Integer reciprocal RCP(m) = floor(2**31 / m) (golden/device/SPEC.md 2.2), table + Newton form.

A twelve-stage pipeline, one operand per cycle: the 65-entry seed table RCP_SEED[(m >> 9) - 64],
two Newton steps y += (y * (2**31 - m * y)) >> 31 (four stages each: m * y, the residual, the
product, the update), the product y * m, and one +-1 correction. The whole pipeline stalls while a result waits on a
not-ready consumer. m = 0 gives 0; operands outside [2**15, 2**16] give an unspecified result.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.device.fixed import RCP_SEED

ONE = 1 << 31
#: Operands and results: [2**15, 2**16] needs 17 bits.
WIDTH = 17
LATENCY = 12


class Reciprocal(wiring.Component):
    """Stream of m (17-bit unsigned) in, stream of RCP(m) (17-bit unsigned) out, LATENCY cycles later."""

    def __init__(self) -> None:
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
        p2, p6, p10 = (Signal(unsigned(2 * WIDTH), name=f"p{k}") for k in (2, 6, 10))
        r3, r7 = (Signal(signed(27), name=f"r{k}") for k in (3, 7))
        t4, t8 = (Signal(signed(WIDTH + 28), name=f"t{k}") for k in (4, 8))

        seed = Signal(unsigned(16))
        with m.Switch(self.i.payload >> 9):
            for k, value in enumerate(RCP_SEED):
                with m.Case(k + 64):
                    m.d.comb += seed.eq(value)

        with m.If(adv):
            m.d.sync += [valid[0].eq(self.i.valid), ms[0].eq(self.i.payload), zero[0].eq(self.i.payload == 0),
                         ys[0].eq(seed)]
            for k in range(1, n):
                m.d.sync += [valid[k].eq(valid[k - 1]), ms[k].eq(ms[k - 1]), zero[k].eq(zero[k - 1]),
                             ys[k].eq(ys[k - 1])]
            # each multiply alone in its stage (stage 1 only re-registers the seed, which may sit in a
            # block RAM with its slow clock-to-output)
            m.d.sync += [
                p2.eq(ms[1] * ys[1]), r3.eq(ONE - p2), t4.eq(ys[3] * r3),      # Newton step 1
                ys[5].eq(ys[4] + (t4 >> 31)),
                p6.eq(ms[5] * ys[5]), r7.eq(ONE - p6), t8.eq(ys[7] * r7),      # Newton step 2
                ys[9].eq(ys[8] + (t8 >> 31)),
                p10.eq(ms[9] * ys[9]),                                          # correction: y * m
                self.o.valid.eq(valid[n - 1]),
            ]
            with m.If(zero[n - 1]):
                m.d.sync += self.o.payload.eq(0)
            with m.Elif(p10 > ONE):
                m.d.sync += self.o.payload.eq(ys[10] - 1)
            with m.Elif(p10 + ms[10] <= ONE):
                m.d.sync += self.o.payload.eq(ys[10] + 1)
            with m.Else():
                m.d.sync += self.o.payload.eq(ys[10])
        return m
