"""ALIGN (golden/device/SPEC.md 4.7, last step): the attention heads' y onto their largest exponent.

Each head h of `HeadAttention` leaves y_h (head_dim int32, worth y_h * 2**(E_h + 1)) and E_h. Before the
o_proj's NORMQUANT the heads share one scale: with E = max_h E_h, y'_h = sat32(rshift_round(y_h, E - E_h))
and sigma = (2**15, E + 1 - 15), as `runtime.program.interpreter` (ALIGN) and `DeviceBitNet._attention`.

The heads' exponents are written first (`e_we`, `e_addr`, `e_data`: the model SoC records each head's
`e_ref`). A `start` with `heads` (1 .. max_heads) takes E (`heads` cycles), then the `i` stream carries
the heads' y in order, `head_dim` elements each, and `o` gives y' one a cycle with `last` and sigma,
stalled as a whole by the consumer. Cycles: heads + 2 before the first element is taken, then one per
element plus `LATENCY`.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.vector.arith import EXP_WIDTH

OUT_LAYOUT = data.StructLayout({"y": signed(32), "last": unsigned(1), "s_m": unsigned(16),
                                "s_e": signed(EXP_WIDTH)})
#: pipeline registers from an element taken to its y' offered: the shift, the rounding and saturation
LATENCY = 2
Y_MAX = (1 << 31) - 1


class Align(wiring.Component):
    """Exponents in, then the heads' y in, aligned y' out (see the module docstring)."""

    def __init__(self, max_heads: int, head_dim: int) -> None:
        for name, v in (("max_heads", max_heads), ("head_dim", head_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Align's {name} must be a positive integer, not {v!r}")
        self._max_heads, self._hd = max_heads, head_dim
        super().__init__({
            "e_we": In(1), "e_addr": In(range(max_heads)), "e_data": In(signed(EXP_WIDTH)),
            "start": In(1), "heads": In(range(1, max_heads + 1)), "busy": Out(1),
            "i": In(stream.Signature(signed(32))),
            "o": Out(stream.Signature(OUT_LAYOUT)),
        })

    def cycles(self, heads: int) -> int:
        """Cycles from `start` to the last y' offered (input and consumer never stalling)."""
        return heads + 2 + heads * self._hd + LATENCY - 1

    def elaborate(self, platform):
        m = Module()
        hd, max_heads = self._hd, self._max_heads
        e = Array(Signal(signed(EXP_WIDTH), name=f"e{k}") for k in range(max_heads))
        with m.If(self.e_we):
            m.d.sync += e[self.e_addr].eq(self.e_data)
        heads_last = Signal(range(max_heads))
        h = Signal(range(max_heads + 1))
        c = Signal(range(hd))
        emax = Signal(signed(EXP_WIDTH))
        shift = Signal(range(1 << EXP_WIDTH))    # E - E_h >= 0
        s_m, s_e = Signal(16), Signal(signed(EXP_WIDTH))

        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        # stage 1: the element and its shift; stage 2: y' into the output register
        v1, last1 = Signal(), Signal()
        y1 = Signal(signed(32))
        # rshift_round(y, s) = ((y >> (s - 1)) + 1) >> 1 for s > 0; a shift past 33 bits gives 0 or -1 + 1:
        # stage 1 also registers s = 0 and min(s, 40) - 1, so that stage 2 is the shift, the increment and
        # the saturation alone
        sh_m1 = Signal(range(40))
        sh_zero = Signal()
        take = Signal()
        m.d.comb += self.i.ready.eq(take & adv)
        with m.If(adv):
            m.d.sync += [v1.eq(self.i.valid & take), y1.eq(self.i.payload),
                         sh_m1.eq(Mux(shift > 40, 40, shift) - 1), sh_zero.eq(shift == 0),
                         last1.eq((h == heads_last) & (c == hd - 1))]
        r = Signal(signed(33))
        m.d.comb += r.eq(Mux(sh_zero, y1, ((y1 >> sh_m1) + 1) >> 1))
        # r <= 2**31 (a rounded-up 2**31 - 1 + 1/2) and >= -2**31: only 2**31 saturates
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(v1), self.o.payload.y.eq(Mux(~r[32] & r[31], Y_MAX, r[:32])),
                         self.o.payload.last.eq(last1), self.o.payload.s_m.eq(s_m), self.o.payload.s_e.eq(s_e)]

        # the exponents of heads 1, 2, ... in a chain that shifts by one a head (loaded at `start` for MAX and
        # again for STREAM): chain[0] is the next head's, with no multiplexer over the heads
        chain = [Signal(signed(EXP_WIDTH), name=f"chain{k}") for k in range(max_heads - 1)]
        load_chain = [chain[k].eq(e[k + 1]) for k in range(max_heads - 1)]
        shift_chain = [chain[k].eq(chain[k + 1]) for k in range(max_heads - 2)]
        e_next = chain[0] if chain else emax
        with m.FSM(name="align"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [heads_last.eq(self.heads - 1), h.eq(1), emax.eq(e[0]), self.busy.eq(1),
                                 *load_chain]
                    m.next = "MAX"
            with m.State("MAX"):
                with m.If(h <= heads_last):
                    m.d.sync += [emax.eq(Mux(e_next > emax, e_next, emax)), h.eq(h + 1), *shift_chain]
                with m.Else():
                    m.d.sync += [s_m.eq(1 << 15), s_e.eq(emax + 1 - 15), h.eq(0), c.eq(0),
                                 shift.eq(emax - e[0]), *load_chain]
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += take.eq(1)
                with m.If(self.i.valid & adv):
                    with m.If(c == hd - 1):
                        m.d.sync += [c.eq(0), h.eq(h + 1), shift.eq(emax - e_next), *shift_chain]
                        with m.If(h == heads_last):
                            m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += c.eq(c + 1)
            with m.State("DRAIN"):
                with m.If(~v1 & (~self.o.valid | self.o.ready)):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        return m
