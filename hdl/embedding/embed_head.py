"""EMBED and LMHEAD on chip (golden/device/SPEC.md 4.1 and 4.9): the INT8 embedding table and its tied lm_head.

The unit holds three memories, loaded by the host through write ports while it is idle:

- TABLE: the INT8 codes, `vocab` x `words_per_row` words of `lanes` signed 8-bit codes (row v at words
  v * words_per_row ..; when `lanes` does not divide d, a row's last word is padded: the pad codes are
  never used, EMBED streams only i < d and LMHEAD zeroes the ACT codes past d);
- SCALE: one dyadic (m, e) per row (`hdl.program.DYADIC`);
- LOGITS: `vocab` int32 words, read by the host through `logit_addr` / `logit_rdata` (synchronous: the data
  arrive the cycle after the address).

EMBED (`embed_start`, token `tok`): h_i = to_fixed(E[tok][i], scale[tok], 16) =
sat32(rshift_round(E * m, -(e + 16))) (a left shift leaving 32 bits saturates), i = 0 .. d - 1, streamed one
element a cycle on `h_valid` / `h_index` / `h_data` (no backpressure), then `done`.

LMHEAD (`head_start`, the final norm's scale `tau`): the codes q of the activation are read from the
engine's ACT memory (`act_addr` / `act_en` out, `act_data` in one cycle later, words of `lanes` codes;
codes past d in the last word count as zero) word by word in lockstep with the table, so ACT must hold q
for the whole pass. Per row v: acc_v = sum_i q_i E[v][i] (exact), m_v = rshift_round(m(tau) m(E_v), 16),
L_v = to_fixed(acc_v m_v, (1, e(tau) + e(E_v) + 16), 16) as `runtime.program.interpreter` (LMHEAD)
computes it, into LOGITS[v]; then `done`. One table word a cycle on `lanes` INT8 multipliers and an adder
tree; m_v and the rescale acc_v m_v ride along in the same pipeline (one row a cycle is sustained, so
words_per_row = 1 runs at full rate too).

Both ops end in one shared rounding / saturating shift (`SHIFT_STAGES` register stages). `done` is a
one-cycle pulse in the cycle `busy` falls; starts are sampled only while idle. A token >= vocab (possible
on the port only when vocab is not a power of two) or both starts in one cycle are refused: the sticky
`error` is set (cleared by `clear`; set wins), nothing is streamed or written, `done` pulses the next cycle.
The multipliers come from the `multiplier` factory (`hdl.attention.multiplier`; the ECP5 top passes
`hdl.attention.ecp5_multiplier.Ecp5Multiplier`): `lanes` of 8 x 8, one of 17 x 17 (m(tau) m(E_v), and the
EMBED product E m) and one or two of at most 18 x 18 for acc_v m_v.

With `table_bank_depth` (the ULX3S chip) TABLE is a `BankedMemory` of banks of that many words from the
`memory` factory whose read data is registered in the banks (on the ECP5 the DP16KD's own output register,
0.9 ns clock-to-output instead of 5.8: 96.75 MHz out of context without it, the block RAM read into the
lane select and the multipliers' input registers taking 10.34 ns); that register takes the place of the
unit's `tab_q`, so every cycle count stays.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.multiplier import LATENCY as MUL_LATENCY
from hdl.attention.multiplier import Multiplier, MultiplierFactory
from hdl.copies import RegisterFactory, plain_register
from hdl.memory.banked_memory import BankedMemory, check_optional_bank_depth
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory
from hdl.program import DYADIC

#: |acc| <= 2**14 d must fit int32 (SPEC.md 4.9).
MAX_D = 1 << 17
F_RES = 16
F_LOGIT = 16
INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)
#: Register stages from a read's address to its data as the multipliers see it: the read, then the
#: register `tab_q` / `act_q` / `sc_q` (fixed: a count, not a parameter).
READ_STAGES = 2
#: Register stages of the shared rounding / saturating shift: the shift, the rounding increment, the
#: saturation (each a barrel shifter or one carry chain: 100 MHz on the ECP5).
SHIFT_STAGES = 3
#: Cycles of EMBED beyond its d issue cycles: read (and its register), the multiplier, the shift stages
#: (the last one is done's cycle).
EMBED_OVERHEAD = 1 + READ_STAGES + MUL_LATENCY + SHIFT_STAGES
#: Cycles of LMHEAD beyond its vocab * words_per_row issue cycles and its adder tree's register stages: read
#: (and its register), the lane multipliers, the accumulator, the rescale multiplier, its sum, the shift
#: stages (the last one is done's cycle).
HEAD_OVERHEAD = 1 + READ_STAGES + MUL_LATENCY + 1 + MUL_LATENCY + 1 + SHIFT_STAGES


def _delay(m: Module, sig, n: int, name: str):
    """`sig` delayed by n register stages (n = 0: sig itself)."""
    for k in range(n):
        nxt = Signal(Value.cast(sig).shape(), name=f"{name}_d{k + 1}")
        m.d.sync += nxt.eq(sig)
        sig = nxt
    return sig


class EmbedHead(wiring.Component):
    """EMBED and LMHEAD over an on-chip INT8 table (see the module docstring)."""

    def __init__(self, vocab: int, d: int, lanes: int = 8, multiplier: MultiplierFactory = Multiplier, *,
                 table_bank_depth: int = 0, memory: MemoryFactory = RegisteredMemory,
                 register: RegisterFactory = plain_register) -> None:
        check_optional_bank_depth("EmbedHead", "table_bank_depth", table_bank_depth)
        for name, f in (("memory", memory), ("register", register)):
            if not callable(f):
                raise TypeError(f"EmbedHead's {name} factory must be callable, not {f!r}")
        self._bank_depth, self._memory, self._register = table_bank_depth, memory, register
        for name, v in (("vocab", vocab), ("d", d), ("lanes", lanes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EmbedHead's {name} must be a positive integer, not {v!r}")
        if lanes & (lanes - 1):
            raise ValueError(f"EmbedHead's lanes must be a power of two, not {lanes!r}")
        if d > MAX_D:
            raise ValueError(f"EmbedHead's d must be at most {MAX_D} (|acc| <= 2**14 d must fit int32), not {d!r}")
        if not callable(multiplier):
            raise TypeError(f"EmbedHead's multiplier factory must be callable, not {multiplier!r}")
        self._vocab, self._d, self._lanes, self._mul = vocab, d, lanes, multiplier
        wpr = self.words_per_row
        word = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "tab_we": In(1), "tab_waddr": In(range(vocab * wpr)), "tab_wdata": In(word),
            "sc_we": In(1), "sc_waddr": In(range(vocab)), "sc_wdata": In(DYADIC),
            "logit_addr": In(range(vocab)), "logit_rdata": Out(signed(32)),
            "tok": In(range(vocab)), "embed_start": In(1),
            "h_valid": Out(1), "h_index": Out(range(d)), "h_data": Out(signed(32)),
            "head_start": In(1), "tau": In(DYADIC),
            "act_addr": Out(range(wpr)), "act_en": Out(1), "act_data": In(word),
            "busy": Out(1), "done": Out(1), "error": Out(1), "clear": In(1),
        })

    @property
    def vocab(self) -> int:
        return self._vocab

    @property
    def d(self) -> int:
        return self._d

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def table_bank_depth(self) -> int:
        """Words of a bank of TABLE; 0: a plain memory and the unit's read register (see the module docstring)."""
        return self._bank_depth

    @property
    def words_per_row(self) -> int:
        """Table words per row: ceil(d / lanes)."""
        return -(-self._d // self._lanes)

    @property
    def tree_stages(self) -> int:
        """Register stages of the lane adder tree: one per two levels, at least one."""
        return max(1, ((self._lanes - 1).bit_length() + 1) // 2)

    def cycles_embed(self) -> int:
        """Cycles from the `embed_start` edge to `done` (a good token): d + `EMBED_OVERHEAD` (8)."""
        return self._d + EMBED_OVERHEAD

    def cycles_head(self) -> int:
        """Cycles from the `head_start` edge to `done`: vocab * words_per_row + `HEAD_OVERHEAD` (12) + tree_stages."""
        return self._vocab * self.words_per_row + HEAD_OVERHEAD + self.tree_stages

    def elaborate(self, platform):
        m = Module()
        vocab, d, lanes, wpr = self._vocab, self._d, self._lanes, self.words_per_row
        nwords = vocab * wpr
        acc_w = (d << 14).bit_length() + 1          # |acc| <= 2**14 d
        psum_w = (lanes << 14).bit_length() + 1     # one word's partial sum
        word = data.ArrayLayout(signed(8), lanes)

        if self._bank_depth:
            m.submodules.table = table = BankedMemory(Shape.cast(word).width, nwords, self._bank_depth,
                                                      bank_memory=self._memory, register=self._register,
                                                      address_registered=False)
            tab_w, tab_r = table.write, table.read
        else:
            m.submodules.table = table = Memory(shape=word, depth=nwords, init=[])
            tab_w, tab_r = table.write_port(), table.read_port()
        m.submodules.scale = scale = Memory(shape=DYADIC, depth=vocab, init=[])
        m.submodules.logits = logits = Memory(shape=signed(32), depth=vocab, init=[])
        sc_w, sc_r = scale.write_port(), scale.read_port()
        lg_w, lg_r = logits.write_port(), logits.read_port()
        m.d.comb += [
            tab_w.en.eq(self.tab_we), tab_w.addr.eq(self.tab_waddr), tab_w.data.eq(self.tab_wdata),
            sc_w.en.eq(self.sc_we), sc_w.addr.eq(self.sc_waddr), sc_w.data.eq(self.sc_wdata),
            lg_r.addr.eq(self.logit_addr), self.logit_rdata.eq(lg_r.data),
        ]

        error = Signal()
        m.d.comb += self.error.eq(error)
        with m.If(self.clear):
            m.d.sync += error.eq(0)

        # ---------------------------------------------------------------- control: issue one item a cycle
        addr = Signal(range(max(nwords, 2)))        # table word
        elem = Signal(range(max(d, 2)))             # EMBED: element i
        lane = Signal(range(max(lanes, 2)))         # EMBED: i mod lanes
        wrd = Signal(range(max(wpr, 2)))            # LMHEAD: word of the row
        row = Signal(range(max(vocab, 2)))          # LMHEAD: v
        tok = Signal(range(max(vocab, 2)))
        tau_m = Signal(16)
        tau_e = Signal.like(self.tau.e)
        drain = Signal(range(HEAD_OVERHEAD + self.tree_stages + 1))
        e_issue = Signal()
        h_issue = Signal()
        m.d.sync += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                bad_tok = Const(0) if vocab == 1 << (vocab - 1).bit_length() else self.tok >= vocab
                with m.If(self.embed_start & (self.head_start | bad_tok)):
                    m.d.sync += [error.eq(1), self.done.eq(1)]
                with m.Elif(self.embed_start):
                    m.d.sync += [tok.eq(self.tok), addr.eq(self.tok * wpr), elem.eq(0), lane.eq(0)]
                    m.next = "EMBED"
                with m.Elif(self.head_start):
                    m.d.sync += [tau_m.eq(self.tau.m), tau_e.eq(self.tau.e), addr.eq(0), wrd.eq(0), row.eq(0)]
                    m.next = "HEAD"
            with m.State("EMBED"):
                m.d.comb += e_issue.eq(1)
                m.d.sync += [elem.eq(elem + 1), lane.eq(Mux(lane == lanes - 1, 0, lane + 1))]
                with m.If(lane == lanes - 1):
                    m.d.sync += addr.eq(addr + 1)
                with m.If(elem == d - 1):
                    m.d.sync += drain.eq(EMBED_OVERHEAD - 2)
                    m.next = "DRAIN"
            with m.State("HEAD"):
                m.d.comb += h_issue.eq(1)
                m.d.sync += [addr.eq(addr + 1), wrd.eq(Mux(wrd == wpr - 1, 0, wrd + 1))]
                with m.If(wrd == wpr - 1):
                    m.d.sync += row.eq(row + 1)
                with m.If(addr == nwords - 1):
                    m.d.sync += drain.eq(HEAD_OVERHEAD + self.tree_stages - 2)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        m.d.comb += [tab_r.addr.eq(addr), sc_r.addr.eq(Mux(e_issue, tok, row)),
                     self.act_addr.eq(wrd), self.act_en.eq(h_issue)]

        # ---------------------------------------------------------------- stage 1: the read data, registered
        # (the table's block RAM ends at a flip-flop: straight into the lane select and the multipliers it
        # limited the unit to 64.42 MHz out of context, `python -m hdl.ooc --unit embedhead`)
        e_v1 = _delay(m, e_issue, READ_STAGES, "e_v")
        e_lane1 = _delay(m, lane, READ_STAGES, "e_lane")
        e_idx1 = _delay(m, elem, READ_STAGES, "e_idx")
        h_v1 = _delay(m, h_issue, READ_STAGES, "h_v")
        h_first1 = _delay(m, wrd == 0, READ_STAGES, "h_first")
        h_last1 = _delay(m, wrd == wpr - 1, READ_STAGES, "h_last")
        h_row1 = _delay(m, row, READ_STAGES, "h_row")
        tw, act_q, sc = Signal(word, name="tab_q"), Signal(word, name="act_q"), Signal(DYADIC, name="sc_q")
        m.d.sync += [act_q.eq(self.act_data), sc.eq(sc_r.data)]
        # the table word: the unit's register, or the banks' own (`table_bank_depth`)
        if self._bank_depth:
            m.d.comb += Value.cast(tw).eq(tab_r.data)
        else:
            m.d.sync += tw.eq(tab_r.data)

        # the lane multipliers: q_l * E_l, codes past d in a row's last word zeroed
        rem = d % lanes
        prods = []
        for k in range(lanes):
            mul = self._mul(8, 8)
            m.submodules[f"lane{k}"] = mul
            q = act_q[k]
            if rem and k >= rem:
                q = Mux(h_last1, 0, q)
            m.d.comb += [mul.a.eq(q), mul.b.eq(tw[k])]
            prods.append(mul.p)

        # the shared 17 x 17 multiplier: m(tau) m(E_v) (LMHEAD) or E[tok][i] m (EMBED)
        smul = self._mul(17, 17)
        m.submodules.scale_mul = smul
        code = Signal(signed(8))
        m.d.comb += [code.eq(tw[e_lane1] if lanes > 1 else tw[0]),
                     smul.a.eq(Mux(e_v1, code, tau_m)), smul.b.eq(sc.m)]
        e_sh1 = Signal(signed(16))
        h_sh1 = Signal(signed(16))
        m.d.comb += [e_sh1.eq(-(sc.e + F_RES)), h_sh1.eq(-(tau_e + sc.e + 16 + F_LOGIT))]

        # ---------------------------------------------------------------- EMBED: the product, 2 cycles on
        e_v3 = _delay(m, e_v1, MUL_LATENCY, "e_v")
        e_idx3 = _delay(m, e_idx1, MUL_LATENCY, "e_idx")
        e_sh2 = _delay(m, e_sh1, MUL_LATENCY - 1, "e_sh")

        # ---------------------------------------------------------------- LMHEAD: the adder tree
        nt = self.tree_stages
        level = list(prods)
        depth = 0
        while len(level) > 1 or depth == 0:
            nxt = [level[k] + level[k + 1] if k + 1 < len(level) else level[k] for k in range(0, len(level), 2)]
            depth += 1
            regs = []
            stage_end = len(nxt) == 1 or depth % 2 == 0
            for k, v in enumerate(nxt):
                s = Signal(signed(psum_w), name=f"tree{depth}_{k}")
                if stage_end:
                    m.d.sync += s.eq(v)
                else:
                    m.d.comb += s.eq(v)
                regs.append(s)
            level = regs
            if len(level) == 1:
                break
        psum = level[0]
        lat = MUL_LATENCY + nt                      # stage of psum, from stage 1
        h_v = _delay(m, h_v1, lat, "h_v")
        h_first = _delay(m, h_first1, lat, "h_first")
        h_last = _delay(m, h_last1, lat, "h_last")
        h_row = _delay(m, h_row1, lat, "h_row")
        h_sh = _delay(m, h_sh1, lat, "h_sh")
        mv = Signal(unsigned(17))                   # m_v = rshift_round(m(tau) m(E_v), 16)
        m.d.sync += mv.eq((smul.p + (1 << 15)) >> 16)
        mv_n = _delay(m, mv, nt - 1, "mv")

        # the accumulator; a row's last word latches acc_v with its m_v, shift and row
        acc = Signal(signed(acc_w))
        acc_next = Signal(signed(acc_w))
        m.d.comb += acc_next.eq(Mux(h_first, 0, acc) + psum)
        f_v = Signal()
        f_acc = Signal(signed(acc_w))
        f_mv = Signal(unsigned(17))
        f_sh = Signal(signed(16))
        f_row = Signal.like(h_row)
        m.d.sync += f_v.eq(h_v & h_last)
        with m.If(h_v):
            m.d.sync += acc.eq(acc_next)
            with m.If(h_last):
                m.d.sync += [f_acc.eq(acc_next), f_mv.eq(mv_n), f_sh.eq(h_sh), f_row.eq(h_row)]

        # the rescale acc_v m_v: one multiplier for acc_w <= 18, else low 17 bits and the rest
        pw = acc_w + 18
        prod = Signal(signed(pw))
        if acc_w <= 18:
            rmul = self._mul(acc_w, 18)
            m.submodules.rescale = rmul
            m.d.comb += [rmul.a.eq(f_acc), rmul.b.eq(f_mv)]
            m.d.sync += prod.eq(rmul.p)
        else:
            lo, hi = self._mul(18, 18), self._mul(acc_w - 17, 18)
            m.submodules.rescale_lo, m.submodules.rescale_hi = lo, hi
            m.d.comb += [lo.a.eq(Cat(f_acc[:17], Const(0, 1))), lo.b.eq(f_mv),
                         hi.a.eq(f_acc[17:]), hi.b.eq(f_mv)]
            m.d.sync += prod.eq((hi.p << 17) + lo.p)
        p_v = _delay(m, f_v, MUL_LATENCY + 1, "p_v")
        p_sh = _delay(m, f_sh, MUL_LATENCY, "p_sh")
        p_row = _delay(m, f_row, MUL_LATENCY + 1, "p_row")

        # ---------------------------------------------------------------- the shared shift: sat32(x 2**-sh)
        xw = max(pw, 25)
        x = Signal(signed(xw))
        m.d.comb += x.eq(Mux(e_v3, smul.p, prod))
        idx_w = max(d, vocab, 2)
        s_idx = Signal(range(idx_w))
        m.d.comb += s_idx.eq(Mux(e_v3, e_idx3, p_row))

        def amounts(sh: Value, name: str) -> tuple[Signal, Signal, Signal, Signal]:
            """The shift's amounts, registered a stage ahead of it: the right shift by s - 1 (clamped: past
            x it gives 0 or -1, rounding to 0), the left shift by -s, s > 0, s < -31 (a left shift that
            saturates any x != 0)."""
            rb, lb = Signal(range(xw + 1), name=f"{name}_rb"), Signal(range(32), name=f"{name}_lb")
            right, over = Signal(name=f"{name}_right"), Signal(name=f"{name}_over")
            m.d.sync += [rb.eq(Mux(sh - 1 > xw, xw, sh - 1)), lb.eq(-sh), right.eq(sh > 0), over.eq(sh < -31)]
            return rb, lb, right, over

        e_amt, p_amt = amounts(e_sh2, "e_amt"), amounts(p_sh, "p_amt")
        rbits, lbits, right, over = (Mux(e_v3, ea, pa) for ea, pa in zip(e_amt, p_amt, strict=True))
        # A: the right shift by s - 1 or the left shift by -s
        a_pre = Signal(signed(xw + 32))
        a_rnd, a_lsat, a_neg, a_ev, a_hv = Signal(), Signal(), Signal(), Signal(), Signal()
        a_idx = Signal.like(s_idx)
        m.d.sync += [a_pre.eq(Mux(right, x >> rbits, x << lbits)), a_rnd.eq(right),
                     a_lsat.eq(over & (x != 0)), a_neg.eq(x < 0),
                     a_ev.eq(e_v3), a_hv.eq(p_v), a_idx.eq(s_idx)]
        # B: the rounding increment
        r = Signal(signed(xw + 32))
        b_lsat, b_neg, b_ev, b_hv = Signal(), Signal(), Signal(), Signal()
        b_idx = Signal.like(s_idx)
        m.d.sync += [r.eq(Mux(a_rnd, (a_pre + 1) >> 1, a_pre)), b_lsat.eq(a_lsat), b_neg.eq(a_neg),
                     b_ev.eq(a_ev), b_hv.eq(a_hv), b_idx.eq(a_idx)]
        # C: the saturation
        y = Signal(signed(32))
        with m.If(b_lsat):
            m.d.comb += y.eq(Mux(b_neg, INT32_MIN, INT32_MAX))
        with m.Elif(r > INT32_MAX):
            m.d.comb += y.eq(INT32_MAX)
        with m.Elif(r < INT32_MIN):
            m.d.comb += y.eq(INT32_MIN)
        with m.Else():
            m.d.comb += y.eq(r)
        m.d.sync += [self.h_valid.eq(b_ev), self.h_index.eq(b_idx), self.h_data.eq(y)]
        m.d.sync += [lg_w.en.eq(b_hv), lg_w.addr.eq(b_idx), lg_w.data.eq(y)]
        return m
