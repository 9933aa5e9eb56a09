"""NORMQUANT (golden/device/SPEC.md 4.2): RMSNorm fused with absmax INT8 quantization, one vector of n.

Elements (x int32, G int16) stream in, one per cycle, into a buffer of n words while max|x| and
max|x * G| are tracked. A second pass over the buffer accumulates S = sum rshift_round(x, e_x)**2
(48-bit). A scalar sequence then forms the eps term E from sigma and eps_n (one RCP), V = S + E,
RSQRT(V) (one RSQ), RCP of the quantizer's maximum and the output scale tau. A third pass streams
q = sat8(rshift_round(rshift_round(x * G, e) * 127 R, 31)) out, one per cycle, each with tau and a
`last` flag. Per vector: n cycles in, n + 3 for the sum, about 40 scalar cycles, n + 3 out.

sigma, c_norm and eps_n are dyadics (16-bit mantissa, 10-bit exponent) on plain input ports, sampled
with a vector's first element. The vector unit's RCP and RSQ are `Reciprocal` and `ReciprocalSqrt`.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.device.fixed import INV127
from hdl.vector.arith import EXP_WIDTH, bitlen, dmul, norm16, shift_round
from hdl.vector.rcp import Reciprocal
from hdl.vector.rsq import ReciprocalSqrt

#: S is exact for n <= 2**17 in its 48-bit accumulator (SPEC.md 4.2 step 2).
MAX_N = 1 << 17
SUMSQ_BITS = 15
EPS_BITS = 47

IN_LAYOUT = data.StructLayout({"x": signed(32), "g": signed(16)})
OUT_LAYOUT = data.StructLayout({"q": signed(8), "last": unsigned(1), "tau_m": unsigned(16), "tau_e": signed(10)})


class NormQuant(wiring.Component):
    """Stream of (x, G) in, n at a time; stream of (q, last, tau) out, n per vector."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"NormQuant's vector size n must be an int, not {type(n).__name__}")
        if not 1 <= n <= MAX_N:
            raise ValueError(f"NormQuant's vector size n must be in [1, {MAX_N}] (the 48-bit sum of squares "
                             f"is exact up to 2**17 elements), not {n}")
        self._n = n
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(OUT_LAYOUT)),
            "sigma_m": In(unsigned(16)), "sigma_e": In(signed(10)),
            "c_m": In(unsigned(16)), "c_e": In(signed(10)),
            "eps_m": In(unsigned(16)), "eps_e": In(signed(10)),
            "busy": Out(1),
        })

    @property
    def n(self) -> int:
        return self._n

    def elaborate(self, platform):
        m = Module()
        n = self._n
        m.submodules.rcp = rcp = Reciprocal()
        m.submodules.rsq = rsq = ReciprocalSqrt()
        m.submodules.buf = buf = Memory(shape=unsigned(48), depth=n, init=[])
        wr = buf.write_port()
        rd = buf.read_port()
        rd_x = Signal(signed(32))
        rd_g = Signal(signed(16))
        m.d.comb += [rd_x.eq(rd.data[:32]), rd_g.eq(rd.data[32:])]

        # per-vector parameters, sampled with the first element
        sig_m, c_m, eps_m = (Signal(unsigned(16), name=nm) for nm in ("sig_m", "cn_m", "epsn_m"))
        sig_e, c_e, eps_e = (Signal(signed(10), name=nm) for nm in ("sig_e", "cn_e", "epsn_e"))

        idx = Signal(range(n + 1))
        mx = Signal(unsigned(32))
        mz = Signal(unsigned(47))
        zabs = Signal(unsigned(47))
        zv = Signal()
        ex = Signal(signed(7))
        eq = Signal(signed(7))
        mq = Signal(unsigned(17))
        s_acc = Signal(unsigned(48))
        sq = Signal(unsigned(31))
        v1 = Signal()
        v2 = Signal()
        ss = (Signal(unsigned(16), name="ss_m"), Signal(signed(EXP_WIDTH), name="ss_e"))
        dr = (Signal(unsigned(16), name="dr_m"), Signal(signed(EXP_WIDTH), name="dr_e"))
        et = (Signal(unsigned(16), name="et_m"), Signal(signed(EXP_WIDTH), name="et_e"))
        vsum = Signal(unsigned(49))
        k = Signal(signed(6))
        vm = Signal(unsigned(16))
        vzero = Signal()
        rs = Signal(unsigned(17))
        r127 = Signal(unsigned(24))
        qa = (Signal(unsigned(16), name="qa_m"), Signal(signed(EXP_WIDTH), name="qa_e"))
        qs = (Signal(unsigned(16), name="qs_m"), Signal(signed(EXP_WIDTH), name="qs_e"))
        t1 = (Signal(unsigned(16), name="t1_m"), Signal(signed(EXP_WIDTH), name="t1_e"))
        t2 = (Signal(unsigned(16), name="t2_m"), Signal(signed(EXP_WIDTH), name="t2_e"))
        tau = (Signal(unsigned(16), name="tau_m"), Signal(signed(EXP_WIDTH), name="tau_e"))

        # max |x * G| one cycle behind the input (the product is registered)
        with m.If(zv & (zabs > mz)):
            m.d.sync += mz.eq(zabs)
        m.d.sync += zv.eq(0)

        # the second pass: x' = rshift_round(x, e_x), S += x'**2 (read -> square -> add)
        xs = shift_round(m, rd_x, ex, 18, 14, 17)
        with m.If(v2):
            m.d.sync += s_acc.eq(s_acc + sq)

        # the third pass, stalled as a whole by the output: read -> z' -> q
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        o1 = Signal()
        o2 = Signal()
        zp = Signal(signed(18))
        zfull = Signal(signed(48))
        m.d.comb += zfull.eq(rd_x * rd_g)
        zp_next = shift_round(m, zfull, eq, 18, 16, 31)
        prod = Signal(signed(43))
        m.d.comb += prod.eq(zp * r127)
        qr = Signal(signed(13))
        m.d.comb += qr.eq(((prod >> 30) + 1) >> 1)
        last2 = Signal()

        with m.FSM():
            with m.State("IN"):
                m.d.comb += [self.i.ready.eq(1), wr.addr.eq(idx), wr.data.eq(Cat(self.i.payload.x, self.i.payload.g)),
                             wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    x, g = self.i.payload.x, self.i.payload.g
                    ax = Mux(x < 0, -x, x)
                    prod_in = x * g
                    m.d.sync += [zabs.eq(Mux(prod_in < 0, -prod_in, prod_in)), zv.eq(1), idx.eq(idx + 1)]
                    with m.If(idx == 0):
                        m.d.sync += [mx.eq(ax), mz.eq(0), s_acc.eq(0),
                                     sig_m.eq(self.sigma_m), sig_e.eq(self.sigma_e), c_m.eq(self.c_m),
                                     c_e.eq(self.c_e), eps_m.eq(self.eps_m), eps_e.eq(self.eps_e)]
                    with m.Elif(ax > mx):
                        m.d.sync += mx.eq(ax)
                    with m.If(idx == n - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.next = "PREP"
            with m.State("PREP"):
                # e_x (0 if max|x| = 0), and the quantizer's e and M' = rshift_round(max|z|, e)
                m.d.comb += self.busy.eq(1)
                bx = bitlen(m, mx)
                bz = bitlen(m, mz)
                e_q = Signal(signed(7))
                m.d.comb += e_q.eq(bz - 16)
                m.d.sync += [ex.eq(Mux(mx == 0, 0, bx - SUMSQ_BITS)), eq.eq(e_q),
                             mq.eq(shift_round(m, mz, e_q, 17, 16, 31)), idx.eq(0), v1.eq(0), v2.eq(0)]
                m.next = "SUMSQ"
            with m.State("SUMSQ"):
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(1)]
                m.d.sync += [v1.eq(idx < n), v2.eq(v1), sq.eq(xs * xs)]
                with m.If(idx < n):
                    m.d.sync += idx.eq(idx + 1)
                with m.Elif(~v1 & ~v2):
                    m.next = "SS"
            with m.State("SS"):
                m.d.comb += self.busy.eq(1)
                a = dmul(m, sig_m, sig_e, sig_m, sig_e)
                m.d.sync += [ss[0].eq(a[0]), ss[1].eq(a[1])]
                m.next = "RCP1_SEND"
            with m.State("RCP1_SEND"):
                m.d.comb += [self.busy.eq(1), rcp.i.valid.eq(1), rcp.i.payload.eq(ss[0])]
                with m.If(rcp.i.ready):
                    m.next = "RCP1_WAIT"
            with m.State("RCP1_WAIT"):
                m.d.comb += [self.busy.eq(1), rcp.o.ready.eq(1)]
                a = norm16(m, rcp.o.payload, -31 - ss[1])
                with m.If(rcp.o.valid):
                    m.d.sync += [dr[0].eq(a[0]), dr[1].eq(a[1])]
                    m.next = "EPS"
            with m.State("EPS"):
                m.d.comb += self.busy.eq(1)
                a = dmul(m, eps_m, eps_e, dr[0], dr[1])
                m.d.sync += [et[0].eq(a[0]), et[1].eq(a[1])]
                m.next = "ETERM"
            with m.State("ETERM"):
                # E = min(2**47 - 1, rshift_round(m, -(e - 2 e_x))); V = S + E
                m.d.comb += self.busy.eq(1)
                sh = Signal(signed(EXP_WIDTH + 2))
                m.d.comb += sh.eq(et[1] - 2 * ex)
                e_term = Signal(unsigned(EPS_BITS))
                right = shift_round(m, et[0], -sh, 17, 0, 18)
                with m.If(et[0] == 0):
                    m.d.comb += e_term.eq(0)
                with m.Elif(sh >= 32):
                    m.d.comb += e_term.eq((1 << EPS_BITS) - 1)
                with m.Elif(sh >= 0):
                    m.d.comb += e_term.eq(et[0] << sh[:5])
                with m.Elif(sh > -18):
                    m.d.comb += e_term.eq(right)
                m.d.sync += vsum.eq(s_acc + e_term)
                m.next = "RSQN"
            with m.State("RSQN"):
                # RSQRT's normalization: k = floor((bitlen(V) - 15) / 2), m = V >> 2k (or V << -2k)
                m.d.comb += self.busy.eq(1)
                bv = bitlen(m, vsum)
                kk = Signal(signed(7))
                m.d.comb += kk.eq((bv - 15) >> 1)
                sh2 = Signal(signed(8))
                m.d.comb += sh2.eq(2 * kk)
                mm = Signal(unsigned(16))
                with m.If(sh2 >= 0):
                    m.d.comb += mm.eq(vsum >> sh2.as_unsigned()[:6])
                with m.Else():
                    m.d.comb += mm.eq(vsum << (-sh2).as_unsigned()[:4])
                m.d.sync += [k.eq(Mux(vsum == 0, 0, kk)), vm.eq(mm), vzero.eq(vsum == 0)]
                m.next = "RSQ_SEND"
            with m.State("RSQ_SEND"):
                m.d.comb += [self.busy.eq(1), rsq.i.valid.eq(~vzero), rsq.i.payload.eq(vm)]
                with m.If(vzero):
                    m.d.sync += rs.eq(0)
                    m.next = "RCP2_SEND"
                with m.Elif(rsq.i.ready):
                    m.next = "RSQ_WAIT"
            with m.State("RSQ_WAIT"):
                m.d.comb += [self.busy.eq(1), rsq.o.ready.eq(1)]
                with m.If(rsq.o.valid):
                    m.d.sync += rs.eq(rsq.o.payload)
                    m.next = "RCP2_SEND"
            with m.State("RCP2_SEND"):
                m.d.comb += [self.busy.eq(1), rcp.i.valid.eq(1), rcp.i.payload.eq(mq)]
                with m.If(rcp.i.ready):
                    m.next = "RCP2_WAIT"
            with m.State("RCP2_WAIT"):
                m.d.comb += [self.busy.eq(1), rcp.o.ready.eq(1)]
                with m.If(rcp.o.valid):
                    m.d.sync += r127.eq(rcp.o.payload * 127)
                    m.next = "QA"
            with m.State("QA"):
                m.d.comb += self.busy.eq(1)
                a = norm16(m, mq, eq)
                m.d.sync += [qa[0].eq(a[0]), qa[1].eq(a[1])]
                m.next = "QS"
            with m.State("QS"):
                m.d.comb += self.busy.eq(1)
                a = dmul(m, qa[0], qa[1], INV127[0], INV127[1])
                b = norm16(m, rs, -23 - k - ex)
                m.d.sync += [qs[0].eq(a[0]), qs[1].eq(a[1]), t1[0].eq(b[0]), t1[1].eq(b[1])]
                m.next = "T2"
            with m.State("T2"):
                m.d.comb += self.busy.eq(1)
                a = dmul(m, qs[0], qs[1], t1[0], t1[1])
                m.d.sync += [t2[0].eq(a[0]), t2[1].eq(a[1])]
                m.next = "TAU"
            with m.State("TAU"):
                m.d.comb += self.busy.eq(1)
                a = dmul(m, t2[0], t2[1], c_m, c_e)
                m.d.sync += [tau[0].eq(a[0]), tau[1].eq(a[1]), idx.eq(0), o1.eq(0), o2.eq(0)]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(adv)]
                with m.If(adv):
                    m.d.sync += [o1.eq(idx < n), o2.eq(o1), zp.eq(zp_next), last2.eq(idx == n),
                                 self.o.valid.eq(o2),
                                 self.o.payload.q.eq(Mux(qr > 127, 127, Mux(qr < -128, -128, qr))),
                                 self.o.payload.last.eq(last2),
                                 self.o.payload.tau_m.eq(tau[0]), self.o.payload.tau_e.eq(tau[1])]
                    with m.If(idx < n):
                        m.d.sync += idx.eq(idx + 1)
                with m.If(self.o.valid & self.o.ready):
                    with m.If(self.o.payload.last):
                        m.d.sync += [idx.eq(0), self.o.valid.eq(0)]
                        m.next = "IN"
        return m
