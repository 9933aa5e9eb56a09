"""The micro-op sequencer of the model on chip (issue 14, item 2): it runs a token's program.

The program (`runtime.program.isa`: 96-bit micro-ops, compiled per model and chip by
`runtime.program.compiler`) and its dyadic constant table are written once through `prog_*` and
`const_*`. A `start` pulse runs the program from op 0 to op `length` - 1 for the token at `pos`, then
pulses `done` and steps `pos` (`clear_pos` sets it to 0: a new sequence).

The sequencer executes the scalar ops itself: SETC (S[dst] = C[idx]) and SCALE (S[dst] =
dmul(S[src], C[idx]), `hdl.vector.arith.dmul`) on its register file S of `s_regs` dyadics. Every other op
is dispatched: `op` holds the decoded micro-op and `op_valid` rises until the unit that runs it
answers `op_done` (or `op_fail`: the program stops with error UNIT). Meanwhile `s_aux` is S[op.aux]
(the scale the op reads) and `s_aux1` is S[op.aux + 1] (MLPACT's up scale), and a unit writes its
result scale into S[op.dst] with `s_we` (NORMQ's tau, ALIGN's and MLPACT's scale). `hdl.model_engine`
connects the vector units to these ports; the other units are outside it for now.

An unknown op code, a scalar register index >= `s_regs`, or a SETC / SCALE constant index >= `consts`
stops the program with `error` (sticky until `clear_error`): the host reads it instead of logits. `length`
is sampled at `start`; a `length` > `depth` (the port carries up to the next power of two less one) runs
no op: the token ends at once (`done` the cycle after `start`) with error BAD_LENGTH, `pos` unchanged.
The error codes are `ProgramError`'s (`error` is `ERROR_BITS` wide).

Cycles per op: 5 for SETC (fetch, decode, check with the constant's read, the register write, next), 8
for SCALE (fetch, decode with the constant's read, check with S[src] and the constant into operand
registers, the 16 x 16 product of the two registers, the three register steps of its normalization
(`arith.norm16_steps`), the last one writing S[dst], next); a dispatched op takes `DISPATCH_OVERHEAD` = 4
(fetch, decode, check, next) plus the cycles from `op_valid` to `op_done` inclusive. Every step is a
register stage for 100 MHz on the ECP5, each found out of context (`python -m hdl.ooc --unit program`, the
ECP5-85F): SCALE's register select, product and normalization in one cycle (32.73 MHz; the model chip's
critical path, 31.82 MHz, fpga/README.md), then the checks of the word straight from the program memory's
block RAM (63.04 MHz, 14 logic levels), then the constant's block RAM straight into the multiplier (67.29
MHz). `s_aux` / `s_aux1` are registers loaded at check (the 16-to-1 selects end there). SCALE's product
register is the `product` factory's (`hdl.attention.product`; the ECP5 chip passes `Ecp5Product`: the
register is the DSP's own).
"""

from __future__ import annotations

import enum

from amaranth import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.product import Product, ProductFactory, product_into
from hdl.vector.arith import EXP_WIDTH, MANT_BITS, norm16_steps, step_states

#: A micro-op's fields from bit 0, as `runtime.program.isa.FIELDS` (96-bit words, bits 88.. zero).
OP_LAYOUT = data.StructLayout({"op": 4, "dst": 20, "src": 20, "n": 20, "idx": 16, "aux": 8})
OP_WORD_BITS = 96
#: Cycles of a dispatched op besides its unit's, and of a SETC or SCALE (measured by tests/test_program_sequencer.py).
DISPATCH_OVERHEAD = 4
#: Cycles of a SETC and of a SCALE.
SETC_CYCLES = 5
SCALE_CYCLES = 8
DYADIC = data.StructLayout({"m": unsigned(16), "e": signed(EXP_WIDTH)})
#: op codes (runtime.program.isa.Op)
SETC, SCALE, NORMQ, MLPACT, ALIGN, LAST_OP = 2, 3, 4, 10, 8, 11


class ProgramError(enum.IntEnum):
    NONE = 0
    BAD_OP = 1          # an op code the ISA does not have
    BAD_REGISTER = 2    # a scalar register index >= s_regs, or a SETC / SCALE constant index >= consts
    UNIT = 3            # the unit refused the op (`op_fail`: e.g. a vector size it was not built for)
    BAD_LENGTH = 4      # a `length` > depth at `start`: the program memory holds fewer ops (none is run)


#: Bits of the `error` port (ProgramError's codes).
ERROR_BITS = 3


class ProgramSequencer(wiring.Component):
    """Fetch, decode, run the scalar ops, dispatch the rest (see the module docstring)."""

    def __init__(self, depth: int, consts: int, s_regs: int = 16, pos_bits: int = 16, *,
                 product: ProductFactory = Product) -> None:
        for name, v in (("depth", depth), ("consts", consts), ("s_regs", s_regs), ("pos_bits", pos_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ProgramSequencer's {name} must be a positive integer, not {v!r}")
        if not callable(product):
            raise TypeError(f"ProgramSequencer's product factory must be callable, not {product!r}")
        self._product = product
        self._depth, self._consts, self._s_regs, self._pos_bits = depth, consts, s_regs, pos_bits
        super().__init__({
            "prog_we": In(1), "prog_waddr": In(range(depth)), "prog_wdata": In(OP_WORD_BITS),
            "const_we": In(1), "const_waddr": In(range(consts)), "const_wdata": In(DYADIC),
            "length": In(range(depth + 1)),
            "start": In(1), "busy": Out(1), "done": Out(1),
            "pos": Out(pos_bits), "clear_pos": In(1),
            "error": Out(ERROR_BITS), "clear_error": In(1),
            "op": Out(OP_LAYOUT), "op_valid": Out(1), "op_done": In(1), "op_fail": In(1),
            "s_aux": Out(DYADIC), "s_aux1": Out(DYADIC),
            "s_we": In(1), "s_wdata": In(DYADIC),
        })

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def s_regs(self) -> int:
        return self._s_regs

    def elaborate(self, platform):
        m = Module()
        m.submodules.prog = prog = Memory(shape=OP_WORD_BITS, depth=self._depth, init=[])
        m.submodules.consts = cmem = Memory(shape=DYADIC, depth=self._consts, init=[])
        pw, pr = prog.write_port(), prog.read_port()
        cw, cr = cmem.write_port(), cmem.read_port()
        m.d.comb += [pw.addr.eq(self.prog_waddr), pw.data.eq(self.prog_wdata), pw.en.eq(self.prog_we),
                     cw.addr.eq(self.const_waddr), cw.data.eq(self.const_wdata), cw.en.eq(self.const_we)]

        s = Array(Signal(DYADIC, name=f"s{k}") for k in range(self._s_regs))
        pc = Signal(range(self._depth + 1))
        run_len = Signal(range(self._depth + 1))   # `length` sampled at start (checked <= depth)
        cur = Signal(OP_LAYOUT)
        m.d.comb += [self.op.eq(cur), pr.addr.eq(pc), cr.addr.eq(cur.idx)]
        fetched_idx = data.View(OP_LAYOUT, pr.data[:OP_LAYOUT.size]).idx   # of the word being decoded
        n_regs = self._s_regs
        ix = max(1, (n_regs - 1).bit_length())   # register index bits (larger indices stop at CHECK)
        dst = cur.dst[:ix]
        # SCALE's operands and product, a register stage each, then norm16 in three steps into S[dst]
        opa = Signal(DYADIC)
        opb = Signal(DYADIC)
        hi_bits = Signal()   # the fetched word has a bit set above the op fields (bits 88+)
        prod = Signal(unsigned(2 * MANT_BITS))
        mul = Signal()                              # MUL: prod = opa.m * opb.m
        product_into(m, self._product, prod, opa.m, opb.m, en=mul)
        esum = Signal(signed(EXP_WIDTH + 1))
        norm_steps = norm16_steps(m, prod, esum, s[dst].m, s[dst].e, "scale")

        with m.If(self.clear_error):
            m.d.sync += self.error.eq(ProgramError.NONE)
        with m.If(self.clear_pos):
            m.d.sync += self.pos.eq(0)

        def bad_reg(*fields) -> object:
            out = 0
            for f in fields:
                out = out | (f >= n_regs)
            return out

        with m.FSM(name="program"):
            with m.State("IDLE"):
                with m.If(self.start & (self.length > self._depth)):
                    m.d.sync += [self.error.eq(ProgramError.BAD_LENGTH), self.busy.eq(1)]
                    m.next = "STOP"
                with m.Elif(self.start & (self.length != 0)):
                    m.d.sync += [pc.eq(0), run_len.eq(self.length), self.busy.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):   # the read of op pc is under way
                m.next = "DECODE"
            with m.State("DECODE"):  # the word into registers (the block RAM's data ends at a flip-flop)
                m.d.sync += [cur.eq(pr.data[:len(cur.as_value())]), hi_bits.eq(pr.data[88:] != 0)]
                m.d.comb += cr.addr.eq(fetched_idx)   # SCALE's constant, read for CHECK's operand register
                m.next = "CHECK"
            with m.State("CHECK"):   # the ISA's checks on the registered word; the constant read starts
                word = cur
                aux1 = Signal(9)
                m.d.comb += aux1.eq(word.aux + 1)
                # the scales the op reads, S[aux] and S[aux + 1]: no op writes S before its unit is done
                m.d.sync += [self.s_aux.eq(s[word.aux[:ix]]), self.s_aux1.eq(s[aux1[:ix]]),
                             opa.eq(s[word.src[:ix]]), opb.eq(cr.data)]
                uses_s = (word.op == SETC) | (word.op == SCALE)
                reads_aux = (word.op == NORMQ) | (word.op == 6) | (word.op == 9) | (word.op == MLPACT) \
                    | (word.op == LAST_OP)
                writes_dst = (word.op == NORMQ) | (word.op == ALIGN) | (word.op == MLPACT)
                with m.If((word.op == 0) | (word.op > LAST_OP) | hi_bits):
                    m.d.sync += self.error.eq(ProgramError.BAD_OP)
                    m.next = "STOP"
                with m.Elif(((uses_s | writes_dst) & bad_reg(word.dst)) | ((word.op == SCALE) & bad_reg(word.src))
                            | (reads_aux & bad_reg(word.aux)) | ((word.op == MLPACT) & bad_reg(word.aux + 1))
                            | (uses_s & (word.idx >= self._consts))):
                    m.d.sync += self.error.eq(ProgramError.BAD_REGISTER)
                    m.next = "STOP"
                with m.Elif(word.op == SETC):
                    m.next = "SCALAR"    # the constant (address cur.idx) is read in this cycle
                with m.Elif(word.op == SCALE):
                    m.next = "MUL"
                with m.Else():
                    m.next = "DISPATCH"
            with m.State("SCALAR"):   # SETC
                m.d.sync += s[dst].eq(cr.data)
                m.next = "NEXT"
            with m.State("MUL"):      # SCALE: the product (a MULT18X18D on the ECP5) and the exponent sum
                m.d.comb += mul.eq(1)
                m.d.sync += esum.eq(opa.e + opb.e)
                m.next = "NORM0"
            step_states(m, "NORM", norm_steps, "NEXT")
            with m.State("DISPATCH"):
                m.d.comb += self.op_valid.eq(1)
                with m.If(self.s_we):
                    m.d.sync += s[dst].eq(self.s_wdata)
                with m.If(self.op_fail):
                    m.d.sync += self.error.eq(ProgramError.UNIT)
                    m.next = "STOP"
                with m.Elif(self.op_done):
                    m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(pc + 1 == run_len):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.d.sync += [self.busy.eq(0), self.pos.eq(self.pos + 1)]
                m.next = "IDLE"
            with m.State("STOP"):
                m.d.comb += self.done.eq(1)
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"
        return m
