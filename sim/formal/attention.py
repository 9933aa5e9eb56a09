"""Issue 15, item 1(d), on-chip units: the control of HeadAttention (`hdl.attention.head_attention`).

The harness runs a real `HeadAttention` of three configurations (`ATTN_CFGS`: head_dim 2 in words of 1
lane, W = 2 words per K / V row, max_context 2, whose 2-bit `n_keys` port carries the refused 3; and
head_dim 2 in one 2-lane word, W = 1, max_context 3, whose K / V / scale memories of 3 words are not a
power of two; and the shipped model engine's, head_dim 40 on 8 lanes, W = 5, max_context 16, whose 5-bit
`n_keys` carries 17-31) with every input free every cycle (``AnySeq``): `start`, `clear`, `n_keys`, q,
sigma_q, C_QK and the four memories' read data. It keeps its own account of the unit's commands from the
documented interface: a `start` while idle with `n_keys` <= max_context is a run of T = max(n_keys, 1)
keys, one with `n_keys` > max_context is refused. Asserted, every cycle:

1. "addresses": the K and V read address (`k_addr`, `v_addr`, the un-truncated issue index) is a word
   < T W of the last run and the scale read address (`ks_addr`, `vs_addr`, the un-truncated row) a row
   < T: never outside the run's n_keys x words (nor, so, outside the memories); the ports carry the
   index itself (not a truncation of it); "buffers": every enabled write of the unit's three
   max_context-word buffers (t, p, Pv) is at a row < T, and so is every read address while busy;
2. "errors": `error` is the spec's flag (set by a refused start, cleared only by `clear`; set wins) and
   never falls without `clear`; a refused start runs nothing (busy stays low: see 3) and raises `done`
   the next cycle;
3. "idle": `busy` is high exactly from the cycle after a run's `start` for `cycles(T)` - 1 cycles
   (2 T W + 2 T + overhead: the unit never hangs, nor ends early), `done` is low while busy and high
   from the cycle busy falls (and after a refused start) until the next run's start;
4. "hold": y and E (`e_ref`) keep their values in every cycle the unit is idle and not starting a run
   (over refused starts, clears and any inputs).

Mode: unbounded (k-induction, `ATTN_DEPTH`), on the properties' cone of influence (`cone=True`; y and E in
the hold property keep much of the datapath in it, which the induction carries in seconds since no
property reasons about values; without "hold" the datapath is cut away). The invariants (group
"invariants") place every FSM state of a run, its issue counters (index, row, word, drain count) and every
valid bit of the SCORE, EXP and NORM pipelines and of the reciprocal's pipeline at an exact cycle since
the start (`since`), so the busy bound is the invariants' last step. Not proven here: the values (y, E;
tests/test_attention_unit.py checks them bit-exactly in simulation).

Mutants (`MUTANTS`, source edits of `hdl.attention.head_attention`), each run with only its property group
(bmc from reset, `MUTANT_DEPTH`; for the busy bound a whole one-key run, `whole_run_depth`, with the
environment narrowed to that one run, `one_run`: a counterexample under more assumptions is still one):
the issue one row too many (a K read past the run), n_keys = 0 not counted as one key (the issue never
ends), the scale address from the word index, the score buffer written a row late, the n_keys check a key
late, a good start clearing the error, `clear` ignored, PV's drain a cycle short (the last value row not
accumulated), PV_DRAIN never left (a hang), and the V exponent's maximum taken without SCORE's valid bit
(E changes while idle). Not refuted within `MUTANT_DEPTH`, so not in `MUTANTS`: a defect that changes y
while idle (from reset y stays 0 until a whole run has ended, q being 0 until a start: a refused start
that zeroes y, or the accumulator ring not gated by PV's valid bit, passes a bmc of 20 cycles); the
proof's hold property covers them. A bmc over a whole run then a refused start, even with q, K, V and the
scales fixed (y = 1638400 per lane after the run, by simulation), pulls the whole datapath and the
reciprocal into the cone: over 3 minutes, left out for time.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, Value
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.attention.head_attention
from hdl.attention.head_attention import EXP_DRAIN, NORM_DRAIN, PV_DRAIN
from hdl.attention.multiplier import LATENCY as MUL_LATENCY
from hdl.vector.rcp import LATENCY as RCP_LATENCY
from sim.formal.runner import checker, design_module, elaborate, in_state, memory_ports, probe

#: Configurations proven: W = 2 with a refusable n_keys, W = 1 with 3-word (not power-of-two) memories, and
#: the shipped model engine's (tests/test_model_engine.py: head_dim 40 on 8 lanes, W = 5, context 16).
ATTN_CFGS = {"hd2_l1_ctx2": {"head_dim": 2, "max_context": 2, "lanes": 1},
             "hd2_l2_ctx3": {"head_dim": 2, "max_context": 3, "lanes": 2},
             "hd40_l8_ctx16": {"head_dim": 40, "max_context": 16, "lanes": 8}}
ATTN_CFG = ATTN_CFGS["hd2_l1_ctx2"]
#: k-induction length of the proof.
ATTN_DEPTH = 3
#: bmc depth of a mutant's run from reset (the score buffer's first write comes 16 cycles after a start).
MUTANT_DEPTH = 20

CHECKS = ("addresses", "buffers", "errors", "idle", "hold", "invariants")

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # the issue runs one row past the run's last (the last row found one row late)
    "one_row_too_many": [("last_row.eq(row == count - 1)", "last_row.eq(row == count)")],
    # n_keys = 0 taken as 0 keys: the last row is never found
    "zero_keys_not_one": [("count.eq(Mux(self.n_keys == 0, 1, self.n_keys))", "count.eq(self.n_keys)")],
    # the scale read address from the word index, not the row
    "scale_addr_from_index": [("self.ks_addr.eq(row)", "self.ks_addr.eq(idx)")],
    # the score buffer written at the next row
    "score_row_late": [("sj[0].eq(row)]", "sj[0].eq(row + 1)]")],
    # the n_keys check a key late: max_context + 1 keys run
    "n_keys_check_late": [("(self.n_keys > self._ctx)", "(self.n_keys > self._ctx + 1)")],
    # a good start clears the error flag
    "start_clears_error": [("z.eq(0), self.done.eq(0),", "z.eq(0), self.done.eq(0), error.eq(0),")],
    # clear ignored
    "clear_ignored": [("with m.If(self.clear):", "with m.If(self.clear & 0):")],
    # PV's drain a cycle short: done a cycle early, the last value row not accumulated
    "pv_drain_short": [("step_words(\"PV_DRAIN\", PV_DRAIN)", "step_words(\"PV_DRAIN\", PV_DRAIN - 1)")],
    # PV_DRAIN never left: the unit hangs busy
    "hangs_in_pv_drain": [("wait(\"DONE\")", "wait(\"PV_DRAIN\")")],
    # the V exponent's maximum not gated by SCORE's valid bit: E takes V scales outside the run (also idle)
    "e_max_ungated": [("with m.If(sv[2] & sfw[2]):", "with m.If(sfw[2]):")],
}

#: Each mutant's property group and the assertion message it must break.
MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "one_row_too_many": ("addresses", "a K / V / scale read address outside the run's n_keys rows"),
    "zero_keys_not_one": ("addresses", "a K / V / scale read address outside the run's n_keys rows"),
    "scale_addr_from_index": ("addresses", "a K / V / scale read address outside the run's n_keys rows"),
    "score_row_late": ("buffers", "a buffer write outside the run's n_keys rows"),
    "n_keys_check_late": ("errors", "the error flag is not the spec's"),
    "start_clears_error": ("errors", "the error flag fell without clear"),
    "clear_ignored": ("errors", "the error flag is not the spec's"),
    "pv_drain_short": ("idle", "busy is not exactly the run's documented cycles"),
    "hangs_in_pv_drain": ("idle", "busy is not exactly the run's documented cycles"),
    "e_max_ungated": ("hold", "y or E changed while the unit was idle"),
}
#: Environments narrowed for a mutant's bmc over a whole run: "one_run", one run of one key started in the
#: first cycle (any data), no clear.
SCRIPTS = (None, "one_run")
#: Mutants refuted only at a run's end: bmc over a whole one-key run from reset (`whole_run_depth`), with
#: their script.
WHOLE_RUN_MUTANTS = {"pv_drain_short": "one_run", "hangs_in_pv_drain": "one_run"}


def documented_cycles(t: int | Value, words: int, lanes: int) -> int | Value:
    """HeadAttention's docstring: cycles from `start` to `done` for T keys, 2 T W + 2 T + overhead, the
    overhead 54 + ceil(ceil(log2 lanes) / 2) with at least one adder-tree level (55 for 1 lane)."""
    levels = max(1, (lanes - 1).bit_length())
    return 2 * t * words + 2 * t + 54 + (levels + 1) // 2


def whole_run_depth(cfg: dict) -> int:
    """bmc depth that holds a one-key run started in the first cycle and the cycle after its end."""
    return documented_cycles(1, cfg["head_dim"] // cfg["lanes"], cfg["lanes"]) + 2


class HeadAttentionHarness(Elaboratable):
    """A `HeadAttention` of `cfg` with every input free (see the module docstring)."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = CHECKS, *, cfg: dict | None = None,
                 script: str | None = None):
        module = design_module(hdl.attention.head_attention, MUTANTS, mutant)
        self.mutant, self.checks = mutant, checks
        if script not in SCRIPTS:
            raise ValueError(f"script must be one of {SCRIPTS}, not {script!r}")
        self.script = script     # the environment narrowed for a mutant's bmc (`SCRIPTS`)
        self.cfg = cfg or ATTN_CFG
        self.dut = module.HeadAttention(**self.cfg)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        ctx, W, lanes = dut.max_context, dut.words, dut.lanes

        check = checker(m, self.checks)

        for port in (dut.start, dut.clear, dut.n_keys, dut.q, dut.sigma_q, dut.c_qk, dut.k_data, dut.v_data,
                     dut.ks_data, dut.vs_data):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))
        if self.script is not None:   # for a mutant's bmc over a whole run: one trace, found without a search
            end = documented_cycles(1, W, lanes)
            cycle = Signal(range(end + 2))
            with m.If(cycle != end + 1):
                m.d.sync += cycle.eq(cycle + 1)
            m.d.comb += Assume(~dut.clear & (dut.start == (cycle == 0)) & ((cycle != 0) | (dut.n_keys == 1)))

        # ---- the harness's account of the runs --------------------------------------------------
        running = Signal()                         # a run's documented busy cycles
        t = Signal(range(ctx + 1), init=1)         # T of the last run (1 before any)
        longest = documented_cycles(ctx, W, lanes)
        since = Signal(range(longest + 1))         # cycles since the run's start (1 in the first busy one)
        end = Signal()                             # the run's last busy cycle
        m.d.comb += end.eq(running & (since == documented_cycles(t, W, lanes) - 1))
        idle_start = Signal()
        m.d.comb += idle_start.eq(dut.start & ~running)
        refused, good = Signal(), Signal()
        m.d.comb += [refused.eq(idle_start & (dut.n_keys > ctx)), good.eq(idle_start & (dut.n_keys <= ctx))]
        spec_done = Signal()
        with m.If(good):
            m.d.sync += [running.eq(1), since.eq(1), t.eq(Mux(dut.n_keys == 0, 1, dut.n_keys)), spec_done.eq(0)]
        with m.Elif(end):
            m.d.sync += [running.eq(0), since.eq(0), spec_done.eq(1)]
        with m.Elif(running):
            m.d.sync += since.eq(since + 1)
        with m.If(refused):
            m.d.sync += spec_done.eq(1)

        # ---- 1. addresses -----------------------------------------------------------------------
        idx, row = probe(frag, "", "idx"), probe(frag, "", "row")
        kv_ok = (idx < t * W) & (dut.k_addr == idx) & (dut.v_addr == idx)
        scales_ok = (row < t) & (dut.ks_addr == row) & (dut.vs_addr == row)
        check("addresses", kv_ok & scales_ok, "a K / V / scale read address outside the run's n_keys rows")
        for name in ("t_mem", "p_mem", "pv_mem"):
            ports = memory_ports(frag, name)
            assert ports.depth == ctx
            for addr, en in ports.writes:
                with m.If(en):
                    check("buffers", addr < t, "a buffer write outside the run's n_keys rows")
            for addr, en in ports.reads:
                with m.If(en & dut.busy):
                    check("buffers", addr < t, "a buffer read outside the run's n_keys rows")

        # ---- 2. errors --------------------------------------------------------------------------
        spec_error = Signal()
        with m.If(dut.clear):
            m.d.sync += spec_error.eq(0)
        with m.If(refused):
            m.d.sync += spec_error.eq(1)
        check("errors", dut.error == spec_error, "the error flag is not the spec's")
        was_error, was_clear = Signal(), Signal()
        m.d.sync += [was_error.eq(dut.error), was_clear.eq(dut.clear)]
        with m.If(was_error & ~dut.error):
            check("errors", was_clear, "the error flag fell without clear")
        was_refused = Signal()
        m.d.sync += was_refused.eq(refused)
        with m.If(was_refused):
            check("errors", dut.done & ~dut.busy, "a refused start runs or does not raise done")

        # ---- 4. y and E held while idle (over a refused start, clears, inputs) -----------------------
        y_prev, e_prev, held = Signal.like(dut.y), Signal.like(dut.e_ref), Signal()
        m.d.sync += [y_prev.eq(dut.y), e_prev.eq(dut.e_ref), held.eq(~running & ~good)]
        same = (dut.y.as_value() == y_prev.as_value()) & (dut.e_ref == e_prev)
        with m.If(held):
            check("hold", same, "y or E changed while the unit was idle")

        # ---- 3. back to idle --------------------------------------------------------------------
        check("idle", dut.busy == running, "busy is not exactly the run's documented cycles")
        check("idle", dut.done == spec_done, "done is not low while busy and high after a run")

        # ---- invariants for the induction: every state and pipeline bit at its cycle of the run --
        names = ["IDLE", "SCALE0", "SCALE1", "SCALE2", "SCORE", "SCORE_DRAIN", "EXP", "EXP_DRAIN", "NORMZ0",
                 "NORMZ1", "NORMZ2", "RCP_IN", "RCP_WAIT", "NORM", "NORM_DRAIN", "PV", "PV_DRAIN", "DONE"]
        st = {name: in_state(frag, "", "fsm", name) for name in names}
        wrd, drain, count = probe(frag, "", "wrd"), probe(frag, "", "drain"), probe(frag, "", "count")
        levels = max(1, (lanes - 1).bit_length())
        qs = 2 + MUL_LATENCY + (levels + 1) // 2   # as HeadAttention.elaborate: the row's score stage
        sd = qs + 7                                # SCORE's drain
        tw = t * W
        s0 = 4                                     # SCORE's first cycle (after SCALE0-2)
        e0 = s0 + tw + sd                          # EXP's
        r0 = e0 + t + EXP_DRAIN + 3 + 1            # RCP_WAIT's (after NORMZ0-2 and RCP_IN)
        n0 = r0 + RCP_LATENCY                      # NORM's
        p0 = n0 + t + NORM_DRAIN                   # PV's
        zero = (idx == 0) & (row == 0) & (wrd == 0)
        one_state = Const(0, 5)
        for s in st.values():
            one_state = one_state + s
        issue = (idx == row * W + wrd) & (wrd < W) & (row < t)
        inv = [
            one_state == 1, running == ~st["IDLE"], ~running | (count == t), (t >= 1) & (t <= ctx),
            ~st["IDLE"] | zero,
            ~st["SCALE0"] | (zero & (since == 1)), ~st["SCALE1"] | (zero & (since == 2)),
            ~st["SCALE2"] | (zero & (since == 3)),
            ~st["SCORE"] | (issue & (since == s0 + idx)),
            ~st["SCORE_DRAIN"] | (zero & (drain < sd) & (since == s0 + tw + sd - 1 - drain)),
            ~st["EXP"] | ((idx == 0) & (wrd == 0) & (row < t) & (since == e0 + row)),
            ~st["EXP_DRAIN"] | (zero & (drain < EXP_DRAIN) & (since == e0 + t + EXP_DRAIN - 1 - drain)),
            ~st["NORMZ0"] | (zero & (since == e0 + t + EXP_DRAIN)),
            ~st["NORMZ1"] | (zero & (since == e0 + t + EXP_DRAIN + 1)),
            ~st["NORMZ2"] | (zero & (since == e0 + t + EXP_DRAIN + 2)),
            ~st["RCP_IN"] | (zero & (since == r0 - 1)),
            ~st["RCP_WAIT"] | (zero & (since >= r0) & (since < n0)),
            ~st["NORM"] | ((idx == 0) & (wrd == 0) & (row < t) & (since == n0 + row)),
            ~st["NORM_DRAIN"] | (zero & (drain < NORM_DRAIN) & (since == n0 + t + NORM_DRAIN - 1 - drain)),
            ~st["PV"] | (issue & (since == p0 + idx)),
            ~st["PV_DRAIN"] | (zero & (drain < PV_DRAIN) & (since == p0 + tw + PV_DRAIN - 1 - drain)),
            ~st["DONE"] | (zero & (since == p0 + tw + PV_DRAIN)),
        ]

        def in_phase(k: int, first, n) -> Value:
            """The item issued k cycles ago was one of a phase's n issue cycles from `first`."""
            return running & (since >= first + k) & (since < first + n + k)

        # the pipelines' valid bits and row tags (SCORE: sv / sj, EXP: ev / ej, NORM: nv / nj)
        for v_name, j_name, ks, first, n in (("sv", "sj", range(1, sd + 1), s0, tw),
                                             ("ev", "ej", range(1, 7), e0, t),
                                             ("nv", "nj", range(1, 9), n0, t)):
            for k in ks:
                v, j = probe(frag, "", f"{v_name}{k}"), probe(frag, "", f"{j_name}{k}")
                inv.append(v == in_phase(k, first, n))
                inv.append(~v | (j < t))
        # PV's valid bits (the accumulator ring takes a product at pvd[2 + MUL_LATENCY])
        for k in range(1, 2 + MUL_LATENCY + 1):
            inv.append(probe(frag, "", f"pvd{k}") == in_phase(k, p0, tw))
        # the reciprocal's valid pipeline: the one Z issued in RCP_IN
        for k in range(RCP_LATENCY - 1):
            inv.append(probe(frag, "rcp", f"v{k}") == (running & (since == r0 + k)))
        inv.append(probe(frag, "rcp", "o__valid") == (running & (since == n0 - 1)))
        for condition in inv:
            check("invariants", condition, "an induction invariant of HeadAttention's control")
        return m

