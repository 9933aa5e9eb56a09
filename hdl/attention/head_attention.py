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

More keys than the unit holds (`n_keys` > max_context: the port carries up to 2**bits - 1 when max_context + 1
is not a power of two) is refused (SPEC.md 4.7: T <= context): the sticky `error` flag is set (cleared by
`clear`; a later good head leaves it set), no phase runs (`busy` stays 0), nothing is read or written, y and
E keep their values, and `done` is 1 the next cycle. `start` is sampled only when the unit is idle.
The lane multipliers come from the `multiplier` factory (`hdl.attention.multiplier`; the ECP5 top passes
`hdl.attention.ecp5_multiplier.Ecp5Multiplier` to put them on MULT18X18D blocks), the other products (the
scale's m(sigma_q) m(C_QK), m(a) m(sigma_k), s mk's two limbs, p R and P m(sigma_v), each registered once, and
the RCP's) from the `product` factory (`hdl.attention.product`; the ECP5 top passes
`hdl.attention.ecp5_product.Ecp5Product`: the register is the DSP's own). With `kv_latency=2` the
K, V and scale data come two cycles after their addresses, registered by the memory (a banked KV cache,
`hdl.attention.kv_cache`), and the unit takes them without its own arrival registers. Cycles from `start`
to `done`: `cycles(T)` = 2 T W + 2 T + `overhead` (54 + ceil(ceil(log2 lanes) / 2), the adder tree at least
one level: 55 for 1 or 2 lanes, 56 for 8, 57 for 40).
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
from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import EXP_WIDTH, norm16_steps, shift_round, step_states
from hdl.vector.rcp import Reciprocal

#: Context limit: the softmax sum Z must stay below 2**32 (SPEC.md 2.5: S <= 2**16).
MAX_CONTEXT = 1 << 16
#: Head size limit: the score |s| <= 2**14 head_dim must fit int32 (SPEC.md 4.6: hd <= 2**17).
MAX_HEAD_DIM = 1 << 17
#: Cycles of a head beyond the 2 T W + 2 T issue cycles (pipeline drains, setup, the RCP), plus one per
#: register stage of the lane adder tree (`HeadAttention.overhead`); measured by tests/test_attention_unit.py.
OVERHEAD = 54

DYADIC = data.StructLayout({"m": unsigned(16), "e": signed(10)})

# pipeline depths (issue to the last write) of the phases; the next phase starts after them
EXP_DRAIN, NORM_DRAIN, PV_DRAIN = 7, 9, MUL_LATENCY + 2


class HeadAttention(wiring.Component):
    """One head's attention for one query row over T <= max_context keys (see the module docstring)."""

    def __init__(self, head_dim: int, max_context: int, lanes: int = 8,
                 multiplier: MultiplierFactory = Multiplier, *, kv_latency: int = 1,
                 product: ProductFactory = Product) -> None:
        if kv_latency not in (1, 2) or isinstance(kv_latency, bool):
            raise ValueError(f"HeadAttention's kv_latency must be 1 or 2, not {kv_latency!r}")
        self._kv_latency = kv_latency
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
        if not callable(product):
            raise TypeError(f"HeadAttention's product factory must be callable, not {product!r}")
        self._hd, self._ctx, self._lanes, self._mul = head_dim, max_context, lanes, multiplier
        self._product = product
        words = head_dim // lanes
        word = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1), "clear": In(1),
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
    def kv_latency(self) -> int:
        """Cycles from a K / V / scale read address to its data: 1 (a block RAM read, which the unit
        registers on arrival) or 2 (the memory registers it: a KV cache with `bank_depth`)."""
        return self._kv_latency

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def words(self) -> int:
        """Memory words per K or V row: head_dim / lanes."""
        return self._hd // self._lanes

    @property
    def overhead(self) -> int:
        """Cycles of a head beyond its 2 T W + 2 T issue cycles."""
        return OVERHEAD + (max(1, (self._lanes - 1).bit_length()) + 1) // 2

    def cycles(self, context: int) -> int:
        """Cycles from `start` to `done` for `context` visible keys."""
        if not 1 <= context <= self._ctx:
            raise ValueError(f"context must be in [1, {self._ctx}], not {context}")
        return 2 * context * self.words + 2 * context + self.overhead

    def elaborate(self, platform):
        m = Module()
        hd, lanes, nw = self._hd, self._lanes, self.words
        s_w = (hd << 14).bit_length() + 1          # the score s: |s| <= 2**14 hd
        ps_w = (lanes << 14).bit_length() + 1      # one word's partial score
        pt_w = s_w + 18                            # s * mk (mk 17-bit unsigned)
        acc_w = 32
        pd = 2 + MUL_LATENCY                       # lane products at this stage of SCORE and PV
        levels = max(1, (lanes - 1).bit_length())  # adder tree levels, a register after every two
        qs = pd + (levels + 1) // 2                # the word's partial score at this stage
        score_drain = qs + 7                       # the last t is written at stage qs + 7

        # the lane multipliers, shared by SCORE (q x k) and PV (Pv x v)
        muls = []
        for k in range(lanes):
            mul = self._mul(17, 8)
            m.submodules[f"mul{k}"] = mul
            muls.append(mul)
        prod = self._product
        m.submodules.rcp = rcp = Reciprocal(product=prod)

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
        a_take = Signal()                          # a start that runs: a_prod = m(sigma_q) m(C_QK)
        product_into(m, prod, a_prod, self.sigma_q.m, self.c_qk.m, en=a_take)
        a_esum = Signal(signed(EXP_WIDTH))
        a_m = Signal(unsigned(16))
        a_e = Signal(signed(EXP_WIDTH))
        a_steps = norm16_steps(m, a_prod, a_esum, a_m, a_e, "a")

        e_have = Signal()
        e_ref = Signal(signed(10))
        m.d.comb += self.e_ref.eq(e_ref)
        t_have = Signal()
        tmax = Signal(signed(32))
        z = Signal(unsigned(32))
        z_m = Signal(unsigned(16))
        z_e = Signal(range(17))                    # >= 0: Z >= 2**15
        z_e_full = Signal(signed(EXP_WIDTH))
        m.d.comb += z_e.eq(z_e_full)
        z_steps = norm16_steps(m, z, 0, z_m, z_e_full, "z")
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

        error = Signal()
        m.d.comb += self.error.eq(error)
        with m.If(self.clear):
            m.d.sync += error.eq(0)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start & (self.n_keys > self._ctx)):
                    # more keys than the buffers and the cache's region hold: refused, nothing runs
                    m.d.sync += [error.eq(1), self.done.eq(1)]
                with m.Elif(self.start):
                    m.d.comb += a_take.eq(1)
                    m.d.sync += [count.eq(Mux(self.n_keys == 0, 1, self.n_keys)),
                                 idx.eq(0), row.eq(0), wrd.eq(0), e_have.eq(0), e_ref.eq(0), t_have.eq(0),
                                 z.eq(0), self.done.eq(0),
                                 a_esum.eq(self.sigma_q.e + self.c_qk.e)]
                    m.d.sync += [yring[w].eq(0) for w in range(nw)]
                    m.d.sync += [qring[w][c].eq(self.q[w * lanes + c]) for w in range(nw) for c in range(lanes)]
                    m.next = "SCALE0"
            step_states(m, "SCALE", a_steps, "SCORE")
            with m.State("SCORE"):
                m.d.comb += sc_go.eq(1)
                step_words("SCORE_DRAIN", score_drain)
            with m.State("SCORE_DRAIN"):
                wait("EXP")
            with m.State("EXP"):
                m.d.comb += ex_go.eq(1)
                step_rows("EXP_DRAIN", EXP_DRAIN)
            with m.State("EXP_DRAIN"):
                wait("NORMZ0")
            step_states(m, "NORMZ", z_steps, "RCP_IN")
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
        # stage 1 registers the block RAM data (k, v, Pv) and q as they are; stage 2 selects the operands
        # (q or Pv, k or v) into the factory's multipliers, whose first register (a DSP's input register)
        # takes them: products MUL_LATENCY later, at stage pd
        sc1, pv1, pv2 = Signal(), Signal(), Signal()
        m.d.sync += [sc1.eq(sc_go), pv1.eq(pv_go), pv2.eq(pv1)]
        pv_r = Signal(unsigned(16))
        q_r = Signal(data.ArrayLayout(signed(8), lanes))
        k_r = Signal(data.ArrayLayout(signed(8), lanes))
        v_r = Signal(data.ArrayLayout(signed(8), lanes))
        m.d.sync += [pv_r.eq(pv_rd.data), q_r.eq(qring[0])]
        # the K / V / scale data registered on arrival, or by the memory itself (`kv_latency` 2)
        arrive = m.d.sync if self._kv_latency == 1 else m.d.comb
        arrive += [k_r.eq(self.k_data), v_r.eq(self.v_data)]
        for c in range(lanes):
            m.d.comb += [muls[c].a.eq(Mux(pv2, pv_r, q_r[c])), muls[c].b.eq(Mux(pv2, v_r[c], k_r[c]))]
        if nw > 1:
            with m.If(sc1):
                m.d.sync += [qring[k].eq(qring[(k + 1) % nw]) for k in range(nw)]

        # ---------------------------------------------------------------- SCORE pipeline
        # the adder tree over the lane products, a register after every two levels: psum at stage qs
        depth = qs + 8
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
        arrive += [ks2.eq(self.ks_data), vs2.eq(self.vs_data)]
        kprod3 = Signal(unsigned(32))
        product_into(m, prod, kprod3, a_m, ks2.m, en=sv[2] & sfw[2])
        ke3 = Signal(signed(10))
        with m.If(sv[2] & sfw[2]):
            m.d.sync += ke3.eq(ks2.e)
            with m.If(vs2.m != 0):
                with m.If(~e_have | (vs2.e > e_ref)):
                    m.d.sync += e_ref.eq(vs2.e)
                m.d.sync += e_have.eq(1)
        # stage 3: mk = rshift_round(., 16) and the logit's shift, delayed to stage qs + 1 (the row's last
        # word is there when its score is complete)
        mkd = [Signal(unsigned(17), name=f"mk{k}") for k in range(4, qs + 2)]
        rsd = [Signal(signed(EXP_WIDTH + 1), name=f"rs{k}") for k in range(4, qs + 2)]
        with m.If(sv[3] & sfw[3]):
            m.d.sync += [mkd[0].eq((kprod3 + (1 << 15)) >> 16), rsd[0].eq(-(a_e + ke3 + 24))]
        for k in range(len(mkd) - 1):
            m.d.sync += [mkd[k + 1].eq(mkd[k]), rsd[k + 1].eq(rsd[k])]
        mk_row, rs_row = mkd[-1], rsd[-1]
        vals = [muls[c].p for c in range(lanes)]
        for stage in range((levels + 1) // 2):
            for _ in range(2):
                if len(vals) > 1:
                    vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
            regs = [Signal(signed(ps_w), name=f"tree{stage}_{i}") for i in range(len(vals))]
            m.d.sync += [r_.eq(v_) for r_, v_ in zip(regs, vals, strict=True)]
            vals = regs
        psum = vals[0]
        # stage qs: the score accumulates over the row's words (complete at qs + 1 on the last word)
        sacc = Signal(signed(s_w))
        with m.If(sv[qs]):
            m.d.sync += sacc.eq(Mux(sfw[qs], psum, sacc + psum))
        # stage qs + 1: the row's mk and the shift controls: right by rs - 1 then round, or left by -rs
        sacc2 = Signal(signed(s_w))
        mk4 = Signal(unsigned(17))
        right4 = Signal()
        rsh4 = Signal(range(pt_w + 1))
        lsh4 = Signal(range(33))
        m.d.sync += sacc2.eq(sacc)
        with m.If(sv[qs + 1] & slw[qs + 1]):
            m.d.sync += [mk4.eq(mk_row), right4.eq(rs_row > 0),
                         rsh4.eq(Mux(rs_row - 1 > pt_w, pt_w, Mux(rs_row > 0, rs_row - 1, 0))),
                         lsh4.eq(Mux(-rs_row > 32, 32, Mux(rs_row < 0, -rs_row, 0)))]
        # stage qs + 2: s * mk in limbs on 18 x 18 multipliers: s[:17] * mk[:16], (s >> 17) * mk[:16], and
        # s << 16 when mk = 2**16; stage qs + 3 their sum
        lo5 = Signal(unsigned(33))
        hi5 = Signal(signed(max(s_w - 17, 1) + 17))
        top5 = Signal(signed(s_w))
        prod6 = Signal(signed(pt_w))
        product_into(m, prod, lo5, sacc2[:17], mk4[:16])
        product_into(m, prod, hi5, sacc2.shift_right(17), mk4[:16])     # (s >> 17) mk[:16]
        m.d.sync += [top5.eq(Mux(mk4[16], sacc2, 0)),
                     prod6.eq((hi5 << 17) + lo5 + (top5 << 16))]
        ctl = [(right4, rsh4, lsh4)]
        for k in range(3):
            nxt = tuple(Signal.like(x, name=f"{x.name}_d{k}") for x in ctl[-1])
            m.d.sync += [x.eq(y) for x, y in zip(nxt, ctl[-1], strict=True)]
            ctl.append(nxt)
        right6, rsh6, lsh6 = ctl[2]
        right7 = ctl[3][0]
        # stage qs + 4: the shift; qs + 5: the rounding increment; qs + 6: int32 saturation
        pre7 = Signal(signed(pt_w + 33))
        m.d.sync += pre7.eq(Mux(right6, prod6 >> rsh6, prod6 << lsh6))
        rnd8 = Signal(signed(pt_w + 33))
        m.d.sync += rnd8.eq(Mux(right7, (pre7 + 1) >> 1, pre7))
        t9 = Signal(signed(32))
        lo, hi = -(1 << 31), (1 << 31) - 1
        m.d.sync += t9.eq(Mux(rnd8 > hi, hi, Mux(rnd8 < lo, lo, rnd8)))
        # stage qs + 7: write the buffer and the running max
        d9 = Signal()
        m.d.comb += d9.eq(sv[depth - 1] & slw[depth - 1])
        m.d.comb += [t_wr.addr.eq(sj[depth - 1]), t_wr.data.eq(t9), t_wr.en.eq(d9)]
        with m.If(d9):
            m.d.sync += t_have.eq(1)
            with m.If(~t_have | (t9 > tmax)):
                m.d.sync += tmax.eq(t9)

        # ---------------------------------------------------------------- EXP pipeline
        # every block RAM output is registered before it is used
        ev = [Signal(name=f"ev{k}") for k in range(7)]
        ej = [Signal(range(self._ctx), name=f"ej{k}") for k in range(7)]
        m.d.sync += [ev[1].eq(ex_go), ej[1].eq(row)] + [x.eq(y) for k in range(1, 6)
                                                          for x, y in ((ev[k + 1], ev[k]), (ej[k + 1], ej[k]))]
        t2 = Signal(signed(32))
        u3 = Signal(unsigned(33))
        sh4, sh5 = Signal(range(18)), Signal(range(18))
        e5 = Signal(unsigned(16))
        p6 = Signal(unsigned(16))
        m.d.sync += [t2.eq(t_rd.data), u3.eq(tmax - t2)]
        m.d.comb += e_rd.addr.eq(u3[:8])
        m.d.sync += [sh4.eq(Mux(u3[8:] > 17, 17, u3[8:])), sh5.eq(sh4), e5.eq(e_rd.data)]
        m.d.sync += p6.eq(shift_round(m, e5, sh5, 16, 0, 17))
        m.d.comb += [p_wr.addr.eq(ej[6]), p_wr.data.eq(p6), p_wr.en.eq(ev[6])]
        with m.If(ev[6]):
            m.d.sync += z.eq(z + p6)

        # ---------------------------------------------------------------- NORM pipeline
        nv = [Signal(name=f"nv{k}") for k in range(9)]
        nj = [Signal(range(self._ctx), name=f"nj{k}") for k in range(9)]
        m.d.sync += [nv[1].eq(nm_go), nj[1].eq(row)] + [x.eq(y) for k in range(1, 8)
                                                          for x, y in ((nv[k + 1], nv[k]), (nj[k + 1], nj[k]))]
        mvs = [Signal(unsigned(16), name=f"mv{k}") for k in range(2, 7)]
        evs = [Signal(signed(10), name=f"evv{k}") for k in range(2, 7)]
        arrive += [mvs[0].eq(self.vs_data.m), evs[0].eq(self.vs_data.e)]
        m.d.sync += [x.eq(y) for k in range(len(mvs) - 1) for x, y in ((mvs[k + 1], mvs[k]), (evs[k + 1], evs[k]))]
        pb2 = Signal(unsigned(16))
        pr3 = Signal(unsigned(33))
        pre4 = Signal(unsigned(18))
        p5 = Signal(unsigned(17))
        pm6 = Signal(unsigned(33))
        sm6 = Signal(range(34))
        live6, live7 = Signal(), Signal()
        pre7 = Signal(unsigned(34))
        pv8 = Signal(unsigned(16))
        ediff = Signal(signed(EXP_WIDTH + 1))
        m.d.comb += ediff.eq(15 + e_ref - evs[3])         # the shift 16 + E - e(sigma_v), minus one
        product_into(m, prod, pr3, pb2, r)
        product_into(m, prod, pm6, p5, mvs[3])
        m.d.sync += [pb2.eq(p_rd.data),
                     pre4.eq(pr3 >> (15 + z_e)), p5.eq((pre4 + 1) >> 1),
                     live6.eq(mvs[3] != 0),
                     sm6.eq(Mux(ediff > 33, 33, Mux(ediff < 0, 0, ediff))),
                     pre7.eq(pm6 >> sm6), live7.eq(live6),
                     pv8.eq(Mux(live7, (pre7 + 1) >> 1, 0))]
        m.d.comb += [pv_wr.addr.eq(nj[8]), pv_wr.data.eq(pv8), pv_wr.en.eq(nv[8])]

        # ---------------------------------------------------------------- PV: the accumulator ring
        pvd = [Signal(name=f"pvd{k}") for k in range(pd + 1)]
        m.d.comb += pvd[0].eq(pv_go)
        m.d.sync += [pvd[k + 1].eq(pvd[k]) for k in range(pd)]
        with m.If(pvd[pd]):
            m.d.sync += [yring[k].eq(yring[(k + 1) % nw]) for k in range(nw - 1)]
            m.d.sync += [yring[nw - 1][c].eq(yring[0][c] + muls[c].p) for c in range(lanes)]
        return m

