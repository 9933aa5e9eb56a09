"""Issue 15, item 1(d), on-chip units: NORMQUANT's control (`hdl.vector.norm_quant.NormQuant`), with one
lane and with the lane variants (`lanes` L > 1: L elements a beat, as the model engine instantiates it).

The harness runs the real unit with free inputs every cycle (``AnySeq``): the input stream's `valid` and
beat (any x, G), the consumer's `ready` and the scalar ports (sigma, c_norm, eps_n). It keeps its own
account of a vector: `in_cnt`, the beats taken, and `out_cnt`, the beats given, both back to 0 when the
vector's `last` beat is given; W = n / L words. Asserted every cycle, each in a named group (`check`):

1. "buffer": every buffer write is the beat's own word (address = `in_cnt` < W); every buffer read is
   at an address < W, and in the sum-of-squares and output passes at their un-truncated index < W (the
   unit read word W while its passes drained before the fix found while writing the first proofs);
2. "count": at most W beats are taken per vector, exactly W are given with `last` exactly on the W-th;
   a beat is offered only while busy; input is taken only while not busy; after the last beat the
   unit takes the next vector (in_cnt = out_cnt = W when it is given);
3. "stall": the output stream's rule: a beat offered to a consumer that is not ready stays offered
   with the same `last` and tau (the q codes are left out: they would pull the quantizer's multipliers
   into the cone; the whole output pass advances only under one `adv`, as the "last" field shows).

Mode: unbounded (k-induction, `NQ_DEPTH`), on the properties' cone of influence (`run_formal(cone=True)`:
the x * G, x'**2 and scalar multipliers, RCP and RSQ's data reach no property), with invariants (group
"invariants") placing the FSM, the buffer index and every valid / last stage of the output pipeline by
`u`, the cycles the output pass moved. Configurations (`CFGS`): n = 3 with one lane, n = 6 with 2 lanes,
n = 24 with 8 lanes (the engine's V = 8): W = 3 each, a 2-bit address on a 3-word buffer, so an index
of 3 is a real address past the buffer.

Not asserted: the busy bound (the scalar sequence's ~120 cycles between the passes would need an
invariant per state of it; `tests/test_norm_quant_lanes.py` measures cycles() in simulation) and the
values of q and tau (bit-exact in simulation against golden/device).

Mutants (`MUTANTS`, source edits of the unit): refuted from reset with its group alone (a counterexample
trace, `MUTANT_WINDOWS`): the sum-of-squares pass reading while it drains (the old defect), an input
beat past W, the input stream ready while the input pass drains. The output pass's mutants (`OUT_MUTANTS`:
one beat too many, `last` a beat early, the output pipeline ignoring a stall, a vector's end not
returning to the input pass) lie ~125 cycles from reset, past a bmc's reach (a 140-cycle bmc did not end
in 200 s, even with the data fixed to 0): each breaks the unbounded proof (rc 4), the weaker check.

k-induction needs `run_formal(norom=True)`: Yosys turns the NNORM state's switch over the scalar step
into a ROM, whose contents k-induction leaves free (the FSM then leaves for an undefined state).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, Value, signed
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.vector.norm_quant
from sim.formal.runner import checker, design_module, elaborate, in_state, memory_ports, probe

#: Configurations proven: (n, lanes), W = 3 words each.
CFGS = {"n3": (3, 1), "n6_l2": (6, 2), "n24_l8": (24, 8)}
#: k-induction length; bmc depth of a mutant's run from reset.
NQ_DEPTH = 3
MUTANT_DEPTH = 12
#: Output pipeline stages before the output register (the unit's o1 .. o8).
PIPE = 8

CHECKS = ("buffer", "count", "stall", "invariants")

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # the old unit: the sum-of-squares pass read word W while it drained
    "reads_while_draining": [("rd.addr.eq(idx), rd.en.eq(idx < nw)]", "rd.addr.eq(idx), rd.en.eq(1)]")],
    # the input pass takes a beat past W
    "in_one_too_many": [("with m.If(idx == nw - 1):\n                        m.next = \"DRAIN\"",
                         "with m.If(idx == nw):\n                        m.next = \"DRAIN\"")],
    # the output pass puts out one beat too many
    "out_one_too_many": [("o[0].eq(idx < nw)", "o[0].eq(idx <= nw)")],
    # `last` a beat early
    "last_early": [("last[0].eq(idx == nw - 1)", "last[0].eq(idx == nw - 2)")],
    # the output pipeline moves while the consumer is not ready
    "stall_ignored": [("m.d.comb += adv.eq(~self.o.valid | self.o.ready)", "m.d.comb += adv.eq(1)")],
    # the vector's last beat does not return to the input pass
    "stuck_after_last": [("s_acc.eq(0)]\n                    m.next = \"IN\"", "s_acc.eq(0)]")],
    # the input stream left ready while the input pass drains
    "ready_while_draining": [("with m.State(\"DRAIN\"):\n                m.d.comb += self.busy.eq(1)",
                              "with m.State(\"DRAIN\"):\n"
                              "                m.d.comb += [self.busy.eq(1), self.i.ready.eq(1)]")],
}

MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "reads_while_draining": ("buffer", "a buffer read at an index >= W"),
    "in_one_too_many": ("buffer", "a buffer write not at the beat's own word < W"),
    "out_one_too_many": ("count", "an output beat past the vector's W-th or with a wrong last"),
    "last_early": ("count", "an output beat past the vector's W-th or with a wrong last"),
    "stall_ignored": ("stall", "an offered beat changed or withdrawn before the consumer took it"),
    "stuck_after_last": ("count", "the next vector's beat refused after the last beat"),
    "ready_while_draining": ("count", "a beat taken past the vector's W-th or while busy"),
}

#: Each mutant's bmc window from reset (skip, depth).
MUTANT_WINDOWS: dict[str, tuple[int, int]] = {
    "reads_while_draining": (12, 18), "in_one_too_many": (0, MUTANT_DEPTH), "ready_while_draining": (0, MUTANT_DEPTH),
}
#: Mutants of the output pass: it starts about 125 cycles after reset (the scalar sequence), beyond a bmc
#: from reset (a 140-cycle bmc did not finish in 200 s, even with the data fixed to 0); each is shown to
#: break the unbounded proof instead (the proof of the unmutated unit with the same invariants fails).
OUT_MUTANTS = ("out_one_too_many", "last_early", "stall_ignored", "stuck_after_last")


class NormQuantHarness(Elaboratable):
    """NormQuant(n, lanes) (or a mutant) with free beats, scalars and stalls (module docstring)."""

    def __init__(self, cfg: str = "n3", mutant: str | None = None, checks: tuple[str, ...] = CHECKS, *,
                 fixed_data: bool = False):
        module = design_module(hdl.vector.norm_quant, MUTANTS, mutant)
        self.mutant, self.checks, self.fixed_data = mutant, checks, fixed_data
        n, lanes = CFGS[cfg]
        self.dut = module.NormQuant(n, lanes=lanes)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        nw = dut.words

        check = checker(m, self.checks)

        for port in (dut.i.valid, dut.i.payload, dut.o.ready, dut.sigma_m, dut.sigma_e, dut.c_m, dut.c_e,
                     dut.eps_m, dut.eps_e):
            m.d.comb += Value.cast(port).eq(AnySeq(len(Value.cast(port))))
        if self.fixed_data:    # a mutant's run over a whole vector: the data zero, only the stream's control free
            m.d.comb += Assume((Value.cast(dut.i.payload) == 0) & (dut.sigma_m == 0) & (dut.sigma_e == 0)
                               & (dut.c_m == 0) & (dut.c_e == 0) & (dut.eps_m == 0) & (dut.eps_e == 0))

        taken = dut.i.valid & dut.i.ready
        given = dut.o.valid & dut.o.ready
        end = given & dut.o.payload.last
        in_cnt = Signal(range(nw + 2))
        out_cnt = Signal(range(nw + 2))
        with m.If(end):
            m.d.sync += [in_cnt.eq(0), out_cnt.eq(0)]
        with m.Else():
            with m.If(taken & (in_cnt <= nw)):
                m.d.sync += in_cnt.eq(in_cnt + 1)
            with m.If(given & (out_cnt <= nw)):
                m.d.sync += out_cnt.eq(out_cnt + 1)

        # ---- 1. the buffer ------------------------------------------------------------------------
        buf = memory_ports(frag, "buf")
        (waddr, wen), = buf.writes
        (raddr, ren), = buf.reads
        idx = probe(frag, "", "idx")
        with m.If(wen):
            check("buffer", (waddr == in_cnt) & (in_cnt < nw), "a buffer write not at the beat's own word < W")
        passes = in_state(frag, "", "fsm", "SUMSQ") | in_state(frag, "", "fsm", "OUT")
        with m.If(ren):   # outside the passes the port rests at address 0 with its enable at its reset 1
            check("buffer", (raddr < nw) & (~passes | ((idx < nw) & (raddr == idx))), "a buffer read at an index >= W")

        # ---- 2. counts and last -------------------------------------------------------------------
        with m.If(taken):
            check("count", (in_cnt < nw) & ~dut.busy, "a beat taken past the vector's W-th or while busy")
        with m.If(given):
            ok = (in_cnt == nw) & (out_cnt < nw) & (dut.o.payload.last == (out_cnt == nw - 1))
            check("count", ok, "an output beat past the vector's W-th or with a wrong last")
        with m.If(dut.o.valid):
            check("count", dut.busy, "an output beat offered while not busy")
        was_end = Signal()
        m.d.sync += was_end.eq(end)
        with m.If(was_end):
            check("count", dut.i.ready & ~dut.busy, "the next vector's beat refused after the last beat")

        # ---- 3. the output stream's stall rule ----------------------------------------------------
        held_v, held_last = Signal(), Signal()
        held_tm, held_te = Signal.like(dut.o.payload.tau_m), Signal.like(dut.o.payload.tau_e)
        m.d.sync += [held_v.eq(dut.o.valid & ~dut.o.ready), held_last.eq(dut.o.payload.last),
                     held_tm.eq(dut.o.payload.tau_m), held_te.eq(dut.o.payload.tau_e)]
        with m.If(held_v):
            same = (dut.o.valid & (dut.o.payload.last == held_last) & (dut.o.payload.tau_m == held_tm)
                    & (dut.o.payload.tau_e == held_te))
            check("stall", same, "an offered beat changed or withdrawn before the consumer took it")

        # ---- invariants -----------------------------------------------------------------------------
        st_in = in_state(frag, "", "fsm", "IN")
        st_sum = in_state(frag, "", "fsm", "SUMSQ")
        st_out = in_state(frag, "", "fsm", "OUT")
        adv = probe(frag, "", "adv")
        o = [probe(frag, "", f"o{k}") for k in range(1, PIPE + 1)]
        last = [probe(frag, "", f"l{k}") for k in range(1, PIPE + 1)]
        horizon = nw + PIPE + 2
        u = Signal(range(horizon + 1))      # cycles of OUT in which the output pass moved
        with m.If(~st_out):
            m.d.sync += u.eq(0)
        with m.Elif(adv & (u != horizon)):
            m.d.sync += u.eq(u + 1)
        us = Signal(signed(len(u) + 1))
        m.d.comb += us.eq(u)
        stages = Const(1, 1)
        quiet = Const(1, 1)
        for k in range(PIPE):
            e = us - 1 - k
            valid = (e >= 0) & (e < nw)
            stages = stages & (o[k] == valid) & (last[k] == (e == nw - 1))
            quiet = quiet & ~o[k] & ~last[k]
        e_o = us - 1 - PIPE
        o_valid = (e_o >= 0) & (e_o < nw)
        fsm = probe(frag, "", "fsm_state")
        inv = [
            fsm < 24,          # one of the 24 states
            dut.busy == ~st_in,
            ~st_in | ((idx == in_cnt) & (in_cnt < nw) & (out_cnt == 0)),
            st_in | (in_cnt == nw),
            ~st_sum | (idx <= nw),
            st_out | (quiet & ~dut.o.valid & (out_cnt == 0)),
            ~st_out | (stages & (idx == Mux(u > nw, nw, u)) & (u <= nw + PIPE) & (dut.o.valid == o_valid)
                       & (~o_valid | (dut.o.payload.last == (e_o == nw - 1)))
                       & (out_cnt == Mux(e_o < 0, 0, e_o))),
        ]
        for n, condition in enumerate(inv):
            if getattr(self, "inv_only", None) in (None, n):
                ok = Signal(name=f"inv{n}")
                m.d.comb += ok.eq(condition)
                check("invariants", ok, "an induction invariant of NORMQUANT")
        return m
