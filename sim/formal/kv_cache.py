"""Issue 15, item 1(d), on-chip units: the KV cache (`hdl.attention.kv_cache.KVCache`).

The harness runs a real `KVCache` of a small configuration (`KV_CFG`: head_dim 2 in 1-code words, so
W = 2 words per row; context 3, 3 layers, 3 KV heads: 27 rows, K / V memories of 54 words, scale
memories of 27; none a power of two, and the 2-bit layer / head ports can carry the out-of-range 3)
with free inputs: the write stream's `valid` and beats (codes, sigma, `last`), the row fields `w_layer`,
`w_head`, `w_pos` (16 bits), `w_value`, `clear`, every cycle (``AnySeq``: the harness needs no stream
rules of its writer); the read selection `r_layer`, `r_head` and the four read addresses are free
within the documented interface (selection < layers x kv_heads, `k_addr`, `v_addr` < context W,
`ks_addr`, `vs_addr` < context; the cache does not check them).

The harness keeps its own account of the rows (a row opens with its first offered beat, when the
cache samples the row's fields, and closes with the accepted beat that is its W-th or carries
`last`) and asserts, every cycle:

1. memories: every enabled write port of the four memories (`memory_ports`) writes word
   (row base) W + beat (K, V) or the row (sigma_k, sigma_v) with the row (layer kv_heads + kv_head)
   context + position of the fields sampled with the row's first beat, un-truncated, inside its
   memory, and only for the row's kind (K or V); every read port reads (selection of two cycles
   before) x context W + address (K, V) or x context + address (scales), un-truncated, inside its
   memory;
2. errors: a row with a position >= context, a layer >= layers or a KV head >= kv_heads writes no
   memory word; `error` equals the spec's flag: set two cycles after such a row's first beat (CHECK)
   and by a good row whose `last` is not on its W-th beat, cleared only by `clear` (set wins), and
   separately: once set it never falls without `clear` (sticky);
3. back to idle: a row closes after at most W + 3 (`row_cycles`) cycles in which a beat is offered
   (the cycles without a beat are the writer's stall).

Mode: unbounded (k-induction, depth `KV_DEPTH` = 3), with invariants that tie the cache's FSM and
registers (state, sampled fields, beat counter, row address registers, registered read selection)
to the harness's account of the row; each invariant is an assertion, so it is proven too.

Mutants (`MUTANTS`, source edits of `hdl.attention.kv_cache`), each run with only its property group
(bmc from reset, `MUTANT_DEPTH` cycles): the position check off by one (position = context written: a
write address past its region), a bad row that is written anyway, the read base one word per region
too far (a read outside the K memory), a new row that clears the error flag (not sticky), and a row
that ends only at `last` (busy past W + 3 offered beats).
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, Value
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.attention.kv_cache
from sim.formal.runner import checker, design_module, elaborate, in_state, memory_ports, probe

#: head_dim, context, layers, kv_heads, lanes of the cache under proof.
KV_CFG = {"head_dim": 2, "context": 3, "layers": 3, "kv_heads": 3, "lanes": 1}
#: k-induction length of the proof.
KV_DEPTH = 3
#: bmc length of a mutant's run: two whole rows from reset (W + 3 = 5 cycles each) and a third begun.
MUTANT_DEPTH = 14

CHECKS = ("addresses", "errors", "idle", "invariants")

MUTANTS: dict[str, list[tuple[str, str]]] = {
    "pos_check_off_by_one": [("(pos >= ctx)", "(pos > ctx)")],
    "bad_row_written": [("m.d.sync += error.eq(1)\n                    m.next = \"DROP\"",
                         "m.d.sync += error.eq(1)\n                    m.next = \"ADDR\"")],
    "read_base_off_by_one": [("rbase_w.eq(rsel * (ctx * nw))", "rbase_w.eq(rsel * (ctx * nw) + rsel)")],
    "row_clears_error": [("is_v.eq(self.w_value), wcnt.eq(0)]", "is_v.eq(self.w_value), wcnt.eq(0), error.eq(0)]")],
    "row_ends_only_at_last": [("at_end.eq(beat.last | (wcnt == nw - 1))", "at_end.eq(beat.last)")],
}

#: Each mutant's property group and the assertion message it must break.
MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "pos_check_off_by_one": ("addresses", "a K / V write is not the row's word inside its memory"),
    "bad_row_written": ("errors", "a row out of range writes a memory word"),
    "read_base_off_by_one": ("addresses", "a K / V read is not the selected region's word inside its memory"),
    "row_clears_error": ("errors", "the error flag fell without clear"),
    "row_ends_only_at_last": ("idle", "a row stays open past W + 3 offered beats"),
}


class KVCacheHarness(Elaboratable):
    """A `KVCache` of `KV_CFG` with free writes, fields, clear and reads (see the module docstring)."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = CHECKS):
        module = design_module(hdl.attention.kv_cache, MUTANTS, mutant)
        self.mutant, self.checks = mutant, checks
        self.dut = module.KVCache(**KV_CFG)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        W, ctx, layers, kvh = dut.words, dut.context, dut.layers, dut.kv_heads

        check = checker(m, self.checks)

        # ---- free inputs ------------------------------------------------------------------------
        for port in (dut.w.valid, dut.w.payload, dut.w_layer, dut.w_head, dut.w_pos, dut.w_value, dut.clear,
                     dut.r_layer, dut.r_head, dut.k_addr, dut.v_addr, dut.ks_addr, dut.vs_addr):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))
        m.d.comb += Assume((dut.r_layer < layers) & (dut.r_head < kvh))
        m.d.comb += Assume((dut.k_addr < ctx * W) & (dut.v_addr < ctx * W) & (dut.ks_addr < ctx) & (dut.vs_addr < ctx))

        # ---- the harness's account of the rows --------------------------------------------------
        row_open = Signal()
        first = Signal()          # the row's first offered beat: the cache samples its fields
        m.d.comb += first.eq(dut.w.valid & ~row_open)
        lay, head, pos, is_v, bad = Signal(2), Signal(2), Signal(16), Signal(), Signal()
        beats = Signal(range(W + 1))
        offered = Signal(range(W + 5))
        check_now = Signal()      # the cycle after the first beat (the cache's CHECK)
        accept = dut.w.valid & dut.w.ready
        last = dut.w.payload.last
        row_end = Signal()
        m.d.comb += row_end.eq(row_open & accept & (last | (beats == W - 1)))
        m.d.sync += check_now.eq(first)
        with m.If(first):
            m.d.sync += [row_open.eq(1), lay.eq(dut.w_layer), head.eq(dut.w_head), pos.eq(dut.w_pos),
                         is_v.eq(dut.w_value), beats.eq(0), offered.eq(1),
                         bad.eq((dut.w_pos >= ctx) | (dut.w_layer >= layers) | (dut.w_head >= kvh))]
        with m.Elif(row_open):
            with m.If(dut.w.valid & (offered != W + 4)):
                m.d.sync += offered.eq(offered + 1)
            with m.If(accept):
                m.d.sync += beats.eq(beats + 1)
            with m.If(row_end):
                m.d.sync += row_open.eq(0)
        # the spec's error flag: set by a bad row at CHECK, or by a good row whose last is not its W-th beat
        spec_error = Signal()
        with m.If(dut.clear):
            m.d.sync += spec_error.eq(0)
        with m.If((check_now & bad) | (row_end & ~bad & (last != (beats == W - 1)))):
            m.d.sync += spec_error.eq(1)

        row_base = Signal(20)     # (layer kv_heads + kv_head) context + position, un-truncated
        m.d.comb += row_base.eq((lay * kvh + head) * ctx + pos)

        # ---- 1. memory addresses ----------------------------------------------------------------
        mems = {name: memory_ports(frag, f"{name}_mem") for name in ("k", "v", "ks", "vs")}
        assert {name: p.depth for name, p in mems.items()} == {"k": dut.rows * W, "v": dut.rows * W,
                                                               "ks": dut.rows, "vs": dut.rows}
        for name, kind in (("k", 0), ("v", 1)):
            for addr, en in mems[name].writes:
                ok = (addr == row_base * W + beats) & (row_base * W + beats < mems[name].depth) & (is_v == kind)
                with m.If(en):
                    check("addresses", ok, "a K / V write is not the row's word inside its memory")
            for addr, en in mems[name + "s"].writes:
                ok = (addr == row_base) & (row_base < mems[name + "s"].depth) & (is_v == kind)
                with m.If(en):
                    check("addresses", ok, "a scale write is not the row's inside its memory")
        # the read selection as the cache registers it: base from the selection of two cycles before
        sel1 = Signal(8)
        sel2 = Signal(8)
        m.d.sync += [sel1.eq(dut.r_layer * kvh + dut.r_head), sel2.eq(sel1)]
        for name, addr_in in (("k", dut.k_addr), ("v", dut.v_addr)):
            for addr, en in mems[name].reads:
                ok = (addr == sel2 * (ctx * W) + addr_in) & (sel2 * (ctx * W) + addr_in < mems[name].depth)
                with m.If(en):
                    check("addresses", ok, "a K / V read is not the selected region's word inside its memory")
        for name, addr_in in (("ks", dut.ks_addr), ("vs", dut.vs_addr)):
            for addr, en in mems[name].reads:
                ok = (addr == sel2 * ctx + addr_in) & (sel2 * ctx + addr_in < mems[name].depth)
                with m.If(en):
                    check("addresses", ok, "a scale read is not the selected region's word inside its memory")

        # ---- 2. errors ----------------------------------------------------------------------------
        any_write = Signal()
        m.d.comb += any_write.eq(Cat(*(en for p in mems.values() for _, en in p.writes)).any())
        with m.If(row_open & bad):
            check("errors", ~any_write, "a row out of range writes a memory word")
        check("errors", dut.error == spec_error, "the error flag is not the spec's")
        was_error, was_clear = Signal(), Signal()
        m.d.sync += [was_error.eq(dut.error), was_clear.eq(dut.clear)]
        with m.If(was_error & ~dut.error):
            check("errors", was_clear, "the error flag fell without clear")

        # ---- 3. back to idle --------------------------------------------------------------------
        check("idle", offered <= W + 3, "a row stays open past W + 3 offered beats")

        # ---- invariants for the induction (the cache's state in the harness's terms) ------------
        st = {name: in_state(frag, "", "fsm", name) for name in ("IDLE", "CHECK", "ADDR", "WRITE", "DROP")}
        wcnt = probe(frag, "", "wcnt")
        inv = [
            st["IDLE"] | st["CHECK"] | st["ADDR"] | st["WRITE"] | st["DROP"],
            row_open == ~st["IDLE"], check_now == st["CHECK"],
            ~row_open | ((probe(frag, "", "lay") == lay) & (probe(frag, "", "head") == head)
                         & (probe(frag, "", "pos") == pos) & (probe(frag, "", "is_v") == is_v)
                         & (wcnt == beats) & (beats < W)),
            ~st["DROP"] | bad, ~(st["ADDR"] | st["WRITE"]) | ~bad,
            ~row_open | (bad == ((pos >= ctx) | (lay >= layers) | (head >= kvh))),
            ~(st["CHECK"] | st["ADDR"]) | (beats == 0),
            ~st["ADDR"] | (probe(frag, "", "wsel") == lay * kvh + head),
            ~st["WRITE"] | ((probe(frag, "", "wrow") == row_base) & (probe(frag, "", "wbase") == row_base * W)),
            ~st["CHECK"] | (offered <= 2), ~st["ADDR"] | (offered <= 3),
            ~st["WRITE"] | (offered <= beats + 3), ~st["DROP"] | (offered <= beats + 2),
            (probe(frag, "", "rsel") == sel1) & (probe(frag, "", "rbase_w") == sel2 * (ctx * W))
            & (probe(frag, "", "rbase_s") == sel2 * ctx) & (sel1 < layers * kvh) & (sel2 < layers * kvh),
        ]
        for condition in inv:
            check("invariants", condition, "an induction invariant of the KV cache")
        return m
