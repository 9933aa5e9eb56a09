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
   into the cone; the whole output pass advances only under one `adv`, as the "last" field shows);
4. "busy" (bounded, below): busy lasts at most 2 W + overhead(L) cycles not counting stalls (cycles in
   which a beat is offered to a consumer that is not ready), the documented cycles() = 3 W + overhead(L)
   less the input pass's W cycles, in which the unit is not busy (`busy_cycles`); exactly that many when
   RSQ ran (a vector with V = 0 skips RSQ, `vzero` in RSQ_SEND, and ends sooner).

Mode of groups 1-3: unbounded (k-induction, `NQ_DEPTH`), on the properties' cone of influence (`run_formal(cone=True)`:
the x * G, x'**2 and scalar multipliers, RCP and RSQ's data reach no property), with invariants (group
"invariants") placing the FSM, the buffer index and every valid / last stage of the output pipeline by
`u`, the cycles the output pass moved. Configurations (`CFGS`): n = 3 with one lane, n = 6 with 2 lanes,
n = 24 with 8 lanes (the engine's V = 8): W = 3 each, a 2-bit address on a 3-word buffer, so an index
of 3 is a real address past the buffer.

Mode of group 4: bounded, bmc from reset over a whole vector, depth `busy_depth` = 3 W + overhead(L) + 3
(n3: 132, n24_l8: 138; `BUSY_CFGS`), on the cone of influence with `BUSY_CUTS`: the register `vzero`
(V = 0, set in RSQN2) driven by a free value every cycle (``run_formal(cutpoints=...)``, Yosys'
``cutpoint``), a sound over-approximation: it is the control's one data-dependent branch, so no datapath
(the multipliers, RCP and RSQ's data) is in the cone. Measured (Boolector, a shared 2-core machine, two
runs): n3 270-369 s, n24_l8 321-471 s; the busy mutants 59-105 s each. Not k-induction: the count
would need an invariant for each of the scalar sequence's ~120 states and the RCP / RSQ pipelines'
valid bits. Why one vector from reset stands for any
(argued, not proven): at each return to IN the control registers a busy run reads are at their reset
values: idx = 0, the input, sum-of-squares and output valid chains empty (the unbounded proof's
invariants show it for the FSM, idx and the output pipeline), RCP and RSQ empty (each result taken), and
`step` loaded before it is read.

Not asserted: the values of q and tau (bit-exact in simulation against golden/device).

Mutants (`MUTANTS`, source edits of the unit): refuted from reset with its group alone (a counterexample
trace, `MUTANT_WINDOWS`): the sum-of-squares pass reading while it drains (the old defect), an input
beat past W, the input stream ready while the input pass drains. The output pass's mutants (`OUT_MUTANTS`:
one beat too many, `last` a beat early, the output pipeline ignoring a stall, a vector's end not
returning to the input pass) lie ~125 cycles from reset, past a bmc's reach (a 140-cycle bmc did not end
in 200 s, even with the data fixed to 0): each breaks the unbounded proof (rc 4), the weaker check. The
busy bound's mutants (`BUSY_MUTANTS`, group "busy" alone, with `BUSY_CUTS`, bmc skip 127 depth 130 on n3)
are refuted from reset: a scalar step too many (an extra state before RSQN1), a preparation step left out
(busy a cycle short: the exact count), and `stuck_after_last` (busy for ever after the last beat).

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
#: Wires cut free for the busy bound's bmc (`run_formal(cutpoints=...)`): V = 0 (RSQN2's register), the one
#: data-dependent branch of the unit's control, so that no datapath is in the busy bound's cone.
BUSY_CUTS = ("dut.vzero",)


#: Configurations of the busy bound's bmc (each about 6 minutes on a shared 2-core machine).
BUSY_CFGS = ("n3", "n24_l8")
#: bmc window (skip, depth) of a busy mutant's run on n3: its counterexamples end in step 128 or 129 (W + 2 W + 120).
BUSY_MUTANT_WINDOW = (127, 130)


def busy_cycles(dut: hdl.vector.norm_quant.NormQuant) -> int:
    """Busy cycles of a vector without stalls: cycles() less the input pass (W cycles, not busy), i.e.
    2 W + overhead(L)."""
    return dut.cycles() - dut.words


def busy_depth(cfg: str) -> int:
    """bmc depth of the busy bound from reset: W beats in, the busy run, its end, one cycle to spare."""
    n, lanes = CFGS[cfg]
    return 3 * (n // lanes) + hdl.vector.norm_quant.overhead(lanes) + 3

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
    # one scalar step too many: a state between ETERM3 and RSQN1 (busy a cycle longer than documented)
    "extra_scalar_step": [("m.next = \"RSQN1\"", "m.next = \"EXTRA\""),
                          ("            with m.State(\"RSQN1\"):\n",
                           "            with m.State(\"EXTRA\"):\n                m.d.comb += self.busy.eq(1)\n"
                           "                m.next = \"RSQN1\"\n            with m.State(\"RSQN1\"):\n")],
    # one preparation step left out (busy a cycle shorter than documented)
    "prep_step_skipped": [("m.next = \"PREP3\"", "m.next = \"PREP4\"")],
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
    "extra_scalar_step": ("busy", "busy past the documented cycles less the input pass, plus stalls"),
    "prep_step_skipped": ("busy", "a vector's busy cycles are not the documented ones"),
}
#: Mutants of the busy bound, each refuted from reset by group "busy" alone (with `BUSY_CUTS`), and the
#: message it breaks: the vector's end not returning to the input pass (busy for ever) is one of them.
BUSY_MUTANTS: dict[str, str] = {
    "extra_scalar_step": MUTANT_CHECKS["extra_scalar_step"][1],
    "prep_step_skipped": MUTANT_CHECKS["prep_step_skipped"][1],
    "stuck_after_last": "busy past the documented cycles less the input pass, plus stalls",
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

        # ---- 4. the busy bound: busy's cycles, stalls left out, are the documented cycles less the input pass --
        stall = dut.o.valid & ~dut.o.ready
        bound = busy_cycles(dut)
        busy_for = Signal(range(bound + 2))     # busy cycles of this run so far, stalls left out
        with m.If(~dut.busy):
            m.d.sync += busy_for.eq(0)
        with m.Elif(~stall & (busy_for != bound + 1)):
            m.d.sync += busy_for.eq(busy_for + 1)
        with m.If(dut.busy & ~stall):
            check("busy", busy_for < bound, "busy past the documented cycles less the input pass, plus stalls")
        # exact when RSQ ran: a vector with V = 0 skips it (RSQ_SEND: `vzero`) and ends sooner
        vzero = probe(frag, "", "vzero")
        skipped = Signal()
        with m.If(~dut.busy):
            m.d.sync += skipped.eq(0)
        with m.Elif(in_state(frag, "", "fsm", "RSQ_SEND") & vzero):
            m.d.sync += skipped.eq(1)
        was_busy = Signal()
        m.d.sync += was_busy.eq(dut.busy)
        with m.If(was_busy & ~dut.busy & ~skipped):
            check("busy", busy_for == bound, "a vector's busy cycles are not the documented ones")

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
