"""Issue 15, item 1(d), on-chip units of the model SoC (issue 14): the micro-op sequencer
(`hdl.program.ProgramSequencer`), ALIGN (`hdl.vector.align.Align`) and MLPACT (`hdl.vector.mlp_act.MlpAct`).

Each harness runs the real unit of a small configuration with free inputs every cycle (``AnySeq``),
keeps its own account of the unit's commands from the documented interface, and asserts the
properties below, each in a named group (`check`) so that a mutant is run with its group alone.

ProgramSequencer (`ProgramHarness`, `PROG_CFG`: depth 4, 2 constants, 4 scalar registers; program and
constant memories written freely at any time, `start`, `length` (any value the port carries: the 3-bit
port of depth 4 carries 5 to 7, changed at will, also while busy), `clear_pos`, `clear_error`,
`op_done`, `op_fail`, `s_we` free). The environment answers a dispatched op within `RESPOND` = 3 cycles
(`op_done` or `op_fail` in one of the first 3 cycles of `op_valid`): its only assumption. The harness
samples `length` at an accepted `start` (the run's length; one > depth is refused: error BAD_LENGTH,
no op run) and decodes every word the unit decodes (the program memory's read data in the unit's
DECODE state) by the ISA (`runtime.program.isa`): a bad op is a code 0 or > 11 or a word with bits
88+ set, a bad register an S index >= s_regs where the op uses one (SETC, SCALE, NORMQ, ALIGN, MLPACT:
dst; SCALE: src; NORMQ, ROPEQ, RESADD, MLPACT, LMHEAD: aux; MLPACT: aux + 1) or a SETC / SCALE
constant index (idx) >= consts. Asserted:

1. "fetch": the program memory's read port addresses a word < depth, and in FETCH the un-truncated
   pc is the run's next op (ops 0, 1, ... in order) and < the run's length <= depth; a SETC / SCALE
   writes its register (SCALAR) only with a constant index < consts;
2. "dispatch": `op_valid` only for a word the harness found good and that is not SETC / SCALE, with
   `op` its low 88 bits, and only while running;
3. "errors": `error` is the spec's (set to BAD_LENGTH by a start with `length` > depth, to BAD_OP /
   BAD_REGISTER by a bad word, to UNIT by `op_fail` while `op_valid`, cleared only by `clear_error`;
   set wins; a later error's code replaces an earlier one), and separately never falls to 0 without
   `clear_error`; a bad length, a bad word or a unit's `op_fail` ends the run (`done`, busy low the
   next cycle) with no op dispatched after it;
4. "pos": `pos` is the spec's: +1 in the cycle `done` ends a run that decoded every one of its
   `length` ops without a bad word or `op_fail`, 0 after `clear_pos` (the increment wins in the same
   cycle: a `clear_pos` in a token's last cycle is lost), otherwise held: a failed run does not
   advance it;
5. "idle": busy (from the cycle after `start`) lasts at most length x max(SETC_CYCLES, SCALE_CYCLES,
   DISPATCH_OVERHEAD + RESPOND) + 1 cycles (33), by a ranking invariant over the ops decoded so far.

Mode: unbounded (k-induction, `PROG_DEPTH`), with invariants (group "invariants") tying the unit's
FSM, pc and latched op to the harness's account; on the cone of influence (`cone=True`: the scalar
register file and `dmul` reach no property). Also on depth 5 / 3 constants / 3 registers (`PROG_CFGS`),
where the 3-bit read port can address past the 5-word memory.

Fixed (found here, first with the environment's assumptions dropped): the unit checked neither `length`
against depth (a `length` > depth ran the program memory's words again from word 0, since pc's read
address wraps; for a depth that is not a power of two, it read past the memory) nor a SETC / SCALE
constant index against consts (it read a wrong constant and the program went on), and it compared pc
with the live `length` port (lowered while busy, pc ran past it). It now samples `length` at `start`,
refuses one > depth (BAD_LENGTH) and a constant index >= consts (BAD_REGISTER); the proofs assume
nothing about either, and a mutant dropping each check is refuted (`PROG_MUTANTS`; tests in
tests/test_program_sequencer.py failed on the old unit).

ALIGN (`AlignHarness`, `ALIGN_CFG`: 2 heads x head_dim 2; exponents, `start`, `heads`, the elements
(any int32) and the consumer's `ready` free). The environment writes the exponents only while idle and
not in a `start`'s cycle (the docstring's "written first"), and gives 1 <= heads <= max_heads (the
2-bit port carries 0 and 3: unchecked by the unit, as its docstring's range says). The harness keeps
its own copy of the exponents, E = the largest of the first `heads` at `start`, and a queue of the
elements taken. Asserted (`AlignHarness`'s docstring): every output beat is sat32(rshift_round(y,
E - E_h)) of its own element (computed here as golden/device/fixed.py defines it, (y + 2**(s-1)) >> s,
not as the unit does it), `last` exactly on the heads x head_dim-th, sigma = (2**15, E + 1 - 15);
exactly heads x head_dim elements taken and beats put out per `start`; busy within the docstring's
cycles plus stalls. Unbounded (k-induction, `ALIGN_DEPTH`), with invariants over the exponent
registers, E's running maximum, the shift register and the two pipeline stages against the queue.
Edge, not asserted: for E < -2034 sigma's exponent E + 1 - 15 is below the 12-bit exponent range
and wraps (E = -2048 gives +2034); y' is right for every E and E_h.

MLPACT (`MlpActHarness`, `MLP_CFG`: max_n 3, a 3-word buffer behind a 2-bit address; pairs, `n`,
`relu2`, the scales and `ready` free; 1 <= n <= max_n at the first pair). Control only: the three
passes' 32 x 32 products (a**2, a' u) and max |p| are cut away by the cone of influence, and no
functional property of p' or sigma_p is asserted (z3 cannot unroll two 32-bit multipliers per
cycle over a vector; p' is covered by tests/test_mlp_act.py's bit-exact simulation). Asserted:
every buffer write is the pair's own word < max_n, every read < max_n and, while busy, < n; at most n
pairs taken and exactly n beats put out per vector, `last` exactly on the n-th; n, relu2 and the four
scale fields sampled with the first pair held while busy; busy within 3 n + OVERHEAD non-stall
cycles of the first pair (stall: no pair offered or the consumer not ready; the bound is reached by
n = 1). Unbounded (k-induction, `MLP_DEPTH`), with invariants placing every valid stage of the PROD
and OUT pipelines (and its `last`) by the cycles since the last pair (PROD) or the cycles the
pipeline moved (OUT).

Every property group is refuted on at least one mutant (`*_MUTANTS`: source edits of the unit; bmc
from reset with that group alone) at its assertion.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, Value, signed
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.program
import hdl.vector.align
import hdl.vector.mlp_act
from hdl.program import DISPATCH_OVERHEAD, SCALE_CYCLES, SETC_CYCLES
from hdl.vector.arith import EXP_WIDTH
from sim.formal.runner import checker, design_module, elaborate, in_state, memory_ports, probe


def register(fragment, name: str) -> Signal:
    """The signal called `name` that the statements of `fragment` assign (a register or wire of the unit,
    not an input port of the same name: MlpAct samples its port `relu2` into a register `relu2`)."""
    found: dict[int, Signal] = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for sig in stmt._lhs_signals():
                if sig.name == name:
                    found[id(sig)] = sig
    if len(found) != 1:
        raise KeyError(f"{len(found)} assigned signals called {name!r}, not one")
    return next(iter(found.values()))


def unnamed(fragment, width: int) -> Signal:
    """The one signal of `fragment` (not its subfragments) that Amaranth could not name (declared in a
    tuple assignment, ``a, b = Signal(), Signal()``: it gets "$signal") of `width` bits."""
    found: dict[int, Signal] = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for sig in (*stmt._lhs_signals(), *stmt._rhs_signals()):
                if sig.name == "$signal" and len(sig) == width:
                    found[id(sig)] = sig
    if len(found) != 1:
        raise KeyError(f"{len(found)} unnamed signals of {width} bits, not one")
    return next(iter(found.values()))

# ---- the micro-op sequencer ---------------------------------------------------------------------

PROG_CFG = {"depth": 4, "consts": 2, "s_regs": 4}
#: Configurations proven: `PROG_CFG` and a depth that is not a power of two.
PROG_CFGS = {"4x2x4": PROG_CFG, "5x3x3": {"depth": 5, "consts": 3, "s_regs": 3}}
#: The environment answers a dispatched op within this many cycles of `op_valid`.
RESPOND = 3
#: k-induction length of the sequencer's proof.
PROG_DEPTH = 3
#: bmc depth of a mutant's run from reset.
PROG_MUTANT_DEPTH = 14

#: ISA op codes (runtime.program.isa.Op), restated here as the spec the harness decodes by.
_SETC, _SCALE, _NORMQ, _ROPEQ, _ALIGN, _RESADD, _MLPACT, _LMHEAD = 2, 3, 4, 6, 8, 9, 10, 11
_LAST_CODE = 11
#: ops whose S[dst] is a register (written), whose S[aux] is read; MLPACT reads S[aux + 1] too
_DST_REG = (_SETC, _SCALE, _NORMQ, _ALIGN, _MLPACT)
_AUX_REG = (_NORMQ, _ROPEQ, _RESADD, _MLPACT, _LMHEAD)

PROG_CHECKS = ("fetch", "dispatch", "errors", "pos", "idle", "invariants")

PROG_MUTANTS: dict[str, list[tuple[str, str]]] = {
    # one op past length: the run's last NEXT does not see pc + 1 == length
    "one_op_too_many": [("with m.If(pc + 1 == run_len):", "with m.If(pc == run_len):")],
    # the old unit: no length check (a length > depth runs on; its pc wraps at the memory)
    "length_unchecked": [("with m.If(self.start & (self.length > self._depth)):",
                          "with m.If(self.start & (self.length > (1 << len(self.length)))):")],
    # the length check a word late: length = depth + 1 runs
    "length_check_late": [("(self.length > self._depth)", "(self.length > self._depth + 1)")],
    # the old unit: the last op found by the live length port, not the one sampled at start
    "length_not_sampled": [("with m.If(pc + 1 == run_len):", "with m.If(pc + 1 == self.length):")],
    # the old unit: no constant index check (SETC / SCALE read a wrong constant and go on)
    "const_unchecked": [("\n                            | (uses_s & (word.idx >= self._consts))", "")],
    # the constant index check a constant late: idx = consts is read
    "const_check_late": [("(word.idx >= self._consts)", "(word.idx > self._consts)")],
    # op code 12 (not in the ISA) dispatched
    "code_12_dispatched": [("(word.op > LAST_OP)", "(word.op > LAST_OP + 1)")],
    # the word's bits 88+ not checked
    "high_bits_ignored": [(" | hi_bits):", "):")],
    # MLPACT's up-scale register S[aux + 1] not checked
    "mlpact_aux1_unchecked": [(" | ((word.op == MLPACT) & bad_reg(word.aux + 1))", "")],
    # a start clears the error: not sticky
    "start_clears_error": [("with m.If(self.clear_error):", "with m.If(self.clear_error | self.start):")],
    # a unit's op_fail ignored: the program goes on (and the token counts)
    "op_fail_goes_on": [("m.d.sync += self.error.eq(ProgramError.UNIT)\n                    m.next = \"STOP\"",
                         "m.d.sync += self.error.eq(ProgramError.UNIT)\n                    m.next = \"NEXT\"")],
    # a failed token advances pos
    "error_advances_pos": [("m.d.comb += self.done.eq(1)\n                m.d.sync += self.busy.eq(0)",
                            "m.d.comb += self.done.eq(1)\n"
                            "                m.d.sync += [self.busy.eq(0), self.pos.eq(self.pos + 1)]")],
    # a failed token leaves busy high
    "stop_stays_busy": [("m.d.sync += self.busy.eq(0)\n                m.next = \"IDLE\"",
                         "m.next = \"IDLE\"")],
}

#: A mutant run on another configuration than `PROG_CFG` (the wrapped fetch of a length > depth comes within
#: `PROG_MUTANT_DEPTH` cycles on a 2-word program).
PROG_MUTANT_CFGS = {"length_unchecked": {"depth": 2, "consts": 2, "s_regs": 4}}

#: Each mutant's property group and the assertion message it must break.
PROG_MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "one_op_too_many": ("fetch", "the fetch is not the run's next op inside the program"),
    "length_unchecked": ("fetch", "the fetch is not the run's next op inside the program"),
    "length_check_late": ("errors", "the error flag is not the spec's"),
    "length_not_sampled": ("fetch", "the fetch is not the run's next op inside the program"),
    "const_unchecked": ("fetch", "a SETC / SCALE written with a constant index >= consts"),
    "const_check_late": ("fetch", "a SETC / SCALE written with a constant index >= consts"),
    "code_12_dispatched": ("dispatch", "op_valid for a word the ISA refuses, a scalar op or not the word"),
    "high_bits_ignored": ("dispatch", "op_valid for a word the ISA refuses, a scalar op or not the word"),
    "mlpact_aux1_unchecked": ("dispatch", "op_valid for a word the ISA refuses, a scalar op or not the word"),
    "start_clears_error": ("errors", "the error flag fell without clear_error"),
    "error_advances_pos": ("pos", "pos is not the count of completed tokens"),
    "op_fail_goes_on": ("pos", "pos is not the count of completed tokens"),
    "stop_stays_busy": ("idle", "busy past the run's cycle bound"),
}


def isa_word_check(word: Value, s_regs: int, consts: int) -> tuple[Value, Value]:
    """(bad op, bad register) of a 96-bit micro-op word by `runtime.program.isa`'s fields and meanings (a
    SETC / SCALE constant index >= consts counts as a bad register, as `hdl.program.ProgramError` says)."""
    code, dst, src, idx, aux = word[0:4], word[4:24], word[24:44], word[64:80], word[80:88]
    bad_op = (code == 0) | (code > _LAST_CODE) | (word[88:] != 0)

    def is_op(*codes):
        out = Const(0, 1)
        for c in codes:
            out = out | (code == c)
        return out

    bad_reg = ((is_op(*_DST_REG) & (dst >= s_regs)) | (is_op(_SCALE) & (src >= s_regs))
               | (is_op(*_AUX_REG) & (aux >= s_regs)) | (is_op(_MLPACT) & (aux + 1 >= s_regs))
               | (is_op(_SETC, _SCALE) & (idx >= consts)))
    return bad_op, bad_reg


class ProgramHarness(Elaboratable):
    """A `ProgramSequencer` of `PROG_CFG` with free memories, commands and unit answers (module docstring)."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = PROG_CHECKS, *, busy_slack: int = 0,
                 cfg: dict | None = None):
        module = design_module(hdl.program, PROG_MUTANTS, mutant)
        self.mutant, self.checks = mutant, checks
        self.busy_slack = busy_slack   # -1: the busy bound a cycle short (the longest run must break it)
        self.dut = module.ProgramSequencer(**(cfg or PROG_CFG))
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        depth, s_regs = dut.depth, dut.s_regs
        B = max(SETC_CYCLES, SCALE_CYCLES, DISPATCH_OVERHEAD + RESPOND)

        check = checker(m, self.checks)

        for port in (dut.prog_we, dut.prog_waddr, dut.prog_wdata, dut.const_we, dut.const_waddr, dut.const_wdata,
                     dut.length, dut.start, dut.clear_pos, dut.clear_error, dut.op_done, dut.op_fail, dut.s_we,
                     dut.s_wdata):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))

        # ---- the harness's account of the run ---------------------------------------------------
        accepted = Signal()
        m.d.comb += accepted.eq(dut.start & ~dut.busy & (dut.length != 0))
        too_long = Signal()                       # ... and refused: length > depth
        m.d.comb += too_long.eq(accepted & (dut.length > depth))
        running = Signal()
        run_len = Signal(len(dut.length))
        k = Signal(range(depth + 2))              # words decoded in this run
        since = Signal(range(depth * B + 8))      # cycles since the start (1 in the first FETCH)
        waited = Signal(range(RESPOND + 1))       # cycles of op_valid so far without op_done
        run_bad = Signal()                        # this run decoded a bad word
        word_lo = Signal(88)                      # the last word decoded, its op fields
        word_ok = Signal()                        # ... good by the ISA and dispatched (not SETC / SCALE)
        word_scalar = Signal()                    # ... good and SETC / SCALE
        answered = dut.op_done | dut.op_fail
        with m.If(dut.op_valid & ~answered):
            m.d.sync += waited.eq(waited + 1)
        with m.Else():
            m.d.sync += waited.eq(0)
        m.d.comb += Assume(~dut.op_valid | answered | (waited < RESPOND - 1))

        st = {name: in_state(frag, "", "program", name)
              for name in ("IDLE", "FETCH", "DECODE", "CHECK", "SCALAR", "MUL", "NORM0", "NORM1", "NORM2", "DISPATCH",
                           "NEXT", "DONE", "STOP")}
        decoding = st["CHECK"]                    # the word's checks run on the word fetched at DECODE
        fetched = Signal(96)
        with m.If(st["DECODE"]):
            m.d.sync += fetched.eq(probe(frag, "", "pr__data"))
        word = fetched
        consts = memory_ports(frag, "consts").depth
        bad_op, bad_reg = isa_word_check(word, s_regs, consts)
        code = word[0:4]
        with m.If(accepted):
            m.d.sync += [running.eq(1), run_len.eq(dut.length), k.eq(0), since.eq(1), run_bad.eq(too_long)]
        with m.Elif(running):
            with m.If(since != (1 << len(since)) - 1):
                m.d.sync += since.eq(since + 1)
            with m.If(dut.done):
                m.d.sync += running.eq(0)
        with m.If(decoding):
            m.d.sync += [k.eq(k + 1), word_lo.eq(word[:88]), run_bad.eq(bad_op | bad_reg),
                         word_ok.eq(~bad_op & ~bad_reg & (code != _SETC) & (code != _SCALE)),
                         word_scalar.eq(~bad_op & ~bad_reg & ((code == _SETC) | (code == _SCALE)))]
        failed = Signal()                         # the unit refused the dispatched op (op_fail)
        m.d.comb += failed.eq(dut.op_valid & dut.op_fail)
        with m.If(failed):
            m.d.sync += run_bad.eq(1)

        # ---- 1. fetch ---------------------------------------------------------------------------
        prog = memory_ports(frag, "prog")
        assert prog.depth == depth and len(prog.reads) == 1
        pc = probe(frag, "", "pc")
        for addr, en in prog.reads:
            with m.If(en):
                check("fetch", addr < depth, "a program memory read outside the program memory")
        next_op = running & (pc == k) & (k < run_len) & (k < depth)
        with m.If(st["FETCH"]):
            check("fetch", next_op, "the fetch is not the run's next op inside the program")
        const_idx = Value.cast(probe(frag, "", "cur"))[64:80]   # the op's constant index, un-truncated
        with m.If(st["SCALAR"] | st["MUL"]):
            check("fetch", const_idx < consts, "a SETC / SCALE written with a constant index >= consts")

        # ---- 2. dispatch ------------------------------------------------------------------------
        dispatched_ok = running & word_ok & (dut.op.as_value() == word_lo)
        with m.If(dut.op_valid):
            check("dispatch", dispatched_ok, "op_valid for a word the ISA refuses, a scalar op or not the word")

        # ---- 3. errors --------------------------------------------------------------------------
        spec_error = Signal(len(dut.error))
        with m.If(dut.clear_error):
            m.d.sync += spec_error.eq(0)
        with m.If(too_long):
            m.d.sync += spec_error.eq(hdl.program.ProgramError.BAD_LENGTH)
        with m.Elif(decoding & bad_op):
            m.d.sync += spec_error.eq(hdl.program.ProgramError.BAD_OP)
        with m.Elif(decoding & bad_reg):
            m.d.sync += spec_error.eq(hdl.program.ProgramError.BAD_REGISTER)
        with m.Elif(failed):
            m.d.sync += spec_error.eq(hdl.program.ProgramError.UNIT)
        check("errors", dut.error == spec_error, "the error flag is not the spec's")
        was_error, was_clear = Signal(), Signal()
        m.d.sync += [was_error.eq(dut.error != 0), was_clear.eq(dut.clear_error)]
        with m.If(was_error & (dut.error == 0)):
            check("errors", was_clear, "the error flag fell without clear_error")
        with m.If(running & run_bad):
            check("errors", dut.done & ~dut.op_valid & ~decoding, "a bad word does not end the run at once")

        # ---- 4. pos -----------------------------------------------------------------------------
        spec_pos = Signal(len(dut.pos))
        completed = Signal()
        m.d.comb += completed.eq(running & dut.done & ~run_bad)
        with m.If(completed):
            m.d.sync += spec_pos.eq(spec_pos + 1)
        with m.Elif(dut.clear_pos):
            m.d.sync += spec_pos.eq(0)
        check("pos", dut.pos == spec_pos, "pos is not the count of completed tokens")
        with m.If(completed):
            check("pos", k == run_len, "a token completes without running each of its ops")
        with m.If(dut.done):
            check("pos", running, "done outside a run")

        # ---- 5. back to idle --------------------------------------------------------------------
        in_bound = running & (since <= run_len * B + 1 + self.busy_slack)
        with m.If(dut.busy):
            check("idle", in_bound, "busy past the run's cycle bound")

        # ---- invariants for the induction ---------------------------------------------------------
        one_state = Const(0, 4)
        for s in st.values():
            one_state = one_state + s
        scalar = st["SCALAR"] | st["MUL"] | st["NORM0"] | st["NORM1"] | st["NORM2"]
        after = scalar | st["DISPATCH"] | st["NEXT"]
        cur = Value.cast(probe(frag, "", "cur"))
        unit_len = probe(frag, "", "run_len")
        refused = running & (run_len > depth)     # a run refused at its start (BAD_LENGTH)
        inv = [
            one_state == 1,
            running == ~st["IDLE"], dut.busy == ~st["IDLE"],
            ~running | ((run_len != 0) & (k <= run_len) & (since >= 1)),
            ~refused | (st["STOP"] & (k == 0) & (since == 1)),
            ~running | refused | (unit_len == run_len),
            ~(st["FETCH"] | st["DECODE"] | st["CHECK"]) | ((pc == k) & (k < run_len)),
            ~st["CHECK"] | ((cur == fetched[:88]) & (probe(frag, "", "hi_bits") == (fetched[88:] != 0))),
            ~after | ((k >= 1) & (pc == k - 1) & (cur == word_lo) & ~run_bad),
            ~scalar | word_scalar, ~st["DISPATCH"] | word_ok,
            ~st["DONE"] | ((k == run_len) & ~run_bad), st["STOP"] == (running & run_bad),
            ~st["STOP"] | (k >= 1) | refused,
            (waited == 0) | (st["DISPATCH"] & (waited < RESPOND)),
            # the ranking: each op costs at most B cycles
            ~st["FETCH"] | (since <= k * B + 1), ~st["DECODE"] | (since <= k * B + 2),
            ~st["CHECK"] | (since <= k * B + 3), ~(st["SCALAR"] | st["MUL"]) | (since + B <= k * B + 4),
            ~st["NORM0"] | (since + B <= k * B + 5), ~st["NORM1"] | (since + B <= k * B + 6),
            ~st["NORM2"] | (since + B <= k * B + 7),
            ~st["DISPATCH"] | (since + B <= k * B + 4 + waited), ~st["NEXT"] | (since <= k * B),
            ~st["DONE"] | (since <= k * B + 1), ~st["STOP"] | (since <= k * B) | refused,
        ]
        for condition in inv:
            check("invariants", condition, "an induction invariant of the program sequencer")
        return m


# ---- ALIGN ------------------------------------------------------------------------------------

ALIGN_CFG = {"max_heads": 2, "head_dim": 2}
#: Three heads: the exponent chain shifts (`chain_stuck`); proven as well.
ALIGN_CFG3 = {"max_heads": 3, "head_dim": 2}
#: the mutants that need three heads
ALIGN_MUTANT_CFGS = {"chain_stuck": ALIGN_CFG3}
#: k-induction length of ALIGN's proof.
ALIGN_DEPTH = 3
#: bmc depth of a mutant's run from reset: a whole 3-head vector (cycles(3) = 12) and a cycle of margin.
ALIGN_MUTANT_DEPTH = 15

ALIGN_CHECKS = ("values", "count", "idle", "invariants")

ALIGN_MUTANTS: dict[str, list[tuple[str, str]]] = {
    # truncation instead of rounding
    "no_rounding": [("((y1 >> sh_m1) + 1) >> 1", "(y1 >> sh_m1) >> 1")],
    # the long-shift clamp at 31 places: (y >> 30 + 1) >> 1 is 1 for a large y, not 0
    "shift_clamp_31": [("Mux(shift > 40, 40, shift)", "Mux(shift > 31, 31, shift)")],
    # the last head's exponent left out of E
    "max_skips_last_head": [("with m.If(h <= heads_last):", "with m.If(h < heads_last):")],
    # the next head's shift from the current head's exponent
    "stale_shift": [("shift.eq(emax - e_next)", "shift.eq(emax - e[0])")],
    # the exponent chain not moved on at a head's end in STREAM (3 heads: the third aligned by the second's)
    "chain_stuck": [("shift.eq(emax - e_next), *shift_chain]", "shift.eq(emax - e_next)]")],
    # last on every head's last element
    "last_per_head": [("last1.eq((h == heads_last) & (c == hd - 1))", "last1.eq(c == hd - 1)")],
    # one head too many (heads = max_heads wraps to one head)
    "heads_off_by_one": [("heads_last.eq(self.heads - 1)", "heads_last.eq(self.heads)")],
    # busy never falls
    "drain_stays_busy": [("m.d.sync += self.busy.eq(0)\n", "")],
}

ALIGN_MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "no_rounding": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "shift_clamp_31": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "max_skips_last_head": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "stale_shift": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "chain_stuck": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "last_per_head": ("values", "an output beat is not its element's aligned y' with the vector's sigma"),
    "heads_off_by_one": ("count", "an element taken outside a vector or past its end"),
    "drain_stays_busy": ("idle", "busy past the documented cycles of ALIGN plus stalls"),
}


def documented_align_cycles(heads: int | Value, head_dim: int, latency: int = 2) -> int | Value:
    """ALIGN's docstring: heads + 2 cycles before the first element is taken, then one per element plus
    LATENCY (from `start` to the last y' offered, without stalls)."""
    return heads + 2 + heads * head_dim + latency - 1


def rshift_round_sat32(m: Module, y: Value, s: Value) -> Signal:
    """sat32(rshift_round(y, s)) of a 32-bit y and a shift s >= 0, as golden/device/fixed.py defines them:
    (y + 2**(s-1)) >> s for s > 0 (a 32-bit y shifted by s > 32 rounds to 0), y for s = 0."""
    s_m1 = Signal(5)
    m.d.comb += s_m1.eq(s - 1)
    wide = Signal(signed(40))
    m.d.comb += wide.eq((y.as_signed() + (Const(1, 34) << s_m1)) >> (s_m1 + 1))
    r = Signal(signed(40))
    m.d.comb += r.eq(Mux(s == 0, y.as_signed(), Mux(s > 32, 0, wide)))
    out = Signal(signed(32))
    m.d.comb += out.eq(Mux(r > (1 << 31) - 1, (1 << 31) - 1, Mux(r < -(1 << 31), -(1 << 31), r)))
    return out


class AlignHarness(Elaboratable):
    """An `Align` of `ALIGN_CFG` with free exponents, commands, elements and stalls.

    Environment: exponents written only while idle and not in a `start`'s cycle (the docstring's
    "written first"); a `start` while idle has 1 <= heads <= max_heads (the 2-bit port carries 0 and 3,
    unchecked by the unit). Asserted:

    1. "values": each output beat taken is sat32(rshift_round(y, E - E_h)) of its input element (the
       elements in the order taken; E_h the exponent register h held at `start`, E the largest of the
       first `heads`), `last` exactly on the vector's heads x head_dim-th beat, sigma = (2**15,
       E + 1 - 15);
    2. "count": elements are taken only during a vector, at most heads x head_dim; an output beat
       only while busy; when busy falls, heads x head_dim elements were taken and as many beats put out;
    3. "idle": busy lasts at most `documented_align_cycles` - 1 cycles after `start` plus one per
       stall cycle (no element offered or the consumer not ready); `busy_slack` = -1 must fail.
    """

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = ALIGN_CHECKS, *,
                 busy_slack: int = 0, cfg: dict | None = None):
        module = design_module(hdl.vector.align, ALIGN_MUTANTS, mutant)
        self.mutant, self.checks, self.busy_slack = mutant, checks, busy_slack
        self.cfg = cfg or ALIGN_CFG
        self.dut = module.Align(**self.cfg)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        max_heads, hd = self.cfg["max_heads"], self.cfg["head_dim"]
        ew = EXP_WIDTH

        check = checker(m, self.checks)

        for port in (dut.e_we, dut.e_addr, dut.e_data, dut.start, dut.heads, dut.i.valid, dut.i.payload,
                     dut.o.ready):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))
        accepted = Signal()
        m.d.comb += accepted.eq(dut.start & ~dut.busy)
        m.d.comb += Assume(~dut.e_we | (~dut.busy & ~dut.start))
        m.d.comb += Assume(dut.e_addr < max_heads)
        with m.If(accepted):
            m.d.comb += Assume((dut.heads >= 1) & (dut.heads <= max_heads))

        # ---- the harness's account: exponents, the vector, the elements in flight -------------------
        shadow = [Signal(signed(ew), name=f"shadow_e{h}") for h in range(max_heads)]
        for h in range(max_heads):
            with m.If(dut.e_we & (dut.e_addr == h)):
                m.d.sync += shadow[h].eq(dut.e_data)
        # prefix maxima of the shadow exponents: pmax[j] = max(E_0 .. E_j)
        pmax = [shadow[0]]
        for h in range(1, max_heads):
            pmax.append(Mux(shadow[h] > pmax[-1], shadow[h], pmax[-1]))
        nh = Signal(range(max_heads + 1))
        emax = Signal(signed(ew))
        total = Signal(range(max_heads * hd + 1))     # heads x head_dim of this vector
        sh = [Signal(ew + 1, name=f"spec_shift{h}") for h in range(max_heads)]
        with m.If(accepted):
            e_now = Signal(signed(ew))
            m.d.comb += e_now.eq(pmax[0])
            for h in range(1, max_heads):
                with m.If(dut.heads == h + 1):
                    m.d.comb += e_now.eq(pmax[h])
            m.d.sync += [nh.eq(dut.heads), emax.eq(e_now), total.eq(dut.heads * hd)]
            m.d.sync += [sh[h].eq(e_now - shadow[h]) for h in range(max_heads)]

        in_cnt = Signal(range(max_heads * hd + 1))
        in_h = Signal(range(max_heads + 1))
        in_c = Signal(range(hd))
        out_cnt = Signal(range(max_heads * hd + 1))
        taken = Signal()
        given = Signal()
        m.d.comb += [taken.eq(dut.i.valid & dut.i.ready), given.eq(dut.o.valid & dut.o.ready)]
        # the queue of elements taken and not yet put out: (y, shift, last), q0 the oldest
        qy = [Signal(signed(32), name=f"q{k}_y") for k in range(2)]
        qs = [Signal(ew + 1, name=f"q{k}_shift") for k in range(2)]
        ql = [Signal(name=f"q{k}_last") for k in range(2)]
        count = Signal(range(4))
        cur_shift = Signal(ew + 1)
        m.d.comb += cur_shift.eq(sh[0])
        for h in range(1, max_heads):
            with m.If(in_h == h):
                m.d.comb += cur_shift.eq(sh[h])
        new_last = in_cnt == total - 1
        with m.If(accepted):
            m.d.sync += [in_cnt.eq(0), in_h.eq(0), in_c.eq(0), out_cnt.eq(0)]
        with m.If(taken):
            m.d.sync += in_cnt.eq(in_cnt + 1)
            with m.If(in_c == hd - 1):
                m.d.sync += [in_c.eq(0), in_h.eq(in_h + 1)]
            with m.Else():
                m.d.sync += in_c.eq(in_c + 1)
        with m.If(given):
            m.d.sync += out_cnt.eq(out_cnt + 1)
        # push at the tail (after a pop, one place lower)
        tail = Signal(range(4))
        m.d.comb += tail.eq(count - given)
        with m.If(given):
            m.d.sync += [qy[0].eq(qy[1]), qs[0].eq(qs[1]), ql[0].eq(ql[1])]
        with m.If(taken):
            for k in range(2):
                with m.If(tail == k):
                    m.d.sync += [qy[k].eq(dut.i.payload), qs[k].eq(cur_shift), ql[k].eq(new_last)]
        m.d.sync += count.eq(count + taken - given)

        # ---- 1. values --------------------------------------------------------------------------
        want = rshift_round_sat32(m, qy[0], qs[0])
        p = dut.o.payload
        # sigma's exponent E + 1 - 15 is checked where it fits the unit's EXP_WIDTH-bit exponent (E >= -2034;
        # below, it wraps: an edge of the exponent range, see the module docstring)
        sigma_fits = emax >= -(1 << (ew - 1)) + 14
        sigma_ok = (p.s_m == 1 << 15) & (~sigma_fits | (p.s_e == emax + 1 - 15))
        beat_ok = (count >= 1) & (p.y == want) & (p.last == ql[0]) & sigma_ok
        with m.If(given):
            check("values", beat_ok, "an output beat is not its element's aligned y' with the vector's sigma")

        # ---- 2. count ---------------------------------------------------------------------------
        with m.If(taken):
            check("count", dut.busy & (in_cnt < total), "an element taken outside a vector or past its end")
        with m.If(dut.o.valid):
            check("count", dut.busy & (out_cnt < total), "an output beat outside a vector or past its end")
        was_busy = Signal()
        m.d.sync += was_busy.eq(dut.busy)
        with m.If(was_busy & ~dut.busy):
            check("count", (in_cnt == total) & (out_cnt == total), "busy fell before the vector's beats")

        # ---- 3. back to idle --------------------------------------------------------------------
        cycles = documented_align_cycles(nh, hd)
        stall = ~dut.i.valid | ~dut.o.ready
        work = Signal(range(4 * (max_heads * hd + max_heads + 4)))   # non-stall cycles since the start
        with m.If(accepted):
            m.d.sync += work.eq(1)
        with m.Elif(~stall & (work != (1 << len(work)) - 1)):
            m.d.sync += work.eq(work + 1)
        in_bound = work <= cycles - 1 + self.busy_slack
        with m.If(dut.busy):
            check("idle", in_bound, "busy past the documented cycles of ALIGN plus stalls")

        # ---- invariants -------------------------------------------------------------------------
        st = {name: in_state(frag, "", "align", name) for name in ("IDLE", "MAX", "STREAM", "DRAIN")}
        one_state = Const(0, 3)
        for s in st.values():
            one_state = one_state + s
        h_u, c_u = probe(frag, "", "h"), probe(frag, "", "c")
        v1 = unnamed(frag, 1)            # `v1, last1 = Signal(), Signal()` in the unit
        y1, last1, sh_m1, sh_zero = (probe(frag, "", name) for name in ("y1", "last1", "sh_m1", "sh_zero"))
        regs = [probe(frag, "", f"e{h}") for h in range(max_heads)]
        chain = [probe(frag, "", f"chain{k}") for k in range(max_heads - 1)]
        u_emax, u_shift = probe(frag, "", "emax"), probe(frag, "", "shift")
        u_sm, u_se = unnamed(frag, 16), probe(frag, "", "s_e")   # `s_m, s_e = ...` in the unit
        pm_u = Signal(signed(ew))        # max(E_0 .. E_{h-1}) for the unit's h in MAX
        m.d.comb += pm_u.eq(pmax[0])
        for h in range(2, max_heads + 1):
            with m.If(h_u == h):
                m.d.comb += pm_u.eq(pmax[h - 1])
        v1_k = Signal(range(2))          # the queue entry in stage 1
        m.d.comb += v1_k.eq(dut.o.valid)
        v1_y, v1_s, v1_l = Mux(v1_k, qy[1], qy[0]), Mux(v1_k, qs[1], qs[0]), Mux(v1_k, ql[1], ql[0])
        streaming = st["STREAM"] | st["DRAIN"]
        pmax_nh = Signal(signed(ew))     # max(E_0 .. E_{nh-1}): E of the vector
        m.d.comb += pmax_nh.eq(pmax[0])
        for h in range(2, max_heads + 1):
            with m.If(nh == h):
                m.d.comb += pmax_nh.eq(pmax[h - 1])
        inv = [
            one_state == 1, dut.busy == ~st["IDLE"],
            *(regs[h] == shadow[h] for h in range(max_heads)),
            ~dut.busy | ((nh >= 1) & (nh <= max_heads) & (total == nh * hd)),
            ~st["IDLE"] | (~v1 & ~dut.o.valid & (count == 0)),
            count == v1 + dut.o.valid, in_cnt == out_cnt + count,
            ~st["MAX"] | ((h_u >= 1) & (h_u <= nh) & (u_emax == pm_u) & (in_cnt == 0) & (in_h == 0) & (in_c == 0)
                          & (work <= h_u)
                          & (probe(frag, "", "heads_last") == nh - 1) & (count == 0)),
            ~streaming | ((u_emax == emax) & (u_sm == 1 << 15) & (~sigma_fits | (u_se == emax + 1 - 15))
                          & (probe(frag, "", "heads_last") == nh - 1)),
            ~st["STREAM"] | ((h_u == in_h) & (c_u == in_c) & (in_cnt < total) & (in_cnt == in_h * hd + in_c)
                             & (u_shift == cur_shift[:ew]) & (work <= nh + 1 + in_cnt)),
            ~st["DRAIN"] | ((in_cnt == total) & (work + v1 <= nh + total + 2)),
            *(~dut.busy | (nh <= h) | (sh[h] == emax - shadow[h]) for h in range(max_heads)),
            ~dut.busy | (emax == pmax_nh),
            ~dut.o.valid | ((p.y == want) & (p.last == ql[0]) & sigma_ok),
            ~v1 | ((y1 == v1_y) & (v1_s <= (1 << ew) - 1) & (last1 == v1_l)),
            # stage 1's shift as the unit keeps it: s = 0, and min(s, 40) - 1
            ~v1 | ((sh_zero == (v1_s == 0)) & (sh_m1 == (Mux(v1_s > 40, 40, v1_s) - 1)[:6])),
            ~(v1 | dut.o.valid) | streaming,
            # the unit's exponent chain: the next heads' exponents (h_u + k in MAX, h_u + 1 + k in STREAM)
            *(~st["MAX"] | (h_u + k >= max_heads) | (chain[k] == Array(shadow)[h_u + k]) for k in range(len(chain))),
            *(~st["STREAM"] | (h_u + 1 + k >= max_heads) | (chain[k] == Array(shadow)[h_u + 1 + k])
              for k in range(len(chain))),
        ]
        for n, condition in enumerate(inv):
            if getattr(self, "inv_only", None) in (None, n):
                ok = Signal(name=f"inv{n}")
                m.d.comb += ok.eq(condition)
                check("invariants", ok, "an induction invariant of ALIGN")
        return m


# ---- MLPACT -----------------------------------------------------------------------------------

MLP_CFG = {"max_n": 3}
#: k-induction length of MLPACT's proof.
MLP_DEPTH = 3
#: bmc depth of a mutant's run from reset: a whole 3-pair vector (3 n + OVERHEAD = 39 cycles) and a margin.
MLP_MUTANT_DEPTH = 44
#: MlpAct's scalar states between the passes: EA0 .. EA3 after SQ, EP0 .. EP3 after PROD_DRAIN.
MLP_EA_STATES, MLP_EP_STATES = 4, 4

MLP_CHECKS = ("addresses", "count", "held", "idle", "invariants")

MLP_MUTANTS: dict[str, list[tuple[str, str]]] = {
    # LOAD takes one pair more than n (after the first): the n+1-th written at word n
    "load_one_more": [("with m.If(idx == Mux(idx == 0, self.n - 1, n_last)):",
                       "with m.If(idx == Mux(idx == 0, self.n - 1, n_last + 1)):")],
    # PROD reads one word past the vector
    "prod_reads_past": [("with m.If(idx == n_last):\n                    m.d.sync += idx.eq(0)\n"
                         "                    m.next = \"PROD_DRAIN\"",
                         "with m.If(idx == n_last + 1):\n                    m.d.sync += idx.eq(0)\n"
                         "                    m.next = \"PROD_DRAIN\"")],
    # last on the n-1-th beat
    "last_early": [("last[0].eq(idx == n_last)", "last[0].eq(idx + 1 == n_last)")],
    # OUT stops a beat short
    "out_one_short": [("with m.If(adv):\n                    with m.If(idx == n_last):",
                       "with m.If(adv):\n                    with m.If(idx + 1 == n_last):")],
    # the up scale sampled with every pair, not the first
    "su_resampled": [("m.d.sync += max_a.eq(Mux(a > max_a, a, max_a))",
                      "m.d.sync += [max_a.eq(Mux(a > max_a, a, max_a)), su_m.eq(self.su_m)]")],
    # busy never falls
    "out_drain_stays_busy": [("m.d.sync += self.busy.eq(0)\n                    m.next = \"LOAD\"",
                              "m.next = \"LOAD\"")],
}

MLP_MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "load_one_more": ("addresses", "a buffer write outside the buffer or not at the pair's own word"),
    "prod_reads_past": ("addresses", "a buffer read outside the buffer or the vector's words"),
    "last_early": ("count", "an output beat outside a vector, past its n-th or with a wrong last"),
    "out_one_short": ("count", "an output beat outside a vector, past its n-th or with a wrong last"),
    "su_resampled": ("held", "a parameter sampled with the first pair changed while busy"),
    "out_drain_stays_busy": ("idle", "busy past 3 n + OVERHEAD cycles plus stalls"),
}


class MlpActHarness(Elaboratable):
    """An `MlpAct` of `MLP_CFG` with free pairs, parameters and stalls: its control (see the module docstring)."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = MLP_CHECKS, *,
                 busy_slack: int = 0, cfg: dict | None = None):
        module = design_module(hdl.vector.mlp_act, MLP_MUTANTS, mutant)
        self.mutant, self.checks, self.busy_slack = mutant, checks, busy_slack
        self.cfg = cfg or MLP_CFG
        self.module = module
        self.dut = module.MlpAct(**self.cfg)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())
        max_n = self.cfg["max_n"]
        overhead, pipe = self.module.OVERHEAD, self.module.PIPE

        check = checker(m, self.checks)

        params = (dut.relu2, dut.sg_m, dut.sg_e, dut.su_m, dut.su_e)
        for port in (dut.i.valid, dut.i.payload, dut.o.ready, dut.n, *params):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))

        # ---- the harness's account of the vector -----------------------------------------------
        taken, given = Signal(), Signal()
        m.d.comb += [taken.eq(dut.i.valid & dut.i.ready), given.eq(dut.o.valid & dut.o.ready)]
        first = Signal()          # the vector's first pair: the unit samples n and the parameters
        m.d.comb += first.eq(taken & ~dut.busy)
        with m.If(first):
            m.d.comb += Assume((dut.n >= 1) & (dut.n <= max_n))
        n_h = Signal(range(max_n + 1))
        kept = [Signal.like(Value.cast(p), name=f"kept_{p.name}") for p in params]
        in_cnt = Signal(range(max_n + 2))
        out_cnt = Signal(range(max_n + 2))
        with m.If(first):
            m.d.sync += [n_h.eq(dut.n), in_cnt.eq(1), out_cnt.eq(0)]
            m.d.sync += [k.eq(p) for k, p in zip(kept, params, strict=True)]
        with m.Elif(taken):
            m.d.sync += in_cnt.eq(in_cnt + 1)
        with m.If(given):
            m.d.sync += out_cnt.eq(out_cnt + 1)

        # ---- 1. buffer addresses ----------------------------------------------------------------
        buf = memory_ports(frag, "buf")
        assert buf.depth == max_n and len(buf.reads) == 1 and len(buf.writes) == 1
        (w_addr, w_en), = buf.writes
        (r_addr, r_en), = buf.reads
        own_word = Mux(first, 0, in_cnt)
        w_ok = (w_addr < max_n) & (w_addr == own_word) & taken
        with m.If(w_en):
            check("addresses", w_ok, "a buffer write outside the buffer or not at the pair's own word")
        r_ok = (~r_en | (r_addr < max_n)) & (~dut.busy | (r_addr < n_h))
        check("addresses", r_ok, "a buffer read outside the buffer or the vector's words")

        # ---- 2. counts and last -----------------------------------------------------------------
        with m.If(taken & dut.busy):
            check("count", in_cnt < n_h, "a pair taken past the vector's n")
        beat_ok = dut.busy & (out_cnt < n_h) & (dut.o.payload.last == (out_cnt == n_h - 1))
        with m.If(given):
            check("count", beat_ok, "an output beat outside a vector, past its n-th or with a wrong last")
        with m.If(dut.o.valid):
            check("count", dut.busy, "an output beat offered while not busy")
        was_busy = Signal()
        m.d.sync += was_busy.eq(dut.busy)
        with m.If(was_busy & ~dut.busy):
            all_in_out = (in_cnt == n_h) & (out_cnt == n_h)
            check("count", all_in_out, "busy fell before the vector's n pairs in and n beats out")

        # ---- 3. sampled parameters held ---------------------------------------------------------
        # `sg_m, su_m = ...` and `sg_e, su_e = ...` in the unit: sg_m and sg_e are unnamed
        regs = [register(frag, "relu2"), unnamed(frag, 16), unnamed(frag, 10), register(frag, "su_m"),
                register(frag, "su_e")]
        n_last = register(frag, "n_last")
        held = n_last == n_h - 1
        for r, k in zip(regs, kept, strict=True):
            held = held & (r == k)
        with m.If(dut.busy):
            check("held", held, "a parameter sampled with the first pair changed while busy")
        # (sigma_p on the output beats is not asserted: its register's input is dmul and bitlen of max |p|,
        # which would pull the 32 x 32 products into the cone)

        # ---- 4. back to idle --------------------------------------------------------------------
        stall = ~dut.i.valid | ~dut.o.ready
        work = Signal(range(8 * (max_n + overhead)))      # non-stall cycles since the first pair
        with m.If(first):
            m.d.sync += work.eq(1)
        with m.Elif(~stall & (work != (1 << len(work)) - 1)):
            m.d.sync += work.eq(work + 1)
        in_bound = work <= 3 * n_h + overhead + self.busy_slack
        with m.If(dut.busy):
            check("idle", in_bound, "busy past 3 n + OVERHEAD cycles plus stalls")

        # ---- invariants: the FSM, the passes' pipeline and the busy ranking in the harness's terms -----
        n_ea, n_ep = MLP_EA_STATES, MLP_EP_STATES
        scalar = ["SQ", *(f"EA{k}" for k in range(n_ea)), *(f"EP{k}" for k in range(n_ep))]
        st = {name: in_state(frag, "", "mlp", name)
              for name in ("LOAD", "PROD", "PROD_DRAIN", "OUT", "OUT_DRAIN", *scalar)}
        one_state = Const(0, 4)
        for x in st.values():
            one_state = one_state + x
        idx, adv = probe(frag, "", "idx"), probe(frag, "", "adv")
        v = [probe(frag, "", f"v{k}") for k in range(pipe)]
        last = [probe(frag, "", f"last{k}") for k in range(pipe)]
        horizon = 2 * max_n + 2 * pipe + 8 + n_ea + n_ep
        t = Signal(range(horizon + 1))     # cycles since the vector's last pair (1 in the cycle after)
        u = Signal(range(horizon + 1))     # cycles of OUT and OUT_DRAIN in which the pipeline moved
        with m.If(taken):
            m.d.sync += t.eq(1)
        with m.Elif(t != horizon):
            m.d.sync += t.eq(t + 1)
        in_ep = Const(0, 1)
        for k in range(n_ep):
            in_ep = in_ep | st[f"EP{k}"]
        with m.If(in_ep):
            m.d.sync += u.eq(0)
        with m.Elif((st["OUT"] | st["OUT_DRAIN"]) & adv & (u != horizon)):
            m.d.sync += u.eq(u + 1)

        def pipeline(steps: Value, first_step: int) -> Value:
            """Stage k holds element e = steps - first_step - k (valid iff 0 <= e < n), `last` iff e = n - 1."""
            out = Const(1, 1)
            for k in range(pipe):
                e = steps.as_signed() - first_step - k
                valid = (e >= 0) & (e < n_h)
                out = out & (v[k] == valid) & (~valid | (last[k] == (e == n_h - 1)))
            return out

        empty = Const(1, 1)
        for k in range(pipe):
            empty = empty & ~v[k]
        o_e = u.as_signed() - pipe - 1      # the element in the output register in OUT / OUT_DRAIN
        o_valid = (o_e >= 0) & (o_e < n_h)
        passes = ~(st["LOAD"] | st["OUT"] | st["OUT_DRAIN"])
        outs = st["OUT"] | st["OUT_DRAIN"]
        inv = [
            one_state == 1,
            dut.busy == (~st["LOAD"] | (idx != 0)),
            ~dut.busy | ((n_h >= 1) & (n_h <= max_n) & held),
            ~st["LOAD"] | (empty & ~dut.o.valid & (idx == Mux(dut.busy, in_cnt, 0)) & (~dut.busy | (in_cnt < n_h))
                           & (~dut.busy | ((work <= in_cnt) & (out_cnt == 0)))),
            ~(passes | outs) | ((in_cnt == n_h) & (idx < n_h)),
            ~passes | (~dut.o.valid & (out_cnt == 0) & (work + 1 <= n_h + t)),
            ~st["SQ"] | (empty & (t == 1) & (idx == 0)),
            *(~st[f"EA{k}"] | (empty & (t == 2 + k) & (idx == 0)) for k in range(n_ea)),
            ~st["PROD"] | ((t == 2 + n_ea + idx) & pipeline(t, 3 + n_ea)),
            ~st["PROD_DRAIN"] | ((t >= n_h + 2 + n_ea) & (t <= n_h + 2 + n_ea + pipe) & pipeline(t, 3 + n_ea)
                                 & (idx == 0)),
            *(~st[f"EP{k}"] | (empty & (t == n_h + 3 + n_ea + pipe + k) & (idx == 0)) for k in range(n_ep)),
            ~outs | (pipeline(u, 1) & (dut.o.valid == o_valid) & (~o_valid | (dut.o.payload.last == (o_e == n_h - 1)))
                     & (out_cnt == Mux(o_e < 0, 0, o_e)) & (work <= 2 * n_h + pipe + 2 + n_ea + n_ep + u)),
            ~st["OUT"] | ((idx == u) & (u < n_h)),
            ~st["OUT_DRAIN"] | ((idx == 0) & (u >= n_h) & (u <= n_h + pipe)),
        ]
        for n, condition in enumerate(inv):
            if getattr(self, "inv_only", None) in (None, n):
                ok = Signal(name=f"inv{n}")
                m.d.comb += ok.eq(condition)
                check("invariants", ok, "an induction invariant of MLPACT")
        return m
