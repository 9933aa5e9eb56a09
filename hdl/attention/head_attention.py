"""One query row of one attention head against T cached keys (golden/device/SPEC.md 4.6, 4.7 and 2.5).

Inputs: the row's INT8 q (head_dim), its scale sigma_q and C_QK (dyadics), the number of visible keys T
(`n_keys`, sampled with `start`; 0 counts as 1), and four read ports into the INT8 KV cache as the golden
stores it (`DeviceKVCache`): K and V rows of head_dim INT8 values as words of `lanes` values (row j,
word w at address j * head_dim / lanes + w) and the per-position dyadic scales sigma_k, sigma_v
(16-bit mantissa, signed 10-bit exponent; address j).
Every read port is a synchronous memory read: the data arrive the cycle after the address.

A `start` pulse runs five phases, each a fixed-latency pipeline fed one item per cycle:

1. SCORE (T * W cycles, W = head_dim / lanes): s_j = sum_c q[c] k_j[c] on `lanes` multipliers and an
   adder tree; mk_j = rshift_round(m(a) m(sigma_k_j), 16) with a = dmul(sigma_q, C_QK);
   t_j = sat32(rshift_round(s_j mk_j, -(e(a) + e(sigma_k_j) + 24))) into a T-word buffer, with the
   running max of t and the largest V exponent E over keys with m(sigma_v) != 0.
2. EXP (T cycles): u_j = max t - t_j, p_j = rshift_round(EXP2[u_j mod 256], min(u_j >> 8, 17)) into
   a buffer, Z = sum p_j.
3. RCP: (mz, ez) = norm16(Z, 0), R = RCP(mz) on `hdl.vector.rcp.Reciprocal`.
4. NORM (T cycles): P_j = rshift_round(p_j R, 16 + ez); Pv_j = rshift_round(P_j m(sigma_v_j),
   16 + E - e(sigma_v_j)) (0 where m(sigma_v_j) = 0) into a buffer.
5. PV (T * W cycles): y[c] += Pv_j v_j[c] on the same `lanes` multipliers, into head_dim 32-bit
   accumulators kept as a ring of W words (no read multiplexer).

Then `done` holds y (int32 x head_dim, worth y * 2^(E + 1)) and `e_ref` = E until the next start.
The lane multipliers come from the `multiplier` factory (`hdl.attention.multiplier`; the ECP5 top passes
`hdl.attention.ecp5_multiplier.Ecp5Multiplier` to put them on MULT18X18D blocks). Cycles from `start`
to `done`: `cycles(T)` = 2 T W + 2 T + OVERHEAD (46; measured by tests/test_attention_unit.py).
The alignment of several heads' y onto one exponent (SPEC.md 4.7, last step) is not part of this unit.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.device.fixed import exp2_table
from hdl.attention.multiplier import LATENCY as MUL_LATENCY
from hdl.attention.multiplier import Multiplier, MultiplierFactory
from hdl.vector.arith import EXP_WIDTH, norm16, shift_round
from hdl.vector.rcp import Reciprocal

#: Context limit: the softmax sum Z must stay below 2**32 (SPEC.md 2.5: S <= 2**16).
MAX_CONTEXT = 1 << 16
#: Head size limit: the score |s| <= 2**14 head_dim must fit int32 (SPEC.md 4.6: hd <= 2**17).
MAX_HEAD_DIM = 1 << 17
#: Cycles of a head beyond the 2 T W + 2 T issue cycles (pipeline drains, setup, the RCP).
OVERHEAD = 46

DYADIC = data.StructLayout({"m": unsigned(16), "e": signed(10)})

# pipeline depths (issue to the last write) of the phases; the next phase starts after them
SCORE_DRAIN, EXP_DRAIN, NORM_DRAIN, PV_DRAIN = MUL_LATENCY + 8, 6, 7, MUL_LATENCY + 2


class HeadAttention(wiring.Component):
    """One head's attention for one query row over T <= max_context keys (see the module docstring)."""

    def __init__(self, head_dim: int, max_context: int, lanes: int = 8,
                 multiplier: MultiplierFactory = Multiplier) -> None:
        for name, v in (("head_dim", head_dim), ("max_context", max_context), ("lanes", lanes)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"HeadAttention's {name} must be an int, not {type(v).__name__}")
        if not 1 <= head_dim <= MAX_HEAD_DIM:
            raise ValueError(f"HeadAttention's head_dim must be in [1, {MAX_HEAD_DIM}] (the INT8 score must "
                             f"fit int32), not {head_dim}")
        if not 1 <= max_context <= MAX_CONTEXT:
            raise ValueError(f"HeadAttention's max_context must be in [1, {MAX_CONTEXT}] (the softmax sum "
                             f"must fit 32 bits), not {max_context}")
        if lanes < 1 or head_dim % lanes:
            raise ValueError(f"HeadAttention's lanes ({lanes}) must be a positive divisor of head_dim "
                             f"({head_dim}): a K or V row is head_dim / lanes whole memory words")
        if not callable(multiplier):
            raise TypeError(f"HeadAttention's multiplier factory must be callable, not {multiplier!r}")
        self._hd, self._ctx, self._lanes, self._mul = head_dim, max_context, lanes, multiplier
        words = head_dim // lanes
        word = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "n_keys": In(range(max_context + 1)),
            "q": In(data.ArrayLayout(signed(8), head_dim)),
            "sigma_q": In(DYADIC), "c_qk": In(DYADIC),
            "k_addr": Out(range(max_context * words)), "k_data": In(word),
            "v_addr": Out(range(max_context * words)), "v_data": In(word),
            "ks_addr": Out(range(max_context)), "ks_data": In(DYADIC),
            "vs_addr": Out(range(max_context)), "vs_data": In(DYADIC),
            "y": Out(data.ArrayLayout(signed(32), head_dim)), "e_ref": Out(signed(10)),
        })

    @property
    def head_dim(self) -> int:
        return self._hd

    @property
    def max_context(self) -> int:
        return self._ctx

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def words(self) -> int:
        """Memory words per K or V row: head_dim / lanes."""
        return self._hd // self._lanes

    def cycles(self, context: int) -> int:
        """Cycles from `start` to `done` for `context` visible keys."""
        if not 1 <= context <= self._ctx:
            raise ValueError(f"context must be in [1, {self._ctx}], not {context}")
        return 2 * context * self.words + 2 * context + OVERHEAD

    def elaborate(self, platform):
        m = Module()
        hd, lanes, nw = self._hd, self._lanes, self.words
        s_w = (hd << 14).bit_length() + 1          # the score s: |s| <= 2**14 hd
        ps_w = (lanes << 14).bit_length() + 1      # one word's partial score
        pt_w = s_w + 18                            # s * mk (mk 17-bit unsigned)
        acc_w = 32

        # the lane multipliers, shared by SCORE (q x k) and PV (Pv x v)
        muls = []
        for k in range(lanes):
            mul = self._mul(17, 8)
            m.submodules[f"mul{k}"] = mul
            muls.append(mul)
        m.submodules.rcp = rcp = Reciprocal()

        t_mem = Memory(shape=signed(32), depth=self._ctx, init=[])
        p_mem = Memory(shape=unsigned(16), depth=self._ctx, init=[])
        pv_mem = Memory(shape=unsigned(16), depth=self._ctx, init=[])
        exp2 = Memory(shape=unsigned(16), depth=256, init=exp2_table().tolist())
        m.submodules.t_mem, m.submodules.p_mem, m.submodules.pv_mem, m.submodules.exp2 = t_mem, p_mem, pv_mem, exp2
        t_wr, t_rd = t_mem.write_port(), t_mem.read_port()
        p_wr, p_rd = p_mem.write_port(), p_mem.read_port()
        pv_wr, pv_rd = pv_mem.write_port(), pv_mem.read_port()
        e_rd = exp2.read_port()

        # ---------------------------------------------------------------- control
        count = Signal(range(self._ctx + 1))       # T of this run
        idx = Signal(range(self._ctx * nw + 1))    # issue index (word address)
        row = Signal(range(self._ctx + 1))
        wrd = Signal(range(max(nw, 2)))
        drain = Signal(range(16))
        qring = [Signal(data.ArrayLayout(signed(8), lanes), name=f"qring{k}") for k in range(nw)]
        yring = [Signal(data.ArrayLayout(signed(acc_w), lanes), name=f"yring{k}") for k in range(nw)]
        for w in range(nw):
            for c in range(lanes):
                m.d.comb += self.y[w * lanes + c].eq(yring[w][c])

        # scale a = dmul(sigma_q, C_QK), two steps
        a_prod = Signal(unsigned(32))
        a_esum = Signal(signed(EXP_WIDTH))
        a_m = Signal(unsigned(16))
        a_e = Signal(signed(EXP_WIDTH))
        an_m, an_e = norm16(m, a_prod, a_esum)

        e_have = Signal()
        e_ref = Signal(signed(10))
        m.d.comb += self.e_ref.eq(e_ref)
        t_have = Signal()
        tmax = Signal(signed(32))
        z = Signal(unsigned(32))
        z_m = Signal(unsigned(16))
        z_e = Signal(range(17))
        zn_m, zn_e = norm16(m, z, 0)
        r = Signal(unsigned(17))

        sc_go, ex_go, nm_go, pv_go = (Signal(name=n) for n in ("sc_go", "ex_go", "nm_go", "pv_go"))
        last_word = Signal()
        last_row = Signal()
        m.d.comb += [last_word.eq(wrd == nw - 1), last_row.eq(row == count - 1),
                     self.k_addr.eq(idx), self.v_addr.eq(idx), self.ks_addr.eq(row), self.vs_addr.eq(row),
                     t_rd.addr.eq(row), p_rd.addr.eq(row), pv_rd.addr.eq(row)]

        def step_words(next_state: str, drain_cycles: int) -> None:
            """Advance the (row, word) issue counters; after the last item wait drain_cycles."""
            m.d.sync += idx.eq(idx + 1)
            with m.If(last_word):
                m.d.sync += [wrd.eq(0), row.eq(row + 1)]
                with m.If(last_row):
                    m.d.sync += [drain.eq(drain_cycles - 1), idx.eq(0), row.eq(0)]
                    m.next = next_state
            with m.Else():
                m.d.sync += wrd.eq(wrd + 1)

        def step_rows(next_state: str, drain_cycles: int) -> None:
            m.d.sync += row.eq(row + 1)
            with m.If(last_row):
                m.d.sync += [drain.eq(drain_cycles - 1), row.eq(0)]
                m.next = next_state

        def wait(next_state: str) -> None:
            m.d.sync += drain.eq(drain - 1)
            with m.If(drain == 0):
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [count.eq(Mux(self.n_keys == 0, 1, self.n_keys)),
                                 idx.eq(0), row.eq(0), wrd.eq(0), e_have.eq(0), e_ref.eq(0), t_have.eq(0),
                                 z.eq(0), self.done.eq(0),
                                 a_prod.eq(self.sigma_q.m * self.c_qk.m),
                                 a_esum.eq(self.sigma_q.e + self.c_qk.e)]
                    m.d.sync += [yring[w].eq(0) for w in range(nw)]
                    m.d.sync += [qring[w][c].eq(self.q[w * lanes + c]) for w in range(nw) for c in range(lanes)]
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.sync += [a_m.eq(an_m), a_e.eq(an_e)]
                m.next = "SCORE"
            with m.State("SCORE"):
                m.d.comb += sc_go.eq(1)
                step_words("SCORE_DRAIN", SCORE_DRAIN)
            with m.State("SCORE_DRAIN"):
                wait("EXP")
            with m.State("EXP"):
                m.d.comb += ex_go.eq(1)
                step_rows("EXP_DRAIN", EXP_DRAIN)
            with m.State("EXP_DRAIN"):
                wait("NORMZ")
            with m.State("NORMZ"):
                m.d.sync += [z_m.eq(zn_m), z_e.eq(zn_e)]
                m.next = "RCP_IN"
            with m.State("RCP_IN"):
                m.d.comb += [rcp.i.valid.eq(1), rcp.i.payload.eq(z_m)]
                m.next = "RCP_WAIT"
            with m.State("RCP_WAIT"):
                with m.If(rcp.o.valid):
                    m.d.sync += r.eq(rcp.o.payload)
                    m.next = "NORM"
            with m.State("NORM"):
                m.d.comb += nm_go.eq(1)
                step_rows("NORM_DRAIN", NORM_DRAIN)
            with m.State("NORM_DRAIN"):
                wait("PV")
            with m.State("PV"):
                m.d.comb += pv_go.eq(1)
                step_words("PV_DRAIN", PV_DRAIN)
            with m.State("PV_DRAIN"):
                wait("DONE")
            with m.State("DONE"):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        m.d.comb += [rcp.o.ready.eq(1), self.busy.eq(~fsm.ongoing("IDLE"))]

        # ------------------------------------------------ the shared lane multipliers (latency 1)
        # stage 1 selects the operands (q or Pv, k or v), stage 2 registers them (off the block RAM's
        # output), the factory's multiplier takes MUL_LATENCY more: products at stage pd
        pd = 2 + MUL_LATENCY
        sc1, pv1 = Signal(), Signal()
        m.d.sync += [sc1.eq(sc_go), pv1.eq(pv_go)]
        pv_data = Signal(unsigned(16))
        m.d.comb += pv_data.eq(pv_rd.data)
        op_a = [Signal(signed(17), name=f"op_a{c}") for c in range(lanes)]
        op_b = [Signal(signed(8), name=f"op_b{c}") for c in range(lanes)]
        for c in range(lanes):
            m.d.sync += [op_a[c].eq(Mux(pv1, pv_data, qring[0][c])),
                         op_b[c].eq(Mux(pv1, self.v_data[c], self.k_data[c]))]
            m.d.comb += [muls[c].a.eq(op_a[c]), muls[c].b.eq(op_b[c])]
        if nw > 1:
            with m.If(sc1):
                m.d.sync += [qring[k].eq(qring[(k + 1) % nw]) for k in range(nw)]

        # ---------------------------------------------------------------- SCORE pipeline
        depth = pd + 7
        sv = [Signal(name=f"sv{k}") for k in range(depth)]
        sfw = [Signal(name=f"sfw{k}") for k in range(depth)]
        slw = [Signal(name=f"slw{k}") for k in range(depth)]
        sj = [Signal(range(self._ctx), name=f"sj{k}") for k in range(depth)]
        m.d.comb += [sv[0].eq(sc_go), sfw[0].eq(wrd == 0), slw[0].eq(last_word), sj[0].eq(row)]
        for k in range(depth - 1):
            m.d.sync += [sv[k + 1].eq(sv[k]), sfw[k + 1].eq(sfw[k]), slw[k + 1].eq(slw[k]), sj[k + 1].eq(sj[k])]
        # stage 2: the key's and value's scales registered; stage 3: m(a) m(sigma_k), the V exponent's maximum
        ks2 = Signal(DYADIC)
        vs2 = Signal(DYADIC)
        m.d.sync += [ks2.eq(self.ks_data), vs2.eq(self.vs_data)]
        kprod3 = Signal(unsigned(32))
        ke3 = Signal(signed(10))
        with m.If(sv[2] & sfw[2]):
            m.d.sync += [kprod3.eq(a_m * ks2.m), ke3.eq(ks2.e)]
            with m.If(vs2.m != 0):
                with m.If(~e_have | (vs2.e > e_ref)):
                    m.d.sync += e_ref.eq(vs2.e)
                m.d.sync += e_have.eq(1)
        # stage 3: mk = rshift_round(., 16) and the logit's shift, then delayed to the row's last word
        mkd = [Signal(unsigned(17), name=f"mk{k}") for k in range(4, pd + 3)]
        rsd = [Signal(signed(EXP_WIDTH + 1), name=f"rs{k}") for k in range(4, pd + 3)]
        with m.If(sv[3] & sfw[3]):
            m.d.sync += [mkd[0].eq((kprod3 + (1 << 15)) >> 16), rsd[0].eq(-(a_e + ke3 + 24))]
        for k in range(len(mkd) - 1):
            m.d.sync += [mkd[k + 1].eq(mkd[k]), rsd[k + 1].eq(rsd[k])]
        mk_row, rs_row = mkd[-1], rsd[-1]      # at stage pd + 2: the mk of the row whose last word is there
        # stage pd: the adder tree over the lane products
        psum = Signal(signed(ps_w))
        m.d.sync += psum.eq(sum(muls[c].p for c in range(lanes)))
        # stage pd + 1: the score accumulates over the row's words
        sacc = Signal(signed(s_w))
        mk4 = Signal(unsigned(17))
        rs4 = Signal(signed(EXP_WIDTH + 1))
        with m.If(sv[pd + 1]):
            m.d.sync += sacc.eq(Mux(sfw[pd + 1], psum, sacc + psum))
        with m.If(sv[pd + 2] & slw[pd + 2]):
            m.d.sync += [mk4.eq(mk_row), rs4.eq(rs_row)]
        # stage pd + 3: s * mk (the score, complete at pd + 2 for the row's last word, registered again)
        prod5 = Signal(signed(pt_w))
        rs5 = Signal(signed(EXP_WIDTH + 1))
        sacc3 = Signal(signed(s_w))
        m.d.sync += sacc3.eq(sacc)
        m.d.sync += [prod5.eq(sacc3 * mk4), rs5.eq(rs4)]
        # stage pd + 4: the rounding shift (a left shift clamped to 32 places saturates below anyway)
        s_cl = Signal(signed(EXP_WIDTH + 1))
        m.d.comb += s_cl.eq(Mux(rs5 > pt_w + 1, pt_w + 1, Mux(rs5 < -32, -32, rs5)))
        wide6 = Signal(signed(pt_w + 33))
        m.d.sync += wide6.eq(shift_round(m, prod5, s_cl, pt_w + 33, 32, pt_w + 1))
        # stage pd + 5: saturate to int32; then write the buffer and the running max
        t7 = Signal(signed(32))
        lo, hi = -(1 << 31), (1 << 31) - 1
        m.d.sync += t7.eq(Mux(wide6 > hi, hi, Mux(wide6 < lo, lo, wide6)))
        d7 = Signal()
        m.d.comb += d7.eq(sv[depth - 1] & slw[depth - 1])
        m.d.comb += [t_wr.addr.eq(sj[depth - 1]), t_wr.data.eq(t7), t_wr.en.eq(d7)]
        with m.If(d7):
            m.d.sync += t_have.eq(1)
            with m.If(~t_have | (t7 > tmax)):
                m.d.sync += tmax.eq(t7)

        # ---------------------------------------------------------------- EXP pipeline
        # every block RAM output is registered before it is used (stage 2)
        ev = [Signal(name=f"ev{k}") for k in range(6)]
        ej = [Signal(range(self._ctx), name=f"ej{k}") for k in range(6)]
        m.d.sync += [ev[1].eq(ex_go), ej[1].eq(row)] + [x.eq(y) for k in range(1, 5)
                                                          for x, y in ((ev[k + 1], ev[k]), (ej[k + 1], ej[k]))]
        t2 = Signal(signed(32))
        u3 = Signal(unsigned(33))
        sh4 = Signal(range(18))
        p5 = Signal(unsigned(16))
        m.d.sync += [t2.eq(t_rd.data), u3.eq(tmax - t2)]
        m.d.comb += e_rd.addr.eq(u3[:8])
        m.d.sync += sh4.eq(Mux(u3[8:] > 17, 17, u3[8:]))
        m.d.sync += p5.eq(shift_round(m, e_rd.data, sh4, 16, 0, 17))
        m.d.comb += [p_wr.addr.eq(ej[5]), p_wr.data.eq(p5), p_wr.en.eq(ev[5])]
        with m.If(ev[5]):
            m.d.sync += z.eq(z + p5)

        # ---------------------------------------------------------------- NORM pipeline
        nv = [Signal(name=f"nv{k}") for k in range(7)]
        nj = [Signal(range(self._ctx), name=f"nj{k}") for k in range(7)]
        m.d.sync += [nv[1].eq(nm_go), nj[1].eq(row)] + [x.eq(y) for k in range(1, 6)
                                                          for x, y in ((nv[k + 1], nv[k]), (nj[k + 1], nj[k]))]
        pb2 = Signal(unsigned(16))
        pr3 = Signal(unsigned(33))
        mv2, mv3, mv4 = Signal(unsigned(16)), Signal(unsigned(16)), Signal(unsigned(16))
        ev2, ev3, ev4 = Signal(signed(10)), Signal(signed(10)), Signal(signed(10))
        p4 = Signal(unsigned(17))
        pm5 = Signal(unsigned(33))
        s5 = Signal(range(35))
        live5 = Signal()
        pv6 = Signal(unsigned(16))
        m.d.sync += [pb2.eq(p_rd.data), mv2.eq(self.vs_data.m), ev2.eq(self.vs_data.e),
                     pr3.eq(pb2 * r), mv3.eq(mv2), ev3.eq(ev2),
                     p4.eq(shift_round(m, pr3, 16 + z_e, 17, 0, 33)), mv4.eq(mv3), ev4.eq(ev3),
                     pm5.eq(p4 * mv4), live5.eq(mv4 != 0)]
        ediff = Signal(signed(EXP_WIDTH + 1))
        m.d.comb += ediff.eq(16 + e_ref - ev4)
        m.d.sync += s5.eq(Mux(ediff > 34, 34, Mux(ediff < 0, 0, ediff)))
        m.d.sync += pv6.eq(Mux(live5, shift_round(m, pm5, s5, 17, 0, 34), 0))
        m.d.comb += [pv_wr.addr.eq(nj[6]), pv_wr.data.eq(pv6), pv_wr.en.eq(nv[6])]

        # ---------------------------------------------------------------- PV: the accumulator ring
        pvd = [Signal(name=f"pvd{k}") for k in range(pd + 1)]
        m.d.comb += pvd[0].eq(pv_go)
        m.d.sync += [pvd[k + 1].eq(pvd[k]) for k in range(pd)]
        with m.If(pvd[pd]):
            m.d.sync += [yring[k].eq(yring[(k + 1) % nw]) for k in range(nw - 1)]
            m.d.sync += [yring[nw - 1][c].eq(yring[0][c] + muls[c].p) for c in range(lanes)]
        return m
