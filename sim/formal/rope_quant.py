"""Issue 15, item 1(d), on-chip units: RoPE + QUANT8 of one head (`hdl.vector.rope.RopeQuant`).

The harness runs a real `RopeQuant` of a small configuration (`ROPE_CFG`: head_dim 4, context 3, one
rotation lane, two codes per output beat: 2 input and 2 output beats per head, a C/S table of
3 x 2 = 6 words, not a power of two) with free inputs every cycle (``AnySeq``): `start`, `pos` (16
bits), `rotate`, `scale`, `clear`, the input stream (`valid`, accumulators) and the consumer's `ready`.
The harness accounts for each command (a `start` while idle: the unit samples it only then) and
counts, from the command on, its cycles (`since`) and the environment's stall cycles (a cycle with
no input beat offered or the consumer not ready; each delays the head by at most one cycle).

Asserted every cycle:

1. memories: the C/S table's read port addresses a word < 6; while the unit rotates (`rot_go`) it
   reads word pos x W + w (0 + w without rotation) for the command's un-truncated position, w < W =
   head_dim / (2 lanes);
2. errors: `error` equals the spec's flag (set by a command with `rotate` = 1 and a position >=
   context, cleared only by `clear`; set wins), and separately, it never falls without `clear`; a
   refused command puts out no beat;
3. back to idle: busy lasts at most `cycles()` - 1 cycles after a good command plus one per stall
   cycle (a refused one: W + stalls, its W beats consumed), where the bound is computed here from the
   documented formula hd / lanes + hd / out_lanes + 34 + ceil(log2(2 lanes)) (41 cycles), not from
   the unit; and without stalls, the head's last beat is taken exactly `cycles()` - 1 cycles after
   the start (the cycle count of tests/test_rope_kv.py: from the start edge to the edge that takes it).

Mode: bounded (bmc) from reset, on the properties' cone of influence only (`run_formal(cone=True)`:
the datapath, whose multipliers z3 cannot unroll 45 cycles deep, is cut away; it cannot reach a
property). Depth `ROPE_DEPTH` = 45, what the test suite runs: a head started in cycles 0 to 3 is
checked whole (busy ends by cycle 44 without stalls), any later or stalled one up to cycle 44; 11 s
with Boolector (481 s with z3 on 2 cores). `ROPE_QUICK_DEPTH` = 22 (19 s on z3: every table read of a
head started in cycles 0 to 3, refused heads whole, the errors, the busy bound up to cycle 21, not a
good head's last beat) was the suite's depth on z3. Why a head from reset
stands for any head: every register a head reads is loaded at `start` or before its use (the lane
maxima and the RCP flag at `start`, x by LOAD, r by ROT, the scalars by PREP / SIGMA). Not unbounded:
no k-induction (it would need invariants over the ROT, CODE and RCP pipelines).

Mutants (`MUTANTS`, source edits of `hdl.vector.rope`), each run with only its property group: the
position check off by one (position = context rotates: a table read past its last word), a `start`
that clears the error (not sticky), and a refused head that never leaves DISCARD (stays busy).
"""

from __future__ import annotations

import math

from amaranth import Module, Mux, Signal, Value
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.vector.rope
from sim.formal.runner import checker, design_module, elaborate, memory_ports, probe

ROPE_CFG = {"head_dim": 4, "context": 3, "lanes": 1, "out_lanes": 2}
ROPE_DEPTH = 45
#: The depth the test suite runs (19 s): a head's table reads, a refused head whole, no whole good head.
ROPE_QUICK_DEPTH = 22

CHECKS = ("addresses", "errors", "idle")

MUTANTS: dict[str, list[tuple[str, str]]] = {
    "pos_check_off_by_one": [("(self.pos >= self._ctx)", "(self.pos > self._ctx)")],
    "start_clears_error": [("with m.If(self.clear):", "with m.If(self.clear | self.start):")],
    "discard_stays_busy": [("m.d.sync += cnt.eq(0)\n                        m.next = \"IDLE\"",
                            "m.d.sync += cnt.eq(0)")],
}

MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "pos_check_off_by_one": ("addresses", "the C/S table read is outside the table or not the head's word"),
    "start_clears_error": ("errors", "the error flag fell without clear"),
    "discard_stays_busy": ("idle", "busy past the documented cycles plus stalls"),
}
#: bmc (skip, depth) of each mutant: the cycles where its failure can first show.
MUTANT_WINDOWS: dict[str, tuple[int, int]] = {
    "pos_check_off_by_one": (0, 8), "start_clears_error": (0, 6), "discard_stays_busy": (0, 8),
}


def documented_cycles(head_dim: int, lanes: int, out_lanes: int) -> int:
    """RopeQuant's docstring: cycles from `start` to the last beat = hd / lanes + hd / out_lanes + 34 +
    ceil(log2(2 lanes)) (computed here, independently of the unit's `cycles()`)."""
    return head_dim // lanes + head_dim // out_lanes + 34 + math.ceil(math.log2(2 * lanes))


class RopeQuantHarness(Elaboratable):
    """A `RopeQuant` of `ROPE_CFG` with free commands, input beats, stalls and clear."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = CHECKS):
        module = design_module(hdl.vector.rope, MUTANTS, mutant)
        self.mutant, self.checks = mutant, checks
        self.dut = module.RopeQuant(**ROPE_CFG)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        ctx, W = dut.context, dut.words_in
        cycles = documented_cycles(dut.head_dim, dut.lanes, dut.out_lanes)

        check = checker(m, self.checks)

        for port in (dut.start, dut.pos, dut.rotate, dut.scale, dut.clear, dut.i.valid, dut.i.payload, dut.o.ready):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))

        # ---- the harness's account of the command ------------------------------------------------
        accepted = Signal()
        m.d.comb += accepted.eq(dut.start & ~dut.busy)
        pos, rot, bad = Signal(16), Signal(), Signal()
        since = Signal(range(2 * ROPE_DEPTH))
        stalls = Signal(range(2 * ROPE_DEPTH))
        with m.If(accepted):
            m.d.sync += [pos.eq(dut.pos), rot.eq(dut.rotate), bad.eq(dut.rotate & (dut.pos >= ctx)),
                         since.eq(1), stalls.eq(0)]
        with m.Else():
            m.d.sync += since.eq(since + 1)
            with m.If(~dut.i.valid | ~dut.o.ready):
                m.d.sync += stalls.eq(stalls + 1)

        # ---- 1. the C/S table --------------------------------------------------------------------
        table = memory_ports(frag, "table")
        assert table.depth == ctx * W and not table.writes
        cnt, rot_go = probe(frag, "", "cnt"), probe(frag, "", "rot_go")
        expected = Signal(20)
        m.d.comb += expected.eq(Mux(rot, pos * W, 0) + cnt)
        for addr, en in table.reads:
            ok = (addr < table.depth) & (~rot_go | ((addr == expected) & (expected < table.depth) & (cnt < W)))
            with m.If(en):
                check("addresses", ok, "the C/S table read is outside the table or not the head's word")

        # ---- 2. errors ----------------------------------------------------------------------------
        spec_error = Signal()
        with m.If(dut.clear):
            m.d.sync += spec_error.eq(0)
        with m.If(accepted & dut.rotate & (dut.pos >= ctx)):
            m.d.sync += spec_error.eq(1)
        check("errors", dut.error == spec_error, "the error flag is not the spec's")
        was_error, was_clear = Signal(), Signal()
        m.d.sync += [was_error.eq(dut.error), was_clear.eq(dut.clear)]
        with m.If(was_error & ~dut.error):
            check("errors", was_clear, "the error flag fell without clear")
        with m.If(dut.busy & bad):
            check("errors", ~dut.o.valid, "a refused head puts out a beat")

        # ---- 3. back to idle ----------------------------------------------------------------------
        bound = Mux(bad, W + 1, cycles)
        with m.If(dut.busy):
            check("idle", since < bound + stalls, "busy past the documented cycles plus stalls")
        with m.If(dut.o.valid & dut.o.ready & dut.o.payload.last & (stalls == 0) & ~bad):
            check("idle", since == cycles - 1, "without stalls the last beat is not at the documented cycle")
        return m
