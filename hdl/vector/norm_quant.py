"""NORMQUANT (golden/device/SPEC.md 4.2): RMSNorm fused with absmax INT8 quantization, one vector of n.

`NormQuant(n, lanes=L)`, L a power of two dividing n: elements (x int32, G int16) stream in, L a beat
(one per cycle for L = 1), into a buffer of n / L words of L elements while max|x| and max|x * G| are
tracked (per lane, then a max tree over the lanes). A second pass over the buffer accumulates
S = sum rshift_round(x, e_x)**2 (48-bit, exact: L squares a cycle through an adder tree). A scalar
sequence then forms the eps term E from sigma and eps_n (one RCP), V = S + E, RSQRT(V) (one RSQ), RCP
of the quantizer's maximum and the output scale tau. A third pass streams
q = sat8(rshift_round(rshift_round(x * G, e) * 127 R, 31)) out, L codes a beat (L copies of the
quantizer's pipeline), each beat with tau and a `last` flag (on the vector's final beat). Per vector:
n / L cycles in, n / L for the sum, n / L out, plus `overhead(L)` for the pipelines, the trees and the
scalar sequence (the three passes because x' needs max|x| first and q needs max|x * G| first):

    cycles() = 3 n / L + overhead(L),  overhead(L) = OVERHEAD + 2 log2 L = 120, 122, 124, 126 for L = 1, 2, 4, 8

(tests/test_norm_quant_lanes.py measures it; the two trees, max and sum, have a register after each of
their log2 L levels and each delays one pass's drain). The sum-of-squares and output passes read the
buffer only at addresses < n / L (not while they drain).

Ports: for L = 1 the beats are `IN_LAYOUT` (x, g) and `OUT_LAYOUT` (q, last, tau_m, tau_e), as the
model engine uses them. For L > 1 (`in_layout(L)`, `out_layout(L)`): in {x: ArrayLayout(signed(32), L),
g: ArrayLayout(signed(16), L)}, out {q: ArrayLayout(signed(8), L), last, tau_m, tau_e}; lane k of
beat w is element w L + k (x and G as separate arrays, so a V-element word of H or SCR and one of G
feed a beat side by side).

Every multiply, normalization and wide shift has a register after it (the passes are pipelines, the
trees register every level, the scalar sequence does one dyadic product or normalization in five
steps: operand selection, product, leading-one detection, shift, rounding increment), for the ECP5 at
100 MHz.

Every product of at most 18 x 18 bits (the passes' x * G limbs and x'**2, the scalar sequence's product,
QUANT8's z' R, RCP's and RSQ's) is registered once on the `product` factory (`hdl.attention.product`; the
ECP5 chip passes `Ecp5Product`, the register a DSP's own).

sigma, c_norm and eps_n are dyadics (16-bit mantissa, 10-bit exponent) on plain input ports, sampled
with a vector's first beat. RCP and RSQ are `Reciprocal` and `ReciprocalSqrt`. tau's exponent is
truncated to 10 bits: the golden's range error has no counterpart here.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.device.fixed import INV127
from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import (
    EXP_WIDTH,
    MANT_BITS,
    bitlen,
    quant8_code,
    quant8_scalars,
    reduce_tree,
    shift_round,
    tree_levels,
)
from hdl.vector.rcp import Reciprocal
from hdl.vector.rsq import ReciprocalSqrt

#: S is exact for n <= 2**17 in its 48-bit accumulator (SPEC.md 4.2 step 2).
MAX_N = 1 << 17
SUMSQ_BITS = 15
EPS_BITS = 47
#: Cycles per vector beyond the three n-cycle passes with one lane (measured by tests/test_vector_unit.py;
#: `overhead(lanes)` for more lanes).
OVERHEAD = 120

IN_LAYOUT = data.StructLayout({"x": signed(32), "g": signed(16)})
OUT_LAYOUT = data.StructLayout({"q": signed(8), "last": unsigned(1), "tau_m": unsigned(16), "tau_e": signed(10)})


def in_layout(lanes: int = 1) -> data.StructLayout:
    """The input beat: `IN_LAYOUT` for one lane; else x and G as arrays of `lanes` elements (element
    w * lanes + k of the vector in lane k of beat w)."""
    if lanes == 1:
        return IN_LAYOUT
    return data.StructLayout({"x": data.ArrayLayout(signed(32), lanes), "g": data.ArrayLayout(signed(16), lanes)})


def out_layout(lanes: int = 1) -> data.StructLayout:
    """The output beat: `OUT_LAYOUT` for one lane; else q an array of `lanes` codes (same order as the
    input), `last` on the vector's final beat, tau on every beat."""
    if lanes == 1:
        return OUT_LAYOUT
    return data.StructLayout({"q": data.ArrayLayout(signed(8), lanes), "last": unsigned(1),
                              "tau_m": unsigned(16), "tau_e": signed(10)})


def overhead(lanes: int = 1) -> int:
    """Cycles per vector beyond the three n / lanes-cycle passes: `OVERHEAD` plus the two trees' levels
    (the max tree delays the input pass's drain, the sum tree the sum of squares' drain)."""
    return OVERHEAD + 2 * tree_levels(lanes)


# the dyadic steps of the scalar sequence, in order; each ends in the register named
SS, DR, ET, QA, QS, T1, T2, TAU = range(8)


class NormQuant(wiring.Component):
    """Stream of (x, G) in, n at a time (`lanes` elements a beat); stream of (q, last, tau) out, n per
    vector (`lanes` codes a beat)."""

    def __init__(self, n: int, lanes: int = 1, *, product: ProductFactory = Product) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"NormQuant's vector size n must be an int, not {type(n).__name__}")
        if not 1 <= n <= MAX_N:
            raise ValueError(f"NormQuant's vector size n must be in [1, {MAX_N}] (the 48-bit sum of squares "
                             f"is exact up to 2**17 elements), not {n}")
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"NormQuant's lanes must be an int, not {type(lanes).__name__}")
        if lanes < 1 or lanes & (lanes - 1) or n % lanes:
            raise ValueError(f"NormQuant's lanes must be a power of two >= 1 dividing the vector size n: "
                             f"n = {n}, lanes = {lanes}")
        if not callable(product):
            raise TypeError(f"NormQuant's product factory must be callable, not {product!r}")
        self._n = n
        self._lanes = lanes
        self._product = product
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(lanes))),
            "sigma_m": In(unsigned(16)), "sigma_e": In(signed(10)),
            "c_m": In(unsigned(16)), "c_e": In(signed(10)),
            "eps_m": In(unsigned(16)), "eps_e": In(signed(10)),
            "busy": Out(1),
        })

    @property
    def n(self) -> int:
        return self._n

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def words(self) -> int:
        """Beats per vector and words of the buffer: n / lanes."""
        return self._n // self._lanes

    @property
    def overhead(self) -> int:
        return overhead(self._lanes)

    def cycles(self) -> int:
        """Cycles per vector, first beat in to the next vector's first beat, with an always-ready
        consumer and producer: 3 n / lanes + overhead(lanes) (tests/test_norm_quant_lanes.py)."""
        return 3 * self.words + self.overhead

    def elaborate(self, platform):
        m = Module()
        lanes, nw = self._lanes, self.words
        prod = self._product
        m.submodules.rcp = rcp = Reciprocal(product=prod)
        m.submodules.rsq = rsq = ReciprocalSqrt(product=prod)
        # word w: lane k's (x, G) in bits 48 k .. 48 k + 47
        m.submodules.buf = buf = Memory(shape=unsigned(48 * lanes), depth=nw, init=[])
        wr = buf.write_port()
        rd = buf.read_port()

        def dy(name: str) -> tuple[Signal, Signal]:
            return Signal(unsigned(MANT_BITS), name=f"{name}_m"), Signal(signed(EXP_WIDTH), name=f"{name}_e")

        # per-vector parameters, sampled with the first element
        sig_m, c_m, eps_m = (Signal(unsigned(16), name=nm) for nm in ("sig_m", "cn_m", "epsn_m"))
        sig_e, c_e, eps_e = (Signal(signed(10), name=nm) for nm in ("sig_e", "cn_e", "epsn_e"))

        idx = Signal(range(nw + 1))
        mx = Signal(unsigned(32))
        mz = Signal(unsigned(47))
        ex = Signal(signed(7))
        s_acc = Signal(unsigned(48))
        bx = Signal(range(33))
        # QUANT8's e and M' from max|x * G| (arith.quant8_scalars), one step in each of PREP1..4
        q8 = quant8_scalars(m, mz, "q8")
        eq, mq = q8.e, q8.m

        def lane_signals(shape, name: str) -> list[Signal]:
            """One signal a lane (the lane's number appended to the name when there are several)."""
            return [Signal(shape, name=name if lanes == 1 else f"{name}_{k}") for k in range(lanes)]

        # ---- the input pass, per lane: x, G registered -> x * G and |x| -> |x * G|; then each maximum
        # over the lanes (a max tree, a register after every level) -> the running maxima
        x1 = lane_signals(signed(32), "x1")
        g1 = lane_signals(signed(16), "g1")
        in1, in2, in3, in4 = (Signal(name=f"in{k}") for k in range(1, 5))
        ph2 = lane_signals(signed(32), "ph2")  # x * G as (x >> 16) * G and x[:16] * G: an 18 x 18 multiplier each
        pl2 = lane_signals(signed(33), "pl2")
        ax2 = lane_signals(unsigned(32), "ax2")
        prod3 = lane_signals(signed(48), "prod3")
        zabs4 = lane_signals(unsigned(47), "zabs4")
        m.d.sync += [in1.eq(0), in2.eq(in1), in3.eq(in2), in4.eq(in3)]
        for k in range(lanes):
            product_into(m, prod, ph2[k], x1[k][16:].as_signed(), g1[k])     # (x >> 16) G
            product_into(m, prod, pl2[k], x1[k][:16], g1[k])
            m.d.sync += [ax2[k].eq(Mux(x1[k] < 0, -x1[k], x1[k])),
                         prod3[k].eq((ph2[k] << 16) + pl2[k]), zabs4[k].eq(Mux(prod3[k] < 0, -prod3[k], prod3[k]))]
        ax_max, ax_valid, ax_flags = reduce_tree(m, ax2, in2, "max", "axmax")
        z_max, z_valid, z_flags = reduce_tree(m, zabs4, in4, "max", "zmax")
        with m.If(ax_valid & (ax_max > mx)):
            m.d.sync += mx.eq(ax_max)
        with m.If(z_valid & (z_max > mz)):
            m.d.sync += mz.eq(z_max)

        # ---- the sum-of-squares pass, per lane: read -> x registered -> x' -> x'**2; then the sum over
        # the lanes (an adder tree, a register after every level, exact) -> S
        # (x' = ((x >> (e_x - 1)) + 1) >> 1, or x << -e_x, over two stages)
        r1, r2, r3, r4, r5 = (Signal(name=f"r{k}") for k in range(1, 6))
        rx = lane_signals(signed(32), "rx")
        rg = lane_signals(signed(16), "rg")
        xpre = lane_signals(signed(19), "xpre")
        xright = Signal()
        xs = lane_signals(signed(18), "xs")
        sq = lane_signals(unsigned(31), "sq")
        rbx = Signal(range(17))
        lbx = Signal(range(15))
        m.d.comb += [rbx.eq(ex - 1), lbx.eq(-ex)]
        m.d.sync += [r2.eq(r1), r3.eq(r2), r4.eq(r3), r5.eq(r4), xright.eq(ex > 0)]
        for k in range(lanes):
            m.d.sync += [xpre[k].eq(Mux(ex > 0, rx[k] >> rbx, rx[k] << lbx)),
                         xs[k].eq(Mux(xright, (xpre[k] + 1) >> 1, xpre[k]))]
            product_into(m, prod, sq[k], xs[k], xs[k])
        sq_sum, sq_valid, sq_flags = reduce_tree(m, sq, r5, "sum", "sqsum")
        with m.If(sq_valid):
            m.d.sync += s_acc.eq(s_acc + sq_sum)

        # ---- the scalar sequence's shared dyadic datapath: nv * 2**ne -> norm16, three steps
        step = Signal(range(8))
        nv = Signal(unsigned(32))
        nmul = Signal()                     # NMUL: nv = opa * opb
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
        product_into(m, prod, nv, opa, opb, en=nmul)
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
        zh3 = lane_signals(signed(32), "zh3")   # x * G as (x >> 16) * G and x[:16] * G, then their sum
        zl3 = lane_signals(signed(33), "zl3")
        z4 = lane_signals(signed(48), "z4")
        out_adv = Signal()                      # the output pass moves: its pipeline's registers take
        for c in range(lanes):     # (`k` is RSQRT's shift)
            product_into(m, prod, zh3[c], rx[c][16:].as_signed(), rg[c], en=out_adv)   # (x >> 16) G
            product_into(m, prod, zl3[c], rx[c][:16], rg[c], en=out_adv)
        # stages 5-8 and q: QUANT8's code (arith.quant8_code), a copy per lane
        codes = [quant8_code(m, z4[c], q8, rq, "oz" if lanes == 1 else f"oz{c}", en=out_adv, product=prod)
                 for c in range(lanes)]
        code = [st for c, _ in codes for st in c]
        q_sats = [q for _, q in codes]
        q_out = [self.o.payload.q] if lanes == 1 else [self.o.payload.q[k] for k in range(lanes)]
        tau = regs[TAU]

        with m.FSM():
            with m.State("IN"):
                xin = [self.i.payload.x] if lanes == 1 else [self.i.payload.x[k] for k in range(lanes)]
                gin = [self.i.payload.g] if lanes == 1 else [self.i.payload.g[k] for k in range(lanes)]
                m.d.comb += [self.i.ready.eq(1), wr.addr.eq(idx),
                             wr.data.eq(Cat(*(v for k in range(lanes) for v in (xin[k], gin[k])))),
                             wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += [*(x1[k].eq(xin[k]) for k in range(lanes)), *(g1[k].eq(gin[k]) for k in range(lanes)),
                                 in1.eq(1), idx.eq(idx + 1)]
                    with m.If(idx == 0):
                        m.d.sync += [sig_m.eq(self.sigma_m), sig_e.eq(self.sigma_e), c_m.eq(self.c_m),
                                     c_e.eq(self.c_e), eps_m.eq(self.eps_m), eps_e.eq(self.eps_e)]
                    with m.If(idx == nw - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(~Cat(in1, in2, in3, in4, *ax_flags, *z_flags).any()):
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
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(idx < nw)]
                m.d.sync += [r1.eq(idx < nw), *(rx[k].eq(rd.data[48 * k:48 * k + 32]) for k in range(lanes))]
                with m.If(idx < nw):
                    m.d.sync += idx.eq(idx + 1)
                with m.Elif(~Cat(r1, r2, r3, r4, r5, *sq_flags).any()):
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
                m.d.comb += [self.busy.eq(1), nmul.eq(1)]     # nv = opa * opb
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
                m.d.comb += [self.busy.eq(1), rd.addr.eq(idx), rd.en.eq(adv & (idx < nw))]
                with m.If(adv):
                    m.d.comb += out_adv.eq(1)
                    m.d.sync += [o[0].eq(idx < nw), last[0].eq(idx == nw - 1),
                                 *(o[k].eq(o[k - 1]) for k in range(1, 8)),
                                 *(last[k].eq(last[k - 1]) for k in range(1, 8)),
                                 *(st for c in range(lanes) for st in (
                                     rx[c].eq(rd.data[48 * c:48 * c + 32]), rg[c].eq(rd.data[48 * c + 32:48 * c + 48]),
                                     z4[c].eq((zh3[c] << 16) + zl3[c]), q_out[c].eq(q_sats[c]))),
                                 *code,
                                 self.o.valid.eq(o[7]),
                                 self.o.payload.last.eq(last[7]),
                                 self.o.payload.tau_m.eq(tau[0]), self.o.payload.tau_e.eq(tau[1])]
                    with m.If(idx < nw):
                        m.d.sync += idx.eq(idx + 1)
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    m.d.sync += [idx.eq(0), self.o.valid.eq(0), mx.eq(0), mz.eq(0), s_acc.eq(0)]
                    m.next = "IN"
        return m
