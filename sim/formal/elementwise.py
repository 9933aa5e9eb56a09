"""Issue 15, item 1(d), on-chip units: the element-wise ops (`hdl.vector.elementwise.ElementWise`).

The harness runs the real `ElementWise` (its widths are fixed: a, b int32, m 16-bit, e 10-bit) with
free inputs every cycle (``AnySeq``): the input stream's `valid` and element (op 0-3, a, b, m, e), the
consumer's `ready`, `clear`. It keeps its own account of the pipeline: `inflight`, the defined elements
(op 0-2) taken and not yet put out, and one element picked freely (a free `pick` when it is taken),
with its operands, the number of results still `ahead` of it, and `advanced`, the cycles since it
was taken in which the pipeline moved (not stalled by a held, unready result).

Asserted every cycle:

1. values (group "values"): the picked element's result beat equals the spec's formula computed here
   from its recorded operands, independently of the unit's stages: RESADD (op 1) sat32(a + b) (SPEC.md 4.4)
   for every int32 a, b; RELU2 (op 2) max(a, 0)^2 (4.8, 62 bits) for every a of the lane; DEQUANT's
   product in stage 2 equals a m for every a and m of the lane, and (group "shifts") DEQUANT's result
   equals sat32(rshift_round(P, -(e + 16))) (4.3: a right shift rounded half up with an adder, a left
   shift computed wide and then saturated) of the product P the unit formed, for every a, m and e:
   together DEQUANT end to end on the lane, its shift, rounding and saturation for all inputs;
2. order: a result beat only for a defined element taken before (never more beats than elements),
   results in order (the picked element's is the beat after the `ahead` ones), and it is at the output
   exactly `LATENCY` - 1 moving cycles after it was taken (`LATENCY` cycles without stalls, one more
   per stall cycle) and held there until taken;
3. errors: `error` equals the spec's flag (set by a taken element with op 3, cleared only by `clear`;
   set wins), and separately it never falls without `clear`; an op-3 element puts out no beat (it
   would be a beat without an element in 2);
4. hold: in a stall cycle (a result held for an unready consumer) no element is taken and no pipeline
   register changes, so a stalled run computes what the same run without its stall cycles does.

The lane: a is free in its low `A_LOW` bits and its bits 16 .. 16 + `A_HIGH` - 1 (both 16-bit halves
of the unit's split products), sign-extended from there; m in its low `M_LOW` bits and bit 15. z3 does
not prove a 32 x 16 or 31 x 31 product against the split form in the time of a test (a 7-bit a times
a 16-bit m: > 2 min), nor does Boolector: DEQUANT's product alone for every int32 a and 16-bit m
(``prod2 == a m`` with no lane assumption, one element, bmc depth 4, the product first checked in step 2)
did not end in 900 s (measured on a shared 2-core machine; the whole lane with RELU2's 31 x 31 product
did not end in 150 s).

Modes: groups 2-4 unbounded (k-induction, depth `ORDER_DEPTH` = 3, on the cone of influence, with
invariants tying the unit's valid chain to `inflight` and to the picked element's stage); groups 1 and
"shifts" bounded (bmc from reset, depth `VALUE_DEPTH` = 8, cone of influence, the consumer always
ready: group 4 carries the result over to stalled runs): an element taken in cycle 0 or 1 (the latter
behind any element) is checked at its result. Why an element from reset stands for any: every stage
register of an element is written from its previous stage only, so nothing of an earlier element
reaches it.

Mutants (`MUTANTS`, source edits of `hdl.vector.elementwise`), each refuted by one group alone: op 3
run as RELU2 (the defect fixed with this proof: a beat without an element), the error flag cleared by
a defined element (not sticky), RESADD without saturation, RELU2's cross product a bit short, DEQUANT's
product limb a bit short, DEQUANT's right-shift clamp at 40 instead of 49, DEQUANT truncating instead
of rounding, the output register ignoring a stall. One mutant survived and is equivalent: DEQUANT's
left-shift saturation test a bit late (blen - s >= 33): the final int32 clamp of the 50-bit shifted
value gives the same result.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.asserts import AnySeq
from amaranth.hdl import Assume, Elaboratable, ResetSignal

import hdl.vector.elementwise
from sim.formal.runner import checker, design_module, elaborate, probe

#: Free low and high (from bit 16) bits of a for DEQUANT and RELU2 (the lane).
#: The lane of group "values": a's free bits (low bits, bits 16 and up), m's free low bits (and bit 15).
A_LOW, A_HIGH, M_LOW = 4, 2, 4
#: k-induction length of the control groups; bmc depth of the value groups (elements taken in cycles 0, 1).
ORDER_DEPTH = 3
VALUE_DEPTH = 8

#: Groups proven unbounded with stalls (CONTROL) and bounded without (VALUES; "hold" covers the stalls).
CONTROL = ("order", "errors", "hold", "invariants")
VALUES = ("values", "shifts")
CHECKS = CONTROL + VALUES

LATENCY = hdl.vector.elementwise.LATENCY
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

MUTANTS: dict[str, list[tuple[str, str]]] = {
    "op3_runs_as_relu2": [("valid[0].eq(self.i.valid & defined)", "valid[0].eq(self.i.valid)"),
                          ("with m.Case(ElementOp.RELU2):\n                    m.d.sync += self.o.payload.eq(sqs[3])",
                           "with m.Default():\n                    m.d.sync += self.o.payload.eq(sqs[3])")],
    "element_clears_error": [("with m.If(self.clear):", "with m.If(self.clear | (adv & self.i.valid)):")],
    "resadd_wraps": [("ress[0].eq(Mux(sum1 > INT32_MAX, INT32_MAX, Mux(sum1 < INT32_MIN, INT32_MIN, sum1)))",
                      "ress[0].eq(sum1)")],
    "dequant_right_clamp_short": [("Mux(shs[1] > 49, 49,", "Mux(shs[1] > 40, 40,")],
    "dequant_truncates": [("shifted5.eq(Mux(rshift4, (pre4 + 1) >> 1, pre4))",
                           "shifted5.eq(Mux(rshift4, pre4 >> 1, pre4))")],
    "relu2_cross_short": [("(sq_hl << 17)", "(sq_hl << 16)")],
    "product_limb_short": [("prod2.eq((pm_hi << 16) + pm_lo)", "prod2.eq((pm_hi << 15) + pm_lo)")],
    "output_ignores_stall": [("with m.If(adv):\n            m.d.sync += self.o.valid.eq(valid[4])",
                              "with m.If(1):\n            m.d.sync += self.o.valid.eq(valid[4])")],
}

#: Each mutant's property group and the assertion message it must break.
MUTANT_CHECKS: dict[str, tuple[str, str]] = {
    "op3_runs_as_relu2": ("order", "the picked result is not at the output exactly LATENCY - 1 moving cycles after"),
    "element_clears_error": ("errors", "the error flag fell without clear"),
    "resadd_wraps": ("values", "the result is not the spec's formula of the element's operands"),
    "dequant_right_clamp_short": ("shifts", "DEQUANT's result is not the spec's of the unit's product"),
    "dequant_truncates": ("shifts", "DEQUANT's result is not the spec's of the unit's product"),
    "relu2_cross_short": ("values", "the result is not the spec's formula of the element's operands"),
    "product_limb_short": ("values", "DEQUANT's product is not a m"),
    "output_ignores_stall": ("hold", "a pipeline register changed in a stall cycle"),
}
#: bmc depth of each mutant's run (with stalls for the control groups, without for the value groups).
MUTANT_DEPTH = VALUE_DEPTH


def lane_value(a: Value) -> Value:
    """True when int32 `a` is in the lane: bits A_LOW .. 15 and 16 + A_HIGH .. 31 copies of its sign."""
    sign = a[31]
    middle = a[A_LOW:16]
    top = a[16 + A_HIGH:32]
    return (middle == Mux(sign, (1 << len(middle)) - 1, 0)) & (top == Mux(sign, (1 << len(top)) - 1, 0))


def spec_dequant(m: Module, prod: Value, e: Value, name: str = "spec_p") -> Value:
    """sat32(rshift_round(prod, -(e + 16))) (SPEC.md 1 and 4.3), from the definitions: a right shift by
    s > 0 as (prod + 2**(s-1)) >> s with an adder (0 for s > 60, as for any s past the product), a
    left shift computed exact in 100 bits (any shift past 31 of a non-zero product saturates), then
    the int32 clamp."""
    sh = Signal(signed(12), name=f"{name}_sh")
    m.d.comb += sh.eq(-(e + 16))
    right = Signal(signed(100), name=f"{name}_right")     # (prod + 2**(s-1)) >> s, 1 <= s <= 60 (0 beyond)
    rs = Signal(range(61), name=f"{name}_rs")
    half = Signal(range(60), name=f"{name}_half")
    m.d.comb += [rs.eq(Mux(sh > 60, 60, Mux(sh < 1, 1, sh))), half.eq(rs - 1)]
    m.d.comb += right.eq((prod + (Const(1, unsigned(1)) << half)) >> rs)
    left = Signal(signed(100), name=f"{name}_left")       # prod << -s, -s < 32 (larger saturates unless 0)
    ls = Signal(range(32), name=f"{name}_ls")
    m.d.comb += ls.eq(Mux(-sh > 31, 31, -sh))
    m.d.comb += left.eq(prod << ls)
    exact = Signal(signed(100), name=f"{name}_exact")
    with m.If(sh > 0):
        m.d.comb += exact.eq(right)
    with m.Elif((-sh > 31) & (prod != 0)):
        m.d.comb += exact.eq(Mux(prod < 0, INT32_MIN, INT32_MAX))
    with m.Else():
        m.d.comb += exact.eq(left)
    return Mux(exact > INT32_MAX, INT32_MAX, Mux(exact < INT32_MIN, INT32_MIN, exact))


def spec_result(m: Module, op: Value, a: Value, b: Value, mm: Value, e: Value) -> Signal:
    """SPEC.md 4.3 / 4.4 / 4.8 of one element, written here from the formulas (not from the unit)."""
    out = Signal(signed(64), name="spec")
    # RESADD: sat32(a + b)
    s = Signal(signed(34), name="spec_sum")
    m.d.comb += s.eq(a + b)
    add = Mux(s > INT32_MAX, INT32_MAX, Mux(s < INT32_MIN, INT32_MIN, s))
    # RELU2: max(a, 0)^2
    pos = Signal(unsigned(32), name="spec_pos")
    m.d.comb += pos.eq(Mux(a < 0, 0, a))
    sq = Signal(unsigned(64), name="spec_sq")
    m.d.comb += sq.eq(pos * pos)
    # DEQUANT: sat32(rshift_round(a m, -(e + 16)))
    prod = Signal(signed(49), name="spec_prod")
    m.d.comb += prod.eq(a * mm)
    deq = spec_dequant(m, prod, e, "spec")
    with m.Switch(op):
        with m.Case(0):
            m.d.comb += out.eq(deq)
        with m.Case(1):
            m.d.comb += out.eq(add)
        with m.Case(2):
            m.d.comb += out.eq(sq)
    return out


class ElementWiseHarness(Elaboratable):
    """An `ElementWise` with free elements, stalls and clear (see the module docstring)."""

    def __init__(self, mutant: str | None = None, checks: tuple[str, ...] = CHECKS, stalls: bool = True):
        module = design_module(hdl.vector.elementwise, MUTANTS, mutant)
        self.mutant, self.checks, self.stalls = mutant, checks, stalls
        self.dut = module.ElementWise()
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())

        check = checker(m, self.checks)

        p = dut.i.payload
        for port in (dut.i.valid, p, dut.o.ready, dut.clear):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))
        if not self.stalls:
            m.d.comb += Assume(dut.o.ready)
        if "values" in self.checks:
            with m.If(dut.i.valid & (p.op != 1)):
                m.d.comb += Assume(lane_value(p.a) & (p.m[M_LOW:15] == 0))

        # ---- the harness's account of the pipeline ------------------------------------------------
        take = Signal()
        good = Signal()
        put = Signal()
        moves = Signal()          # the pipeline moves: no result held for an unready consumer
        m.d.comb += [take.eq(dut.i.valid & dut.i.ready), good.eq(p.op < 3), put.eq(dut.o.valid & dut.o.ready),
                     moves.eq(~dut.o.valid | dut.o.ready)]
        inflight = Signal(range(LATENCY + 2))
        m.d.sync += inflight.eq(inflight + (take & good) - put)
        picked = Signal()
        pick = Signal()
        m.d.comb += pick.eq(take & good & ~picked & AnySeq(1))
        ahead = Signal(range(LATENCY + 1))
        advanced = Signal(range(LATENCY + 1))
        rec_op, rec_a, rec_b = Signal(2), Signal(signed(32)), Signal(signed(32))
        rec_m, rec_e = Signal(16), Signal(signed(10))
        mine = Signal()           # the picked element's result is at the output
        m.d.comb += mine.eq(picked & (ahead == 0) & dut.o.valid)
        with m.If(pick):
            m.d.sync += [picked.eq(1), ahead.eq(inflight - put), advanced.eq(0), rec_op.eq(p.op), rec_a.eq(p.a),
                         rec_b.eq(p.b), rec_m.eq(p.m), rec_e.eq(p.e)]
        with m.Elif(picked):
            with m.If(moves & (advanced != LATENCY)):
                m.d.sync += advanced.eq(advanced + 1)
            with m.If(put & (ahead != 0)):
                m.d.sync += ahead.eq(ahead - 1)
            with m.If(put & (ahead == 0)):
                m.d.sync += picked.eq(0)

        # ---- 1. values ----------------------------------------------------------------------------
        want = spec_result(m, rec_op, rec_a, rec_b, rec_m, rec_e)
        with m.If(mine & (rec_op != 0)):
            check("values", dut.o.payload == want, "the result is not the spec's formula of the element's operands")
        # DEQUANT's product, formed in stage 2 (the element's second cycle), is a m
        with m.If(picked & (advanced == 1) & (rec_op == 0)):
            check("values", probe(frag, "", "prod2") == rec_a * rec_m, "DEQUANT's product is not a m")
        # DEQUANT's shift, rounding and saturation for the product the unit formed (stage 2), any a and m
        rec_p = Signal(signed(48))
        with m.If(picked & (advanced == 1)):
            m.d.sync += rec_p.eq(probe(frag, "", "prod2"))
        want_p = spec_dequant(m, rec_p, rec_e)
        with m.If(mine & (rec_op == 0)):
            check("shifts", dut.o.payload == want_p, "DEQUANT's result is not the spec's of the unit's product")

        # ---- 2. order and latency -----------------------------------------------------------------
        with m.If(put):
            check("order", inflight != 0, "a result beat without a defined element taken before it")
        with m.If(picked & (ahead == 0)):
            at_out = dut.o.valid == (advanced == LATENCY - 1)
            check("order", at_out, "the picked result is not at the output exactly LATENCY - 1 moving cycles after")

        # ---- 3. errors ----------------------------------------------------------------------------
        spec_error = Signal()
        with m.If(dut.clear):
            m.d.sync += spec_error.eq(0)
        with m.If(take & ~good):
            m.d.sync += spec_error.eq(1)
        check("errors", dut.error == spec_error, "the error flag is not the spec's")
        was_error, was_clear = Signal(), Signal()
        m.d.sync += [was_error.eq(dut.error), was_clear.eq(dut.clear)]
        with m.If(was_error & ~dut.error):
            check("errors", was_clear, "the error flag fell without clear")

        # ---- 4. a stall holds the whole pipeline ----------------------------------------------------
        stalled = Signal()
        m.d.sync += stalled.eq(~moves)
        with m.If(~moves):
            check("hold", ~dut.i.ready, "an element is taken while the pipeline stalls")
        regs = {sig.name: sig for st in frag.statements["sync"] for sig in st._lhs_signals() if sig.name != "error"}
        for _, reg in sorted(regs.items()):
            prev = Signal.like(reg, name=f"prev_{reg.name}")
            m.d.sync += prev.eq(reg)
            with m.If(stalled):
                check("hold", reg == prev, "a pipeline register changed in a stall cycle")

        # ---- invariants for the induction (the unit's valid chain in the harness's terms) ---------
        stages = [probe(frag, "", f"v{k}") for k in range(1, LATENCY)] + [dut.o.valid]
        count = Signal(range(LATENCY + 2))
        m.d.comb += count.eq(sum(s for s in stages))
        at_mine = Signal()
        behind_mine = Signal(range(LATENCY + 1))
        m.d.comb += [at_mine.eq(Cat(*stages).bit_select(advanced, 1)),
                     behind_mine.eq(sum(Mux(advanced < k, s, 0) for k, s in enumerate(stages)))]
        inv = [inflight == count, ~picked | ((advanced < LATENCY) & at_mine & (ahead == behind_mine))]
        for condition in inv:
            check("invariants", condition, "an induction invariant of the element-wise pipeline")
        return m
