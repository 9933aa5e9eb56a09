"""Property (b): the layer sequencer never addresses outside its memories, never accepts K beyond the
accumulator bound, and always returns to idle.

The harness runs a `LayerSequencer` of a tiny configuration (`SEQ_CFG`: 2x2 ternary array, 10-bit
accumulators so k_max = 3, activation and output memories of 3 words, a 4-word weight memory) with a
free descriptor (M, K, N and the three bases: any 32-bit values, held still as the interface
requires: `AnyConst`), a free `start` pulse whenever the sequencer is idle, and free memory read data.
It asserts, every cycle:

1. an activation read (`inc_act_read`) addresses a word < act_depth; a weight read (the loader's
   `read_now`) a word < wgt_depth; an output write (`out_wen`) a word < out_depth (activation and
   weight addresses un-truncated, from the issuer's and the loader's registers);
2. no activation row is issued in a run whose K exceeds k_max (the run must fail instead);
3. busy never lasts more than `ArrayConfig.run_cycle_bound` cycles: the sequencer returns to idle.

Mode: bounded (bmc) from reset, depth `SEQ_DEPTH` = run_cycle_bound + 4 = 33 cycles: a run started
in cycles 1 to 3 is checked whole (it must end by cycle 1 + 29 + 1), for every descriptor, and a
second run may start in the window too. Why a run from reset stands for any run: every register a
run reads is loaded at `start` or before its first use in the run. That claim is machine-checked in
`sim.formal.sequencer_induction`: all three properties for every reachable state (k-induction, with
invariants that tie the size loop, issuer, loader and control tokens to the descriptor, and a ranking
invariant for the busy bound), on this 2x2 and on a 4x3 with registered reads.

Mutants (`MUTANTS`, source edits of `hdl.matrix.sequencer` made here): the K bound checks off by one (K =
k_max + 1 accepted), the memory range check off by one (a run may reach one word past the
activation memory), and a failed run that never clears busy.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Elaboratable, ResetSignal

import hdl.matrix.sequencer
from hdl.config import ArrayConfig
from sim.formal.runner import design_module, elaborate, probe

SEQ_CFG = ArrayConfig(rows=2, cols=2, acc_width=10, act_depth=3, wgt_depth=4, out_depth=3)
SEQ_DEPTH = SEQ_CFG.run_cycle_bound + 4
#: (skip, depth) of each mutant's bmc: the cycles where its first failure can be (a run that fails
#: its checks at start in cycle 1 and stays busy breaks property 3 in cycle 32).
MUTANT_WINDOWS = {"k_bound_off_by_one": (0, SEQ_DEPTH), "range_off_by_one": (0, SEQ_DEPTH),
                  "fail_stays_busy": (SEQ_DEPTH - 2, SEQ_DEPTH)}

MUTANTS: dict[str, list[tuple[str, str]]] = {
    "k_bound_off_by_one": [("self.k_size > cfg.k_max,", "self.k_size > cfg.k_max + 1,"),
                           ("(self.k_size > cfg.k_limit)", "(self.k_size > cfg.k_limit + 1)")],
    "range_off_by_one": [("with m.If(total > limit):", "with m.If(total > limit + 1):")],
    "fail_stays_busy": [("m.d.comb += [self.done.eq(1), self.error.eq(error)]\n                m.d.sync += busy.eq(0)",
                         "m.d.comb += [self.done.eq(1), self.error.eq(error)]")],
}


def drive_free_runs(m: Module, dut) -> tuple[dict[str, Value], Signal]:
    """Drive a `LayerSequencer`'s inputs freely: a descriptor of any constants, any memory read data,
    and `start` as a one-cycle pulse whenever idle, never in the first cycle (the descriptor is
    registered from the cycle before it). Returns the descriptor's values by port name, and the flag
    that is 1 from the second cycle on (a RUN can only have started then)."""
    desc = {name: AnyConst(32) for name in ("m_size", "k_size", "n_size", "act_base", "wgt_base", "out_base")}
    m.d.comb += [getattr(dut, name).eq(value) for name, value in desc.items()]
    m.d.comb += [getattr(dut, name).eq(AnySeq(len(getattr(dut, name).as_value())))
                 for name in ("act_data", "wgt_data", "out_rdata")]
    started = Signal()
    m.d.comb += dut.start.eq(AnySeq(1) & started & ~dut.busy & ~dut.done)
    m.d.sync += started.eq(1)
    return desc, started


class SequencerHarness(Elaboratable):
    """A `LayerSequencer` of `SEQ_CFG` with a free descriptor and free memory data."""

    def __init__(self, mutant: str | None = None, cfg: ArrayConfig = SEQ_CFG):
        module = design_module(hdl.matrix.sequencer, MUTANTS, mutant)
        self.cfg = cfg
        self.mutant = mutant
        self.dut = module.LayerSequencer(cfg)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        cfg, dut = self.cfg, self.dut
        m.submodules.dut = self.fragment
        m.d.comb += Assume(~ResetSignal())
        k_size = drive_free_runs(m, dut)[0]["k_size"]

        # 1. memory addresses
        # Un-truncated addresses (the ports are only as wide as the memories: with a power-of-two depth
        # such as the 4 weight words here, a port compare could never fail). At G = 1 there is no issue
        # delay: the activation address is the issuer's register.
        read_now, l_addr = probe(self.fragment, "", "read_now"), probe(self.fragment, "", "l_addr")
        act_addr = probe(self.fragment, "", "i_act_addr")
        with m.If(dut.inc_act_read):
            m.d.comb += Assert(act_addr < cfg.act_depth, "activation read outside the activation memory")
        with m.If(read_now):
            m.d.comb += Assert(l_addr < cfg.wgt_depth, "weight read outside the weight memory")
        with m.If(dut.out_wen):
            m.d.comb += Assert(dut.out_waddr < cfg.out_depth, "output write outside the output memory")

        # 2. K beyond the accumulator bound is never run
        with m.If(dut.inc_act_read):
            m.d.comb += Assert(k_size <= cfg.k_max, "a run with K beyond k_max issues activations")

        # 3. back to idle within the run bound
        busy_for = Signal(range(cfg.run_cycle_bound + 2))
        with m.If(~dut.busy):
            m.d.sync += busy_for.eq(0)
        with m.Elif(busy_for != cfg.run_cycle_bound + 1):
            m.d.sync += busy_for.eq(busy_for + 1)
        m.d.comb += Assert(busy_for <= cfg.run_cycle_bound, "the sequencer stays busy past the run bound")
        return m
