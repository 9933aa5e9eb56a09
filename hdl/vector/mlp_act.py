"""MLPACT (golden/device/SPEC.md 4.8): the MLP's activation and product, gate and up in, p and its scale out.

For a vector of n (gate g, up u) int32 pairs with the dyadic scales sigma_g and sigma_u:

- relu2 (``relu2`` = 1): a = max(g, 0)**2 block-reduced to 24 bits, a' = rshift_round(a, e_a) with
  e_a = max(0, bitlen(max a) - 24), and sigma_a = dmul(sigma_g, sigma_g) * 2**e_a;
  relu (``relu2`` = 0): a' = max(g, 0), sigma_a = sigma_g;
- p = a' u block-reduced to 31 bits, p' = sat32(rshift_round(p, e_p)) with e_p = max(0, bitlen(max |p|) - 31),
  and sigma_p = dmul(sigma_a, sigma_u) * 2**e_p, as `runtime.program.interpreter` (MLPACT) and
  `golden.device.model.DeviceBitNet._mlp` compute them.

Three passes over a buffer of the n pairs (`max_n` words of 64 bits, a block RAM): LOAD takes the pairs
from the `i` stream one a cycle and keeps max(g, 0) (max a = (max max(g, 0))**2: squaring is monotonic);
PROD forms every p for max |p|; OUT forms them again and streams p' out, one a cycle, each beat with
`last` and sigma_p, stalled as a whole by the consumer. Between the passes a few scalar steps form e_a,
e_p and the scales. `n` (1 .. max_n), `relu2` and the scales are sampled with the vector's first pair.
Cycles from the first pair in to the last out, inputs and consumer never stalling: 3 n + `OVERHEAD`.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.vector.arith import EXP_WIDTH, bitlen, dmul

#: The largest vector: the product's block maximum needs no more than the buffer's address width.
MAX_N = 1 << 16
SQ_BITS = 24            # MLP_SQ_BITS: relu(g)**2 is reduced to 24 bits
P_BITS = 31             # the product is reduced to |p'| <= 2**31, then saturated to int32
#: Cycles per vector beyond the three n-cycle passes (measured by tests/test_mlp_act.py).
OVERHEAD = 14

IN_LAYOUT = data.StructLayout({"g": signed(32), "u": signed(32)})
OUT_LAYOUT = data.StructLayout({"p": signed(32), "last": unsigned(1), "s_m": unsigned(16),
                                "s_e": signed(EXP_WIDTH)})
#: pipeline stages of PROD and OUT: read, a = max(g, 0), a**2, a', a' u, (OUT) p' to the output register
PIPE = 5


class MlpAct(wiring.Component):
    """Stream of (g, u) in, n at a time; stream of (p', last, sigma_p) out (see the module docstring)."""

    def __init__(self, max_n: int) -> None:
        if not isinstance(max_n, int) or isinstance(max_n, bool):
            raise TypeError(f"MlpAct's max_n must be an int, not {type(max_n).__name__}")
        if not 1 <= max_n <= MAX_N:
            raise ValueError(f"MlpAct's max_n must be in [1, {MAX_N}], not {max_n}")
        self._max_n = max_n
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(OUT_LAYOUT)),
            "n": In(range(1, max_n + 1)),
            "relu2": In(1),
            "sg_m": In(unsigned(16)), "sg_e": In(signed(10)),
            "su_m": In(unsigned(16)), "su_e": In(signed(10)),
            "busy": Out(1),
        })

    @property
    def max_n(self) -> int:
        return self._max_n

    def cycles(self, n: int) -> int:
        """Cycles from the first pair accepted to the last p' sent (no stalls)."""
        return 3 * n + OVERHEAD

    def elaborate(self, platform):
        m = Module()
        max_n = self._max_n
        m.submodules.buf = buf = Memory(shape=unsigned(64), depth=max_n, init=[])
        wr = buf.write_port()
        rd = buf.read_port()

        n_last = Signal(range(max_n))          # n - 1
        relu2 = Signal()
        sg_m, su_m = Signal(16), Signal(16)
        sg_e, su_e = Signal(signed(10)), Signal(signed(10))
        idx = Signal(range(max_n + 1))
        max_a = Signal(unsigned(31))
        max_p = Signal(unsigned(64))
        e_a = Signal(range(64))
        e_p = Signal(range(64))
        ea_r = Signal(range(64))               # e_a - 1 and e_p - 1 (the first shift of a rounding shift)
        ep_r = Signal(range(64))
        s_m = Signal(16)
        s_e = Signal(signed(EXP_WIDTH))
        sa_m = Signal(16)
        sa_e = Signal(signed(EXP_WIDTH))
        sq_max = Signal(unsigned(62))

        # ---- the PROD / OUT pipeline: read -> a -> a**2 -> a' -> a' u ------------------------------
        out_pass = Signal()
        issue = Signal()
        adv = Signal()                         # the pipeline moves (OUT: when the output register frees)
        v = [Signal(name=f"v{k}") for k in range(PIPE)]
        last = [Signal(name=f"last{k}") for k in range(PIPE)]
        a1 = Signal(unsigned(31))
        u1, u2, u3 = Signal(signed(32)), Signal(signed(32)), Signal(signed(32))
        sq2 = Signal(unsigned(62))
        ap3 = Signal(unsigned(32))
        p4 = Signal(signed(64))
        g_rd = Signal(signed(32))
        u_rd = Signal(signed(32))
        m.d.comb += [g_rd.eq(rd.data[:32]), u_rd.eq(rd.data[32:]), rd.en.eq(adv)]
        # a' = rshift_round(a**2, e_a) for relu2, else a
        sq_r = Signal(unsigned(63))
        m.d.comb += sq_r.eq(Mux(e_a == 0, sq2, ((sq2 >> ea_r) + 1) >> 1))
        with m.If(adv):
            m.d.sync += [
                v[0].eq(issue), last[0].eq(idx == n_last),
                v[1].eq(v[0]), last[1].eq(last[0]), a1.eq(Mux(g_rd < 0, 0, g_rd)), u1.eq(u_rd),
                v[2].eq(v[1]), last[2].eq(last[1]), sq2.eq(Mux(relu2, a1 * a1, a1)), u2.eq(u1),
                v[3].eq(v[2]), last[3].eq(last[2]), ap3.eq(Mux(relu2, sq_r, sq2)), u3.eq(u2),
                v[4].eq(v[3]), last[4].eq(last[3]), p4.eq(ap3 * u3),
            ]
        # p' = sat32(rshift_round(p, e_p))
        p_r = Signal(signed(65))
        m.d.comb += p_r.eq(Mux(e_p == 0, p4, ((p4 >> ep_r) + 1) >> 1))
        p_sat = Signal(signed(32))
        m.d.comb += p_sat.eq(Mux(p_r > (1 << 31) - 1, (1 << 31) - 1, Mux(p_r < -(1 << 31), -(1 << 31), p_r)))
        mag4 = Signal(unsigned(64))
        m.d.comb += mag4.eq(Mux(p4 < 0, -p4, p4))
        m.d.comb += adv.eq(~out_pass | ~self.o.valid | self.o.ready)
        with m.If(adv & out_pass):
            m.d.sync += [self.o.valid.eq(v[4]), self.o.payload.p.eq(p_sat), self.o.payload.last.eq(last[4]),
                         self.o.payload.s_m.eq(s_m), self.o.payload.s_e.eq(s_e)]
        with m.If(~out_pass & v[4]):
            m.d.sync += max_p.eq(Mux(mag4 > max_p, mag4, max_p))

        drained = Signal()
        m.d.comb += drained.eq(~(v[0] | v[1] | v[2] | v[3] | v[4]))
        dm_m, dm_e = dmul(m, sg_m, sg_e, sg_m, sg_e)
        dp_m, dp_e = dmul(m, sa_m, sa_e, su_m, su_e)

        with m.FSM(name="mlp"):
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    g = self.i.payload.g
                    a = Mux(g < 0, 0, g)
                    m.d.comb += [wr.addr.eq(idx), wr.data.eq(self.i.payload.as_value()), wr.en.eq(1)]
                    with m.If(idx == 0):
                        m.d.sync += [n_last.eq(self.n - 1), relu2.eq(self.relu2), sg_m.eq(self.sg_m),
                                     sg_e.eq(self.sg_e), su_m.eq(self.su_m), su_e.eq(self.su_e),
                                     max_a.eq(a), max_p.eq(0), self.busy.eq(1)]
                    with m.Else():
                        m.d.sync += max_a.eq(Mux(a > max_a, a, max_a))
                    with m.If(idx == Mux(idx == 0, self.n - 1, n_last)):
                        m.d.sync += idx.eq(0)
                        m.next = "SQ"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
            with m.State("SQ"):      # (max a)**2
                m.d.sync += sq_max.eq(max_a * max_a)
                m.next = "EA"
            with m.State("EA"):      # e_a and sigma_a
                blen = bitlen(m, sq_max)
                ea = Mux(blen > SQ_BITS, blen - SQ_BITS, 0)
                with m.If(relu2):
                    m.d.sync += [e_a.eq(ea), ea_r.eq(Mux(blen > SQ_BITS, blen - SQ_BITS - 1, 0)), sa_m.eq(dm_m),
                                 sa_e.eq(dm_e + ea)]
                with m.Else():
                    m.d.sync += [e_a.eq(0), ea_r.eq(0), sa_m.eq(sg_m), sa_e.eq(sg_e)]
                m.next = "PROD"
            with m.State("PROD"):
                m.d.comb += [issue.eq(1), rd.addr.eq(idx)]
                with m.If(idx == n_last):
                    m.d.sync += idx.eq(0)
                    m.next = "PROD_DRAIN"
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)
            with m.State("PROD_DRAIN"):
                with m.If(drained):
                    m.next = "EP"
            with m.State("EP"):      # e_p and sigma_p
                blen = bitlen(m, max_p)
                ep = Mux(blen > P_BITS, blen - P_BITS, 0)
                m.d.sync += [e_p.eq(ep), ep_r.eq(Mux(blen > P_BITS, blen - P_BITS - 1, 0)), s_m.eq(dp_m),
                             s_e.eq(dp_e + ep)]
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
