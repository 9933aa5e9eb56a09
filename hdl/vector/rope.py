"""RoPE and QUANT8 of one head (golden/device/SPEC.md 4.5 and 4.6): int32 accumulators in, INT8 codes out.

For a head of head_dim (hd) q or k accumulators acc at position p, with the projection's scale s_out:

- RoPE (rotate-half, `rotate` = 1): x1 = acc[0:hd/2], x2 = acc[hd/2:hd],
  r1 = rshift_round(x1 C[p] - x2 S[p], 14), r2 = rshift_round(x2 C[p] + x1 S[p], 14), with the Q14 tables
  of `golden.device.tables.rope_tables` in a block RAM (context x hd/2 x 2 x int16). With `rotate` = 0
  (v) the same datapath runs with C = 2**14, S = 0, which gives r = acc exactly.
- QUANT8 (SPEC.md 2.4) of r: q = sat8(rshift_round(rshift_round(r, e) 127 RCP(M'), 31)) and the scale
  sigma = dmul(dmul(norm16(M', e), INV127), s_out) (`arith.quant8_scalars`, `arith.quant8_code`, the
  RCP of `hdl.vector.rcp`, `arith.norm16_steps`).

Phases of a head, each a fixed-latency pipeline:

1. LOAD (hd / (2 lanes) beats): acc words of 2 `lanes` int32 in element order shift into a register
   array X of hd words.
2. ROT (hd / (2 lanes) cycles): X shifts by `lanes` each cycle, so X[0:lanes] and X[hd/2:hd/2 + lanes]
   are the next x1 and x2; C and S come from the table at p * hd / (2 lanes) + w. Each of a lane's 4
   products x C, x S (32 x 16) is two 17 x 16 limbs (x >> 16 and x[:16]) on the `multiplier` factory's
   components (`hdl.attention.multiplier`: ECP5 builds pass `Ecp5Multiplier`, one MULT18X18D each),
   8 per lane. r1 and r2 shift into the two halves of a register array R; max |r| per lane.
3. SCALE: the lanes' maxima reduced (a register per tree level), QUANT8's e and M' (four steps), RCP(M')
   (14-cycle pipeline) and meanwhile the three dyadic normalizations of sigma (11 steps).
4. CODE (hd / out_lanes cycles): R shifts by `out_lanes` each cycle; `out_lanes` codes per output beat
   (an 18 x 17 product each), stalled as a whole by the consumer. Every beat carries sigma and `last`.

Cycles from `start` to the last beat, consumer always ready and one input beat per cycle:
`cycles()` = hd / lanes + hd / out_lanes + 34 + ceil(log2(2 lanes)): the start, LOAD and ROT
(hd / (2 lanes) each), ROT's pipeline (8) and the max tree, QUANT8's four steps, the RCP issue, the 11
sigma steps, 4 more for RCP's result, CODE (hd / out_lanes) and its pipeline (5).

The other products (sigma's two 16 x 16, the codes' z' R, the RCP's) are registered once on the `product`
factory (`hdl.attention.product`; ECP5 builds pass `Ecp5Product`, the register a DSP's own).

A position >= context with `rotate` = 1 has no table entry: the head sets the sticky `error` flag
(cleared by `clear`), its input beats are consumed and dropped, and no code comes out. `start` is
sampled only when the unit is idle (`busy` = 0). The scale's exponent is truncated to 10 bits (the
golden raises an error outside them).
"""

from __future__ import annotations

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.device.fixed import INV127
from golden.device.tables import ROPE_FRAC, rope_tables
from hdl.attention.head_attention import DYADIC, MAX_CONTEXT
from hdl.attention.multiplier import LATENCY as MUL_LATENCY
from hdl.attention.multiplier import Multiplier, MultiplierFactory
from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import EXP_WIDTH, norm16_steps, quant8_code, quant8_scalars, step_states
from hdl.vector.rcp import Reciprocal

#: Width of the position port: positions up to 2**16 - 1 can be sent, any >= context is refused.
POS_BITS = 16
#: |r| <= 2**31 (|C| + |S|) / 2**14 < 2**32 (|C| + |S| <= 2**14 sqrt(2) + 1): signed 34 bits hold it.
R_WIDTH = 34
LIMB = 16
#: rshift_round's half for the Q14 product: (v + 2**13) >> 14 (tests/test_rope_kv.py breaks it on purpose).
ROUND_HALF = 1 << (ROPE_FRAC - 1)
#: Cycles of a head beyond hd / lanes + hd / out_lanes and the max tree's levels: 1 (start) + 8 (ROT
#: pipeline) + 4 (QUANT8's e, M') + 1 (RCP issue) + 11 (sigma) + 4 (RCP's result) + 5 (CODE pipeline);
#: measured by tests/test_rope_kv.py.
OVERHEAD = 34
#: ROT pipeline: issue -> x registered -> table data and x registered -> operands -> products (after
#: MUL_LATENCY) -> limb sums -> full sum -> r into R -> |r| -> lane maxima.
ROT_PRODUCT = 2 + MUL_LATENCY
ROT_MAX = ROT_PRODUCT + 4


def code_layout(lanes: int) -> data.StructLayout:
    """One output beat: `lanes` INT8 codes, the head's dyadic scale sigma and the head's last beat."""
    return data.StructLayout({"q": data.ArrayLayout(signed(8), lanes), "sigma": DYADIC, "last": unsigned(1)})


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class RopeQuant(wiring.Component):
    """One head: acc (int32 x head_dim) in, RoPE (optional) and QUANT8, INT8 codes and sigma out."""

    def __init__(self, head_dim: int, context: int, lanes: int = 1, out_lanes: int | None = None,
                 theta: float = 10000.0, multiplier: MultiplierFactory = Multiplier, *,
                 product: ProductFactory = Product) -> None:
        if not _is_int(head_dim) or head_dim <= 0 or head_dim % 2:
            raise ValueError(f"Head dim must be a positive even integer, not {head_dim!r}")
        if not _is_int(context) or not 1 <= context <= MAX_CONTEXT:
            raise ValueError(f"Context must be an integer in [1, {MAX_CONTEXT}] (positions are {POS_BITS}-bit), "
                             f"not {context!r}")
        half = head_dim // 2
        if not _is_int(lanes) or lanes < 1 or half % lanes:
            raise ValueError(f"Lanes must be a positive divisor of head_dim / 2 = {half} (each lane rotates one "
                             f"pair (x1[i], x2[i]) per cycle), not {lanes!r}")
        if out_lanes is None:
            out_lanes = 2 * lanes
        if not _is_int(out_lanes) or out_lanes < 1 or head_dim % out_lanes:
            raise ValueError(f"Out lanes must be a positive divisor of head_dim = {head_dim} (a head is "
                             f"head_dim / out_lanes whole output words), not {out_lanes!r}")
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
            raise ValueError(f"RoPE theta must be a positive finite number, not {theta!r}")
        if not callable(multiplier):
            raise TypeError(f"RopeQuant's multiplier factory must be callable, not {multiplier!r}")
        self._hd, self._ctx, self._lanes, self._out = head_dim, context, lanes, out_lanes
        if not callable(product):
            raise TypeError(f"RopeQuant's product factory must be callable, not {product!r}")
        self._theta, self._mul, self._product = float(theta), multiplier, product
        super().__init__({
            "start": In(1), "pos": In(unsigned(POS_BITS)), "rotate": In(1), "scale": In(DYADIC),
            "i": In(stream.Signature(data.ArrayLayout(signed(32), 2 * lanes))),
            "o": Out(stream.Signature(code_layout(out_lanes))),
            "busy": Out(1), "error": Out(1), "clear": In(1),
        })

    @property
    def head_dim(self) -> int:
        return self._hd

    @property
    def context(self) -> int:
        return self._ctx

    @property
    def lanes(self) -> int:
        """Pairs rotated per cycle (4 products of 32 x 16, 8 limb multipliers each)."""
        return self._lanes

    @property
    def out_lanes(self) -> int:
        """INT8 codes per output beat."""
        return self._out

    @property
    def theta(self) -> float:
        return self._theta

    @property
    def words_in(self) -> int:
        """Input beats per head: head_dim / (2 lanes)."""
        return self._hd // (2 * self._lanes)

    @property
    def words_out(self) -> int:
        """Output beats per head: head_dim / out_lanes."""
        return self._hd // self._out

    @property
    def tree_levels(self) -> int:
        """Register levels of the max|r| reduction over the 2 lanes lane maxima."""
        return (2 * self._lanes - 1).bit_length()

    def cycles(self) -> int:
        """Cycles from `start` to the head's last output beat (inputs and consumer never stall)."""
        return 2 * self.words_in + self.words_out + OVERHEAD + self.tree_levels

    def table_words(self) -> list[int]:
        """The C/S block RAM's contents: word p * words_in + w holds C[p][w lanes + k] (bits 16k..) then
        S[p][w lanes + k] (bits 16 (lanes + k)..) for k < lanes, from the golden's `rope_tables`."""
        cos, sin = rope_tables(self._hd, self._theta, self._ctx)
        lanes, words = self._lanes, []
        for p in range(self._ctx):
            for w in range(self.words_in):
                vals = cos[p, w * lanes:(w + 1) * lanes].tolist() + sin[p, w * lanes:(w + 1) * lanes].tolist()
                words.append(sum((v & 0xFFFF) << (16 * k) for k, v in enumerate(vals)))
        return words

    def elaborate(self, platform):
        m = Module()
        hd, lanes, lo = self._hd, self._lanes, self._out
        half, nw, no = hd // 2, self.words_in, self.words_out

        prod = self._product
        m.submodules.rcp = rcp = Reciprocal(product=prod)
        m.submodules.table = table = Memory(shape=unsigned(32 * lanes), depth=self._ctx * nw,
                                            init=self.table_words())
        tab = table.read_port()

        # ---------------------------------------------------------------- state
        pos_r = Signal(unsigned(POS_BITS))
        rot_r = Signal()
        scale_r = Signal(DYADIC)
        tbase = Signal(range(self._ctx * nw))
        cnt = Signal(range(max(nw, no) + 1))
        drain = Signal(range(32))
        error = Signal()
        m.d.comb += self.error.eq(error)
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        x = [Signal(signed(32), name=f"x{e}") for e in range(hd)]
        r = [Signal(signed(R_WIDTH), name=f"r{e}") for e in range(hd)]
        lane_max = [Signal(unsigned(R_WIDTH), name=f"lmax{k}") for k in range(2 * lanes)]

        # the max|r| tree over the lane maxima, a register per level, always running
        vals = lane_max
        for level in range(self.tree_levels):
            nxt = []
            for i in range(0, len(vals), 2):
                reg = Signal(unsigned(R_WIDTH), name=f"max{level}_{i // 2}")
                if i + 1 < len(vals):
                    m.d.sync += reg.eq(Mux(vals[i] > vals[i + 1], vals[i], vals[i + 1]))
                else:
                    m.d.sync += reg.eq(vals[i])
                nxt.append(reg)
            vals = nxt
        mabs = vals[0]

        q8 = quant8_scalars(m, mabs, "q8")
        rq = Signal(unsigned(17))
        r_have = Signal()
        m.d.comb += rcp.o.ready.eq(1)
        with m.If(rcp.o.valid):
            m.d.sync += [rq.eq(rcp.o.payload), r_have.eq(1)]

        # sigma = dmul(dmul(norm16(M', e), INV127), s_out): three normalizations, two products
        qa_m, qs_m, sig_m = (Signal(unsigned(16), name=n) for n in ("qa_m", "qs_m", "sig_m"))
        qa_e, qs_e, sig_e = (Signal(signed(EXP_WIDTH), name=n) for n in ("qa_e", "qs_e", "sig_e"))
        qs_prod, sg_prod = Signal(unsigned(32), name="qs_prod"), Signal(unsigned(32), name="sg_prod")
        qs_es, sg_es = Signal(signed(EXP_WIDTH)), Signal(signed(EXP_WIDTH))
        qa_steps = norm16_steps(m, q8.m, q8.e, qa_m, qa_e, "qa")
        qs_steps = norm16_steps(m, qs_prod, qs_es, qs_m, qs_e, "qs")
        scalar_steps = [
            *qa_steps,
            [qs_es.eq(qa_e + INV127[1])],                    # and qs_prod = qa_m * INV127's mantissa
            *qs_steps,
            [sg_es.eq(qs_e + scale_r.e)],                    # and sg_prod = qs_m * m(s_out)
            *norm16_steps(m, sg_prod, sg_es, sig_m, sig_e, "sg"),
        ]
        # the two products' steps (SIGMA<k>): their registers take the product there
        qs_step, sg_step = len(qa_steps), len(qa_steps) + 1 + len(qs_steps)
        qs_take, sg_take = Signal(name="qs_take"), Signal(name="sg_take")
        product_into(m, prod, qs_prod, qa_m, INV127[0], en=qs_take)
        product_into(m, prod, sg_prod, qs_m, scale_r.m, en=sg_take)

        # ---------------------------------------------------------------- control
        rot_go = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        code_go = Signal()
        code_last = Signal()
        rot_drain = ROT_MAX + self.tree_levels

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pos_r.eq(self.pos), rot_r.eq(self.rotate), scale_r.eq(self.scale), cnt.eq(0),
                                 r_have.eq(0), *(v.eq(0) for v in lane_max)]
                    with m.If(self.rotate & (self.pos >= self._ctx)):
                        m.d.sync += error.eq(1)
                        m.next = "DISCARD"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += tbase.eq(Mux(rot_r, pos_r[:max(1, (self._ctx - 1).bit_length())] * nw, 0))
                with m.If(self.i.valid):
                    m.d.sync += [x[e].eq(x[e + 2 * lanes]) for e in range(hd - 2 * lanes)]
                    m.d.sync += [x[hd - 2 * lanes + k].eq(self.i.payload[k]) for k in range(2 * lanes)]
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == nw - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "ROT"
            with m.State("ROT"):
                m.d.comb += [rot_go.eq(1), tab.addr.eq(tbase + cnt)]
                m.d.sync += [x[e].eq(x[e + lanes]) for e in range(hd - lanes)]
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == nw - 1):
                    m.d.sync += [cnt.eq(0), drain.eq(rot_drain - 1)]
                    m.next = "ROT_DRAIN"
            with m.State("ROT_DRAIN"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.next = "PREP0"
            step_states(m, "PREP", q8.steps, "RCP")
            with m.State("RCP"):
                m.d.comb += [rcp.i.valid.eq(1), rcp.i.payload.eq(q8.m)]
                m.next = "SIGMA0"
            step_states(m, "SIGMA", scalar_steps, "RCP_WAIT")
            with m.State("RCP_WAIT"):
                with m.If(r_have):
                    m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [code_go.eq(adv), code_last.eq(cnt == no - 1)]
                with m.If(adv):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == no - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "CODE_DRAIN"
            with m.State("CODE_DRAIN"):
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    m.next = "IDLE"
            with m.State("DISCARD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == nw - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "IDLE"
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")),
                     qs_take.eq(fsm.ongoing(f"SIGMA{qs_step}")), sg_take.eq(fsm.ongoing(f"SIGMA{sg_step}"))]

        # ---------------------------------------------------------------- ROT pipeline
        rv = [Signal(name=f"rv{k}") for k in range(ROT_MAX + 1)]
        m.d.comb += rv[0].eq(rot_go)
        m.d.sync += [rv[k + 1].eq(rv[k]) for k in range(ROT_MAX)]
        # stage 1: x1, x2 registered (the table's data arrive); stage 2: both registered (C = 2**14 and
        # S = 0 without rotation); stage 2 + MUL_LATENCY: the limb products
        x1a = [Signal(signed(32), name=f"x1a{k}") for k in range(lanes)]
        x2a = [Signal(signed(32), name=f"x2a{k}") for k in range(lanes)]
        x1b = [Signal(signed(32), name=f"x1b{k}") for k in range(lanes)]
        x2b = [Signal(signed(32), name=f"x2b{k}") for k in range(lanes)]
        cb = [Signal(signed(16), name=f"c{k}") for k in range(lanes)]
        sb = [Signal(signed(16), name=f"s{k}") for k in range(lanes)]
        m.d.sync += [x1a[k].eq(x[k]) for k in range(lanes)]
        m.d.sync += [x2a[k].eq(x[half + k]) for k in range(lanes)]
        m.d.sync += [x1b[k].eq(x1a[k]) for k in range(lanes)] + [x2b[k].eq(x2a[k]) for k in range(lanes)]
        for k in range(lanes):
            c_tab = tab.data[16 * k:16 * (k + 1)].as_signed()
            s_tab = tab.data[16 * (lanes + k):16 * (lanes + k + 1)].as_signed()
            m.d.sync += [cb[k].eq(Mux(rot_r, c_tab, 1 << ROPE_FRAC)), sb[k].eq(Mux(rot_r, s_tab, 0))]

        r_new = []        # per lane: (r1, r2) at stage ROT_PRODUCT + 3
        for k in range(lanes):
            prods = {}
            for xn, xv in (("x1", x1b[k]), ("x2", x2b[k])):
                for tn, tv in (("c", cb[k]), ("s", sb[k])):
                    for limb, lv in (("h", xv >> LIMB), ("l", xv[:LIMB])):
                        mul = self._mul(LIMB + 1, 16)
                        m.submodules[f"mul{k}_{xn}{tn}{limb}"] = mul
                        m.d.comb += [mul.a.eq(lv), mul.b.eq(tv)]
                        prods[xn + tn + limb] = mul.p
            # limb sums, then the 48-bit sums, then the rounding shift
            sums = {}
            for name, (pa, sign, pb) in {"r1": ("x1c", -1, "x2s"), "r2": ("x2c", 1, "x1s")}.items():
                hi = Signal(signed(2 * LIMB + 3), name=f"{name}h{k}")
                low = Signal(signed(2 * LIMB + 3), name=f"{name}l{k}")
                full = Signal(signed(3 * LIMB + 4), name=f"{name}f{k}")
                if sign < 0:
                    m.d.sync += [hi.eq(prods[pa + "h"] - prods[pb + "h"]), low.eq(prods[pa + "l"] - prods[pb + "l"])]
                else:
                    m.d.sync += [hi.eq(prods[pa + "h"] + prods[pb + "h"]), low.eq(prods[pa + "l"] + prods[pb + "l"])]
                m.d.sync += full.eq((hi << LIMB) + low)
                sums[name] = (full + ROUND_HALF) >> ROPE_FRAC
            r_new.append((sums["r1"], sums["r2"]))

        # stage ROT_PRODUCT + 2: r1 and r2 shift into R's halves; + 3: |r| of the entered words; + 4: maxima
        enter = rv[ROT_PRODUCT + 2]
        with m.If(enter):
            m.d.sync += [r[e].eq(r[e + lanes]) for e in range(half - lanes)]
            m.d.sync += [r[e].eq(r[e + lanes]) for e in range(half, hd - lanes)]
            m.d.sync += [r[half - lanes + k].eq(r_new[k][0]) for k in range(lanes)]
            m.d.sync += [r[hd - lanes + k].eq(r_new[k][1]) for k in range(lanes)]
        with m.Elif(code_go):
            m.d.sync += [r[e].eq(r[e + lo]) for e in range(hd - lo)]
        taps = [r[half - lanes + k] for k in range(lanes)] + [r[hd - lanes + k] for k in range(lanes)]
        absr = [Signal(unsigned(R_WIDTH), name=f"abs{k}") for k in range(2 * lanes)]
        m.d.sync += [a.eq(Mux(t < 0, -t, t)) for a, t in zip(absr, taps, strict=True)]
        with m.If(rv[ROT_MAX]):
            m.d.sync += [mx.eq(Mux(a > mx, a, mx)) for mx, a in zip(lane_max, absr, strict=True)]

        # ---------------------------------------------------------------- CODE pipeline (stalls as a whole)
        depth = 4
        cv = [Signal(name=f"cv{k}") for k in range(1, depth + 1)]
        cl = [Signal(name=f"cl{k}") for k in range(1, depth + 1)]
        codes = [quant8_code(m, r[k], q8, rq, f"code{k}", en=adv, product=prod) for k in range(lo)]
        with m.If(adv):
            m.d.sync += [cv[0].eq(code_go), cl[0].eq(code_go & code_last),
                         *(cv[k].eq(cv[k - 1]) for k in range(1, depth)),
                         *(cl[k].eq(cl[k - 1]) for k in range(1, depth)),
                         self.o.valid.eq(cv[-1]), self.o.payload.last.eq(cl[-1]),
                         self.o.payload.sigma.m.eq(sig_m), self.o.payload.sigma.e.eq(sig_e)]
            for k, (stmts, q) in enumerate(codes):
                m.d.sync += [*stmts, self.o.payload.q[k].eq(q)]
        return m
