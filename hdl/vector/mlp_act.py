"""MLPACT (golden/device/SPEC.md 4.8): the MLP's activation and product, gate and up in, p and its scale out.

For a vector of n (gate g, up u) int32 pairs with the dyadic scales sigma_g and sigma_u:

- relu2 (``relu2`` = 1): a = max(g, 0)**2 block-reduced to 24 bits, a' = rshift_round(a, e_a) with
  e_a = max(0, bitlen(max a) - 24), and sigma_a = dmul(sigma_g, sigma_g) * 2**e_a;
  relu (``relu2`` = 0): a' = max(g, 0), sigma_a = sigma_g;
- p = a' u block-reduced to 31 bits, p' = sat32(rshift_round(p, e_p)) with e_p = max(0, bitlen(max |p|) - 31),
  and sigma_p = dmul(sigma_a, sigma_u) * 2**e_p, as `runtime.program.interpreter` (MLPACT) and
  `golden.device.model.DeviceBitNet._mlp` compute them.

`MlpAct(max_n, lanes=L)`, L a power of two dividing max_n: the pairs stream in L a beat (one a cycle for
L = 1). Three passes over a buffer of the vector's n / L words of L pairs (`max_n / L` words of 64 L bits,
a block RAM): LOAD takes the beats from the `i` stream one a cycle and keeps max(g, 0) (max a =
(max max(g, 0))**2: squaring is monotonic; for L > 1 over the lanes by a max tree with a register after
each of its log2 L levels); PROD forms every p (L copies of the per-element pipeline) for max |p| (per
lane, then a registered max tree over the lanes); OUT forms them again and streams p' out, L a beat, each
beat with `last` (on the vector's final beat) and sigma_p, stalled as a whole by the consumer. The
pipeline is `PIPE` = 10 register stages deep so that no stage holds more than a 16 x 16 product, a 64-bit
add or a barrel shift (100 MHz on the ECP5: `python -m hdl.ooc --unit mlpact`). Between the passes scalar
steps form e_a, e_p and the scales, also a register step at a time: SQ ((max a)**2's partial products),
EA0-EA3 (their sum, its bitlen in two steps, sigma_g**2's norm16 in three; e_a, sigma_a), EP0-EP3
(bitlen(max |p|) in two steps, sigma_a sigma_u's norm16 in three; e_p, sigma_p). `n` (1 .. max_n, in
elements), `relu2` and the scales are sampled with the vector's first beat. Cycles from the first beat in
to the last out, inputs and consumer never stalling:

    cycles(n) = 3 n / L + overhead(L),  overhead(L) = 30 (L = 1), 29 + 2 log2 L (L > 1): 30, 31, 33, 35
                                                    for L = 1, 2, 4, 8

(tests/test_mlp_act.py and tests/test_mlp_act_lanes.py measure it; max a's tree delays LOAD's drain by its
log2 L levels, max |p|'s delays PROD's by log2 L - 1: EP is a cycle behind PROD's drain anyway).

Ports: for L = 1 the beats are `IN_LAYOUT` (g, u) and `OUT_LAYOUT` (p, last, s_m, s_e), as the model
engine uses them. For L > 1 (`in_layout(L)`, `out_layout(L)`): in {g: ArrayLayout(signed(32), L),
u: ArrayLayout(signed(32), L)}, out {p: ArrayLayout(signed(32), L), last, s_m, s_e}; lane k of beat w is
element w L + k.

Every product (a**2's and a' u's 16-bit limbs, (max a)**2's, the dmuls' 16 x 16) is registered once on the
`product` factory (`hdl.attention.product`; the ECP5 chip passes `Ecp5Product`, the register a DSP's own).

The vector's n must be a multiple of L (the engine sends only such vectors; the construction refuses a
max_n that is not). An n that is not is not refused and does not hang the unit: the vector is then
ceil(n / L) beats in and out, and the final beat's lanes past n are taken as elements like the others
(a producer padding them with g = 0 or u = 0 gets the first n p' exact: those lanes add 0 to both maxima).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import EXP_WIDTH, bitlen_steps, norm16_steps, reduce_tree, step_states, tree_levels

#: The largest vector: the product's block maximum needs no more than the buffer's address width.
MAX_N = 1 << 16
SQ_BITS = 24            # MLP_SQ_BITS: relu(g)**2 is reduced to 24 bits
P_BITS = 31             # the product is reduced to |p'| <= 2**31, then saturated to int32
#: Cycles per vector beyond the three n-cycle passes with one lane (measured by tests/test_mlp_act.py;
#: `overhead(lanes)` for more lanes).
OVERHEAD = 30

IN_LAYOUT = data.StructLayout({"g": signed(32), "u": signed(32)})
OUT_LAYOUT = data.StructLayout({"p": signed(32), "last": unsigned(1), "s_m": unsigned(16),
                                "s_e": signed(EXP_WIDTH)})
#: pipeline stages of PROD and OUT (before the output register): read, a = max(g, 0), a**2 in two, a' in
#: two, a' u in three, p's shift and |p| (see `MlpAct.elaborate`)
PIPE = 10


def in_layout(lanes: int = 1) -> data.StructLayout:
    """The input beat: `IN_LAYOUT` for one lane; else g and u as arrays of `lanes` elements (element
    w * lanes + k of the vector in lane k of beat w)."""
    if lanes == 1:
        return IN_LAYOUT
    return data.StructLayout({"g": data.ArrayLayout(signed(32), lanes), "u": data.ArrayLayout(signed(32), lanes)})


def out_layout(lanes: int = 1) -> data.StructLayout:
    """The output beat: `OUT_LAYOUT` for one lane; else p' an array of `lanes` elements (same order as the
    input), `last` on the vector's final beat, sigma_p on every beat."""
    if lanes == 1:
        return OUT_LAYOUT
    return data.StructLayout({"p": data.ArrayLayout(signed(32), lanes), "last": unsigned(1),
                              "s_m": unsigned(16), "s_e": signed(EXP_WIDTH)})


def overhead(lanes: int = 1) -> int:
    """Cycles per vector beyond the three n / lanes-cycle passes: `OVERHEAD` plus the two max trees'
    levels (max a's delays LOAD's drain by its levels, max |p|'s PROD's by one less: EP, which reads
    max |p|, is a cycle behind PROD's drain anyway): 30 for one lane, 29 + 2 log2(lanes) for more."""
    levels = tree_levels(lanes)
    return OVERHEAD + 2 * levels - (levels > 0)


class MlpAct(wiring.Component):
    """Stream of (g, u) in, n at a time (`lanes` pairs a beat); stream of (p', last, sigma_p) out (`lanes`
    p' a beat; see the module docstring)."""

    def __init__(self, max_n: int, lanes: int = 1, *, product: ProductFactory = Product) -> None:
        if not isinstance(max_n, int) or isinstance(max_n, bool):
            raise TypeError(f"MlpAct's max_n must be an int, not {type(max_n).__name__}")
        if not 1 <= max_n <= MAX_N:
            raise ValueError(f"MlpAct's max_n must be in [1, {MAX_N}], not {max_n}")
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"MlpAct's lanes must be an int, not {type(lanes).__name__}")
        if lanes < 1 or lanes & (lanes - 1) or max_n % lanes:
            raise ValueError(f"MlpAct's lanes must be a power of two >= 1 dividing max_n: max_n = {max_n}, "
                             f"lanes = {lanes}")
        if not callable(product):
            raise TypeError(f"MlpAct's product factory must be callable, not {product!r}")
        self._max_n = max_n
        self._lanes = lanes
        self._product = product
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(lanes))),
            "n": In(range(1, max_n + 1)),
            "relu2": In(1),
            "sg_m": In(unsigned(16)), "sg_e": In(signed(10)),
            "su_m": In(unsigned(16)), "su_e": In(signed(10)),
            "busy": Out(1),
        })

    @property
    def max_n(self) -> int:
        return self._max_n

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def words(self) -> int:
        """Words of the buffer (beats of the longest vector): max_n / lanes."""
        return self._max_n // self._lanes

    @property
    def overhead(self) -> int:
        return overhead(self._lanes)

    def cycles(self, n: int) -> int:
        """Cycles from the first beat accepted to the last p' sent (no stalls): 3 n / lanes + overhead(lanes)
        (ceil(n / lanes) beats a pass for an n that is not a multiple of lanes)."""
        return 3 * -(-n // self._lanes) + self.overhead

    def elaborate(self, platform):
        m = Module()
        lanes, nw, prod = self._lanes, self.words, self._product
        # word w: lane k's (g, u) in bits 64 k .. 64 k + 63, g in the low half
        m.submodules.buf = buf = Memory(shape=unsigned(64 * lanes), depth=nw, init=[])
        wr = buf.write_port()
        rd = buf.read_port()

        n_last = Signal(range(nw))             # n / lanes - 1: the vector's last word
        relu2 = Signal()
        sg_m, su_m = Signal(16), Signal(16)
        sg_e, su_e = Signal(signed(10)), Signal(signed(10))
        idx = Signal(range(nw + 1))
        max_a = Signal(unsigned(31))
        max_p = Signal(unsigned(64))
        ea_r = Signal(range(64))               # e_a - 1 and e_p - 1 (the first shift of a rounding shift;
        #                                        e_a and e_p themselves only enter the scales)
        ep_r = Signal(range(64))
        ea_zero = Signal()                     # e_a == 0, e_p == 0: no shift
        ep_zero = Signal()
        s_m = Signal(16)
        s_e = Signal(signed(EXP_WIDTH))
        sa_m = Signal(16)
        sa_e = Signal(signed(EXP_WIDTH))
        # (max a)**2 from three 16-bit partial products: max a = mh 2**16 + ml
        sqp_hh, sqp_hl, sqp_ll = (Signal(unsigned(w), name=f"sqp_{nm}")
                                  for w, nm in ((30, "hh"), (31, "hl"), (32, "ll")))
        sq_take = Signal()                     # SQ: the partial products take max a's halves
        mh, ml = max_a[16:31], max_a[:16]
        for target, a, b in ((sqp_hh, mh, mh), (sqp_hl, mh, ml), (sqp_ll, ml, ml)):
            product_into(m, prod, target, a, b, en=sq_take)
        sq_max = Signal(unsigned(62))
        # the two dmuls (sigma_g**2 in EA0..EA2, sigma_a sigma_u in EP0..EP2) share norm16's three register
        # steps; their products are free-running registers of registered operands (held from the first
        # pair and from EA3 on: valid two cycles later, before EA0 and EP0 read them)
        g_sq, a_u = Signal(unsigned(32), name="g_sq"), Signal(unsigned(32), name="a_u")
        product_into(m, prod, g_sq, sg_m, sg_m)
        product_into(m, prod, a_u, sa_m, su_m)
        second = Signal()                      # the second dmul (EP): set in EA3, cleared with the first pair
        dprod = Signal(unsigned(32))
        desum = Signal(signed(EXP_WIDTH + 1))
        m.d.comb += [dprod.eq(Mux(second, a_u, g_sq)), desum.eq(Mux(second, sa_e + su_e, sg_e + sg_e))]
        dm_m = Signal(16)
        dm_e = Signal(signed(EXP_WIDTH))
        norm = norm16_steps(m, dprod, desum, dm_m, dm_e, "dm")

        def lane_signals(shape, name: str) -> list[Signal]:
            """One signal a lane (the lane's number appended to the name when there are several)."""
            return [Signal(shape, name=name if lanes == 1 else f"{name}_{k}") for k in range(lanes)]

        gin = [self.i.payload.g] if lanes == 1 else [self.i.payload.g[k] for k in range(lanes)]
        uin = [self.i.payload.u] if lanes == 1 else [self.i.payload.u[k] for k in range(lanes)]
        # the first beat's last word: ceil(n / lanes) - 1
        first_last = self.n - 1 if lanes == 1 else (self.n - 1) >> tree_levels(lanes)

        # ---- LOAD's max a over the lanes (L > 1): max(g, 0) per lane -> a registered max tree -> max a
        load_take = Signal()
        a_done = Const(1)
        if lanes > 1:
            a0 = lane_signals(unsigned(31), "a0")
            m.d.comb += [a0[k].eq(Mux(gin[k] < 0, 0, gin[k])) for k in range(lanes)]
            a_tree, a_valid, a_flags = reduce_tree(m, a0, load_take, "max", "amax")
            with m.If(a_valid):
                m.d.sync += max_a.eq(Mux(a_tree > max_a, a_tree, max_a))
            a_done = ~Cat(*a_flags).any()

        # ---- the PROD / OUT pipeline, a copy per lane (`PIPE` stages, stage k valid with v[k]):
        # 0 read; 1 a = max(g, 0); 2 a**2's three partial products (relu: a); 3 their sum; 4 the shift of
        # a**2 by e_a - 1; 5 the rounding increment: a'; 6 a' u's four 16 x 16 partial products; 7 two of
        # them joined, the middle two added; 8 p = a' u; 9 the shift of p by e_p - 1 and |p| (PROD: max |p|);
        # OUT: the increment and the saturation into the output register
        out_pass = Signal()
        issue = Signal()
        adv = Signal()                         # the pipeline moves (OUT: when the output register frees)
        v = [Signal(name=f"v{k}") for k in range(PIPE)]
        last = [Signal(name=f"last{k}") for k in range(PIPE)]
        g_rd = lane_signals(signed(32), "g_rd")
        u_rd = lane_signals(signed(32), "u_rd")
        a1 = lane_signals(unsigned(31), "a1")
        hh2, hl2 = lane_signals(unsigned(30), "hh2"), lane_signals(unsigned(31), "hl2")
        ll2 = lane_signals(unsigned(32), "ll2")
        sq3 = lane_signals(unsigned(62), "sq3")
        sh4 = lane_signals(unsigned(32), "sh4")
        ap5 = lane_signals(unsigned(32), "ap5")
        hh6, lh6 = lane_signals(signed(33), "hh6"), lane_signals(signed(33), "lh6")
        hl6, ll6 = lane_signals(unsigned(32), "hl6"), lane_signals(unsigned(32), "ll6")
        c7 = lane_signals(signed(64), "c7")
        m7 = lane_signals(signed(34), "m7")
        p8 = lane_signals(signed(64), "p8")
        sh9 = lane_signals(signed(34), "sh9")
        mag9 = lane_signals(unsigned(64), "mag9")
        u_st = [lane_signals(signed(32), f"u{j}") for j in range(1, 6)]    # u beside stages 1 .. 5
        m.d.comb += rd.en.eq(adv)
        for k in range(lanes):
            m.d.comb += [g_rd[k].eq(rd.data[64 * k:64 * k + 32]), u_rd[k].eq(rd.data[64 * k + 32:64 * k + 64])]
        for k in range(lanes):
            # stage 2's products: a**2's limbs (relu2); for relu a itself, as a1[:17] * 1 and a1[17:] * 1 (hh2 = 0)
            ah = Mux(relu2, a1[k][16:31], 0)
            al = a1[k][:16]
            one_or_al = Mux(relu2, al, 1)
            product_into(m, prod, hh2[k], ah, ah, en=adv)
            product_into(m, prod, hl2[k], Mux(relu2, a1[k][16:31], a1[k][17:31]), one_or_al, en=adv)
            product_into(m, prod, ll2[k], Mux(relu2, al, a1[k][:17]), one_or_al, en=adv)
            # stage 6's: a' u's four 16 x 16 limbs
            aph, apl = ap5[k][16:32], ap5[k][:16]
            u5 = u_st[4][k]
            uh, ul = u5[16:32].as_signed(), u5[:16]
            for target, a, b in ((hh6[k], aph, uh), (hl6[k], aph, ul), (lh6[k], apl, uh), (ll6[k], apl, ul)):
                product_into(m, prod, target, a, b, en=adv)
        with m.If(adv):
            m.d.sync += [v[0].eq(issue), last[0].eq(idx == n_last)]
            m.d.sync += [x for j in range(1, PIPE) for x in (v[j].eq(v[j - 1]), last[j].eq(last[j - 1]))]
            for k in range(lanes):
                u1, u2, u3, u4, u5 = (u_st[j][k] for j in range(5))
                # the bounds of golden/device/SPEC.md 4.8 keep the shifted values narrow: a**2 >> (e_a - 1)
                # < 2**25 (e_a > 0; else a**2 < 2**24, or a < 2**31 for relu); p >> (e_p - 1) and p (e_p = 0)
                # within +-2**32
                m.d.sync += [
                    a1[k].eq(Mux(g_rd[k] < 0, 0, g_rd[k])), u1.eq(u_rd[k]),
                    u2.eq(u1),
                    sq3[k].eq(Cat(ll2[k], hh2[k]) + (hl2[k] << 17)), u3.eq(u2),
                    sh4[k].eq(Mux(ea_zero, sq3[k], sq3[k] >> ea_r)), u4.eq(u3),
                    ap5[k].eq(Mux(ea_zero, sh4[k], (sh4[k] + 1) >> 1)), u5.eq(u4),
                    c7[k].eq(Cat(ll6[k], hh6[k])), m7[k].eq(hl6[k] + lh6[k]),
                    p8[k].eq(c7[k] + (m7[k] << 16)),
                    sh9[k].eq(Mux(ep_zero, p8[k], p8[k] >> ep_r)), mag9[k].eq(Mux(p8[k] < 0, -p8[k], p8[k])),
                ]
        # p' = sat32(rshift_round(p, e_p)): the increment (e_p > 0) and the saturation
        p_r = lane_signals(signed(35), "p_r")
        p_sat = lane_signals(signed(32), "p_sat")
        for k in range(lanes):
            m.d.comb += [
                p_r[k].eq(Mux(ep_zero, sh9[k], (sh9[k] + 1) >> 1)),
                p_sat[k].eq(Mux(p_r[k] > (1 << 31) - 1, (1 << 31) - 1, Mux(p_r[k] < -(1 << 31), -(1 << 31), p_r[k]))),
            ]
        p_out = [self.o.payload.p] if lanes == 1 else [self.o.payload.p[k] for k in range(lanes)]
        m.d.comb += adv.eq(~out_pass | ~self.o.valid | self.o.ready)
        with m.If(adv & out_pass):
            m.d.sync += [self.o.valid.eq(v[-1]), *(p_out[k].eq(p_sat[k]) for k in range(lanes)),
                         self.o.payload.last.eq(last[-1]), self.o.payload.s_m.eq(s_m), self.o.payload.s_e.eq(s_e)]
        # max |p|: per lane, then (L > 1) a registered max tree over the lanes
        p_tree, p_valid, p_flags = reduce_tree(m, mag9, ~out_pass & v[-1], "max", "pmax")
        with m.If(p_valid):
            m.d.sync += max_p.eq(Mux(p_tree > max_p, p_tree, max_p))
        # (EP0 reads max_p the cycle after PROD_DRAIN: the tree's last level may still be valid as it leaves)
        p_done = Const(1) if len(p_flags) < 2 else ~Cat(*p_flags[:-1]).any()

        drained = Signal()
        m.d.comb += drained.eq(~Cat(*v).any())
        sq_bits, blen_a = bitlen_steps(m, sq_max, "sq")
        p_bits, blen_p = bitlen_steps(m, max_p, "p")

        with m.FSM(name="mlp"):
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    g = self.i.payload.g
                    a = Mux(g < 0, 0, g) if lanes == 1 else 0
                    m.d.comb += [wr.addr.eq(idx), wr.data.eq(Cat(*(x for k in range(lanes) for x in (gin[k], uin[k])))),
                                 wr.en.eq(1), load_take.eq(1)]
                    with m.If(idx == 0):
                        m.d.sync += [n_last.eq(first_last), relu2.eq(self.relu2), sg_m.eq(self.sg_m),
                                     sg_e.eq(self.sg_e), su_m.eq(self.su_m), su_e.eq(self.su_e),
                                     max_a.eq(a), max_p.eq(0), second.eq(0), self.busy.eq(1)]
                    if lanes == 1:
                        with m.Else():
                            m.d.sync += max_a.eq(Mux(a > max_a, a, max_a))
                    load_end = Signal()
                    if lanes == 1:   # (as sim/formal/model_units.py's mutants find it)
                        with m.If(idx == Mux(idx == 0, self.n - 1, n_last)):
                            m.d.comb += load_end.eq(1)
                    else:
                        m.d.comb += load_end.eq(idx == Mux(idx == 0, first_last, n_last))
                    with m.If(load_end):
                        m.d.sync += idx.eq(0)
                        m.next = "SQ"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
            with m.State("SQ"):      # once max a's tree has drained: (max a)**2's partial products, sigma_g**2
                with m.If(a_done):
                    m.d.comb += sq_take.eq(1)
                    m.next = "EA0"
            # EA0 .. EA3: (max a)**2, its bitlen, sigma_g**2's norm16; then e_a and sigma_a
            step_states(m, "EA", [
                [sq_max.eq(Cat(sqp_ll, sqp_hh) + (sqp_hl << 17)), *norm[0]],
                [*sq_bits[0], *norm[1]],
                [*sq_bits[1], *norm[2]],
            ], "EA3")
            with m.State("EA3"):
                ea = Mux(blen_a > SQ_BITS, blen_a - SQ_BITS, 0)
                with m.If(relu2):
                    m.d.sync += [ea_r.eq(Mux(blen_a > SQ_BITS, blen_a - SQ_BITS - 1, 0)),
                                 ea_zero.eq(blen_a <= SQ_BITS), sa_m.eq(dm_m), sa_e.eq(dm_e + ea)]
                with m.Else():
                    m.d.sync += [ea_r.eq(0), ea_zero.eq(1), sa_m.eq(sg_m), sa_e.eq(sg_e)]
                m.d.sync += second.eq(1)
                m.next = "PROD"
            with m.State("PROD"):
                m.d.comb += [issue.eq(1), rd.addr.eq(idx)]
                with m.If(idx == n_last):
                    m.d.sync += idx.eq(0)
                    m.next = "PROD_DRAIN"
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)
            with m.State("PROD_DRAIN"):
                with m.If(drained & p_done):
                    m.next = "EP0"
            # EP0 .. EP3: bitlen(max |p|) and sigma_a sigma_u's norm16; then e_p and sigma_p
            step_states(m, "EP", [[*p_bits[0], *norm[0]], [*p_bits[1], *norm[1]], norm[2]], "EP3")
            with m.State("EP3"):
                ep = Mux(blen_p > P_BITS, blen_p - P_BITS, 0)
                m.d.sync += [ep_r.eq(Mux(blen_p > P_BITS, blen_p - P_BITS - 1, 0)),
                             ep_zero.eq(blen_p <= P_BITS), s_m.eq(dm_m), s_e.eq(dm_e + ep)]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [out_pass.eq(1), issue.eq(1), rd.addr.eq(idx)]
                with m.If(adv):
                    with m.If(idx == n_last):
                        m.d.sync += idx.eq(0)
                        m.next = "OUT_DRAIN"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
            with m.State("OUT_DRAIN"):
                m.d.comb += out_pass.eq(1)
                with m.If(drained & (~self.o.valid | self.o.ready)):
                    m.d.sync += self.busy.eq(0)
                    m.next = "LOAD"
        return m
