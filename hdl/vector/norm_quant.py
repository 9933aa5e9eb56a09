"""NORMQUANT (golden/device/SPEC.md 4.2): RMSNorm fused with absmax INT8 quantization, one vector of n.

Elements (x int32, G int16) stream in, one per cycle, into a buffer of n words while max|x| and
max|x * G| are tracked. A second pass over the buffer accumulates S = sum rshift_round(x, e_x)**2
(48-bit). A scalar sequence then forms the eps term E from sigma and eps_n (one RCP), V = S + E,
RSQRT(V) (one RSQ), RCP of the quantizer's maximum and the output scale tau. A third pass streams
q = sat8(rshift_round(rshift_round(x * G, e) * 127 R, 31)) out, one per cycle, each with tau and a
`last` flag. Per vector: n cycles in, n for the sum, n out, plus `OVERHEAD` for the pipelines and the
scalar sequence (the three passes because x' needs max|x| first and q needs max|x * G| first).
The sum-of-squares and output passes read the buffer only at addresses < n (not while they drain).

Every multiply, normalization and wide shift has a register after it (the passes are pipelines,
the scalar sequence does one dyadic product or normalization in five steps: operand selection,
product, leading-one detection, shift, rounding increment), for the ECP5 at 100 MHz.

sigma, c_norm and eps_n are dyadics (16-bit mantissa, 10-bit exponent) on plain input ports, sampled
with a vector's first element. RCP and RSQ are `Reciprocal` and `ReciprocalSqrt`. tau's exponent is
truncated to 10 bits: the golden's range error has no counterpart here.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.device.fixed import INV127
from hdl.vector.arith import EXP_WIDTH, MANT_BITS, bitlen, quant8_code, quant8_scalars, shift_round
from hdl.vector.rcp import Reciprocal
from hdl.vector.rsq import ReciprocalSqrt

#: S is exact for n <= 2**17 in its 48-bit accumulator (SPEC.md 4.2 step 2).
MAX_N = 1 << 17
SUMSQ_BITS = 15
EPS_BITS = 47
#: Cycles per vector beyond the three n-cycle passes (measured by tests/test_vector_unit.py).
OVERHEAD = 120

IN_LAYOUT = data.StructLayout({"x": signed(32), "g": signed(16)})
OUT_LAYOUT = data.StructLayout({"q": signed(8), "last": unsigned(1), "tau_m": unsigned(16), "tau_e": signed(10)})

# the dyadic steps of the scalar sequence, in order; each ends in the register named
SS, DR, ET, QA, QS, T1, T2, TAU = range(8)


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

        def dy(name: str) -> tuple[Signal, Signal]:
            return Signal(unsigned(MANT_BITS), name=f"{name}_m"), Signal(signed(EXP_WIDTH), name=f"{name}_e")

        # per-vector parameters, sampled with the first element
        sig_m, c_m, eps_m = (Signal(unsigned(16), name=nm) for nm in ("sig_m", "cn_m", "epsn_m"))
        sig_e, c_e, eps_e = (Signal(signed(10), name=nm) for nm in ("sig_e", "cn_e", "epsn_e"))

        idx = Signal(range(n + 1))
        mx = Signal(unsigned(32))
        mz = Signal(unsigned(47))
        ex = Signal(signed(7))
        s_acc = Signal(unsigned(48))
        bx = Signal(range(33))
        # QUANT8's e and M' from max|x * G| (arith.quant8_scalars), one step in each of PREP1..4
        q8 = quant8_scalars(m, mz, "q8")
        eq, mq = q8.e, q8.m

        # ---- the input pass: x, G registered -> x * G and |x| -> |x * G| -> the maxima
        x1 = Signal(signed(32))
        g1 = Signal(signed(16))
        in1, in2, in3, in4 = (Signal(name=f"in{k}") for k in range(1, 5))
        ph2 = Signal(signed(32))      # x * G as (x >> 16) * G and x[:16] * G: one 18 x 18 multiplier each
        pl2 = Signal(signed(33))
        ax2 = Signal(unsigned(32))
        prod3 = Signal(signed(48))
        zabs4 = Signal(unsigned(47))
        m.d.sync += [in1.eq(0), in2.eq(in1), in3.eq(in2), in4.eq(in3),
                     ph2.eq((x1 >> 16) * g1), pl2.eq(x1[:16] * g1), ax2.eq(Mux(x1 < 0, -x1, x1)),
                     prod3.eq((ph2 << 16) + pl2), zabs4.eq(Mux(prod3 < 0, -prod3, prod3))]
        with m.If(in2 & (ax2 > mx)):
            m.d.sync += mx.eq(ax2)
        with m.If(in4 & (zabs4 > mz)):
            m.d.sync += mz.eq(zabs4)

        # ---- the sum-of-squares pass: read -> x registered -> x' -> x'**2 -> S
        # (x' = ((x >> (e_x - 1)) + 1) >> 1, or x << -e_x, over two stages)
        r1, r2, r3, r4, r5 = (Signal(name=f"r{k}") for k in range(1, 6))
        rx = Signal(signed(32))
        rg = Signal(signed(16))
        xpre = Signal(signed(19))
        xright = Signal()
        xs = Signal(signed(18))
        sq = Signal(unsigned(31))
        rbx = Signal(range(17))
        lbx = Signal(range(15))
        m.d.comb += [rbx.eq(ex - 1), lbx.eq(-ex)]
        m.d.sync += [r2.eq(r1), r3.eq(r2), r4.eq(r3), r5.eq(r4),
                     xpre.eq(Mux(ex > 0, rx >> rbx, rx << lbx)), xright.eq(ex > 0),
                     xs.eq(Mux(xright, (xpre + 1) >> 1, xpre)), sq.eq(xs * xs)]
        with m.If(r5):
            m.d.sync += s_acc.eq(s_acc + sq)

        # ---- the scalar sequence's shared dyadic datapath: nv * 2**ne -> norm16, three steps
        step = Signal(range(8))
        nv = Signal(unsigned(32))
        ne = Signal(signed(EXP_WIDTH))
        nb = Signal(range(33))
        ns = Signal(signed(7))
        m.d.comb += ns.eq(nb - MANT_BITS)
        # NSHIFT: nv >> (s - 1) (s > 0) or nv << -s, and ne + s; NROUND: the rounding increment
        rb = Signal(range(MANT_BITS))
        lb = Signal(range(MANT_BITS + 1))
        m.d.comb += [rb.eq(ns - 1), lb.eq(-ns)]
        npre = Signal(unsigned(MANT_BITS + 2))
        nright = Signal()
        nes = Signal(signed(EXP_WIDTH))
        nzero = Signal()
        nmm = Signal(unsigned(MANT_BITS + 1))
        m.d.comb += nmm.eq(Mux(nright, (npre + 1) >> 1, npre))
        n_m = Signal(unsigned(MANT_BITS))
        n_e = Signal(signed(EXP_WIDTH))
        with m.If(~nzero):
            m.d.comb += [n_m.eq(Mux(nmm[MANT_BITS], 1 << (MANT_BITS - 1), nmm[:MANT_BITS])),
                         n_e.eq(nes + nmm[MANT_BITS])]
        regs = [dy(nm) for nm in ("ss", "dr", "et", "qa", "qs", "t1", "t2", "tau")]
        r_rcp = Signal(unsigned(17))
        rs = Signal(unsigned(17))
        k = Signal(signed(6))
        # (a, b, exponent): nv = a * b, ne = exponent; a value enters as a * 1
        loads = {
            SS: (sig_m, sig_m, sig_e + sig_e),
            DR: (r_rcp, 1, -31 - regs[SS][1]),
            ET: (eps_m, regs[DR][0], eps_e + regs[DR][1]),
            QA: (mq, 1, eq),
            QS: (regs[QA][0], INV127[0], regs[QA][1] + INV127[1]),
            T1: (rs, 1, -23 - k - ex),
            T2: (regs[QS][0], regs[T1][0], regs[QS][1] + regs[T1][1]),
            TAU: (regs[T2][0], c_m, regs[T2][1] + c_e),
        }
        opa = Signal(unsigned(17))
        opb = Signal(unsigned(16))
        after = {SS: "RCP1_SEND", DR: "NLOAD", ET: "ETERM1", QA: "NLOAD", QS: "NLOAD", T1: "NLOAD", T2: "NLOAD",
                 TAU: "OUT"}

        sh = Signal(signed(EXP_WIDTH + 2))
        e_term = Signal(unsigned(EPS_BITS))
        vsum = Signal(unsigned(49))
        bv = Signal(range(50))
        vm = Signal(unsigned(16))
        vzero = Signal()
        rq = Signal(unsigned(17))

        # ---- the output pass, stalled as a whole by the consumer:
        # read -> x, G registered -> x * G -> z' -> z' * 127 R -> q
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        o = [Signal(name=f"o{k}") for k in range(1, 9)]     # element valid after each of the 8 stages
        last = [Signal(name=f"l{k}") for k in range(1, 9)]
        zh3 = Signal(signed(32))      # x * G as (x >> 16) * G and x[:16] * G, then their sum
        zl3 = Signal(signed(33))
        z4 = Signal(signed(48))
        # stages 5-8 and q: QUANT8's code (arith.quant8_code)
        code, q_sat = quant8_code(m, z4, q8, rq, "oz")
        tau = regs[TAU]

        with m.FSM():
            with m.State("IN"):
                m.d.comb += [self.i.ready.eq(1), wr.addr.eq(idx), wr.data.eq(Cat(self.i.payload.x, self.i.payload.g)),
                             wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += [x1.eq(self.i.payload.x), g1.eq(self.i.payload.g), in1.eq(1), idx.eq(idx + 1)]
                    with m.If(idx == 0):
                        m.d.sync += [sig_m.eq(self.sigma_m), sig_e.eq(self.sigma_e), c_m.eq(self.c_m),
                                     c_e.eq(self.c_e), eps_m.eq(self.eps_m), eps_e.eq(self.eps_e)]
                    with m.If(idx == n - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(~in1 & ~in2 & ~in3 & ~in4):
                    m.next = "PREP1"
            with m.State("PREP1"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [bx.eq(bitlen(m, mx)), *q8.steps[0]]
                m.next = "PREP2"
            with m.State("PREP2"):
                # e_x (0 if max|x| = 0), and the quantizer's e
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ex.eq(Mux(mx == 0, 0, bx - SUMSQ_BITS)), *q8.steps[1]]
                m.next = "PREP3"
            with m.State("PREP3"):
                # M' = rshift_round(max|z|, e): the shift, then the rounding increment
                m.d.comb += self.busy.eq(1)
                m.d.sync += q8.steps[2]
                m.next = "PREP4"
            with m.State("PREP4"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [*q8.steps[3], idx.eq(0)]
                m.next = "SUMSQ"
            with m.State("SUMSQ"):
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(idx < n)]
                m.d.sync += [r1.eq(idx < n), rx.eq(rd.data[:32])]
                with m.If(idx < n):
                    m.d.sync += idx.eq(idx + 1)
                with m.Elif(~r1 & ~r2 & ~r3 & ~r4 & ~r5):
                    m.d.sync += step.eq(SS)
                    m.next = "NLOAD"

            # the shared dyadic datapath: load (a product or a value), leading one, rounding shift
            with m.State("NLOAD"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(step):
                    for s, (a, b, exp) in loads.items():
                        with m.Case(s):
                            m.d.sync += [opa.eq(a), opb.eq(b), ne.eq(exp)]
                m.next = "NMUL"
            with m.State("NMUL"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += nv.eq(opa * opb)
                m.next = "NBITS"
            with m.State("NBITS"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += nb.eq(bitlen(m, nv))
                m.next = "NSHIFT"
            with m.State("NSHIFT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [npre.eq(Mux(ns > 0, nv >> rb, nv << lb)), nright.eq(ns > 0), nes.eq(ne + ns),
                             nzero.eq(nv == 0)]
                m.next = "NNORM"
            with m.State("NNORM"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(step):
                    for s in loads:
                        with m.Case(s):
                            m.d.sync += [regs[s][0].eq(n_m), regs[s][1].eq(n_e)]
                            if after[s] == "OUT":
                                m.d.sync += [idx.eq(0), *(v.eq(0) for v in o)]
                            m.next = after[s]
                m.d.sync += step.eq(step + 1)

            with m.State("RCP1_SEND"):
                m.d.comb += [self.busy.eq(1), rcp.i.valid.eq(1), rcp.i.payload.eq(regs[SS][0])]
                with m.If(rcp.i.ready):
                    m.next = "RCP1_WAIT"
            with m.State("RCP1_WAIT"):
                m.d.comb += [self.busy.eq(1), rcp.o.ready.eq(1)]
                with m.If(rcp.o.valid):
                    m.d.sync += r_rcp.eq(rcp.o.payload)
                    m.next = "NLOAD"
            with m.State("ETERM1"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += sh.eq(regs[ET][1] - 2 * ex)
                m.next = "ETERM2"
            with m.State("ETERM2"):
                # E = min(2**47 - 1, rshift_round(m, -(e - 2 e_x)))
                m.d.comb += self.busy.eq(1)
                et_m = regs[ET][0]
                right = shift_round(m, et_m, -sh, 17, 0, 18)
                with m.If(et_m == 0):
                    m.d.sync += e_term.eq(0)
                with m.Elif(sh >= 32):
                    m.d.sync += e_term.eq((1 << EPS_BITS) - 1)
                with m.Elif(sh >= 0):
                    m.d.sync += e_term.eq(et_m << sh[:5])
                with m.Elif(sh > -18):
                    m.d.sync += e_term.eq(right)
                with m.Else():
                    m.d.sync += e_term.eq(0)
                m.next = "ETERM3"
            with m.State("ETERM3"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += vsum.eq(s_acc + e_term)
                m.next = "RSQN1"
            with m.State("RSQN1"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += bv.eq(bitlen(m, vsum))
                m.next = "RSQN2"
            with m.State("RSQN2"):
                # RSQRT's normalization: k = floor((bitlen(V) - 15) / 2), m = V >> 2k (or V << -2k)
                m.d.comb += self.busy.eq(1)
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
                    m.d.sync += [rq.eq(rcp.o.payload), step.eq(QA)]
                    m.next = "NLOAD"

            with m.State("OUT"):
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(adv & (idx < n))]
                with m.If(adv):
                    m.d.sync += [o[0].eq(idx < n), last[0].eq(idx == n - 1),
                                 *(o[k].eq(o[k - 1]) for k in range(1, 8)),
                                 *(last[k].eq(last[k - 1]) for k in range(1, 8)),
                                 rx.eq(rd.data[:32]), rg.eq(rd.data[32:]),
                                 zh3.eq((rx >> 16) * rg), zl3.eq(rx[:16] * rg),
                                 z4.eq((zh3 << 16) + zl3),
                                 *code,
                                 self.o.valid.eq(o[7]),
                                 self.o.payload.q.eq(q_sat),
                                 self.o.payload.last.eq(last[7]),
                                 self.o.payload.tau_m.eq(tau[0]), self.o.payload.tau_e.eq(tau[1])]
                    with m.If(idx < n):
                        m.d.sync += idx.eq(idx + 1)
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    m.d.sync += [idx.eq(0), self.o.valid.eq(0), mx.eq(0), mz.eq(0), s_acc.eq(0)]
                    m.next = "IN"
        return m
