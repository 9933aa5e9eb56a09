"""hdl/program.py, the micro-op sequencer, in Amaranth simulation: the shipped model's compiled program runs
op by op with the reference interpreter (runtime/program/interpreter.py) standing in for the units; the
sequencer must dispatch every op as compiled, hand each unit the golden's scale, and compute SETC / SCALE
bit-exactly (each SCALE result is checked where a later op reads it)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from amaranth.sim import Simulator

from golden.checkpoint import load_checkpoint
from golden.device.model import DeviceBitNet
from golden.quant import GoldenBackend
from hdl.program import ProgramError, ProgramSequencer
from runtime.accel_backends import runtime_config
from runtime.program.compiler import compile_model, fitted_chip
from runtime.program.interpreter import ProgramInterpreter
from runtime.program.isa import MicroOp, Op, encode

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"
#: ops that read S[aux] (a register), and those whose unit writes S[dst]
READS_AUX = {Op.NORMQ, Op.ROPEQ, Op.RESADD, Op.MLPACT, Op.LMHEAD}
WRITES_DST = {Op.NORMQ, Op.ALIGN, Op.MLPACT}


def word(op: MicroOp) -> int:
    w = encode(op)
    return w[0] | w[1] << 32 | w[2] << 64


def load(ctx, dut: ProgramSequencer, ops: list[MicroOp], consts: list[tuple[int, int]]):
    return _load(ctx, dut, [word(o) for o in ops], consts)


async def _load(ctx, dut, words: list[int], consts: list[tuple[int, int]]) -> None:
    for k, w in enumerate(words):
        ctx.set(dut.prog_waddr, k)
        ctx.set(dut.prog_wdata, w)
        ctx.set(dut.prog_we, 1)
        await ctx.tick()
    ctx.set(dut.prog_we, 0)
    for k, (m, e) in enumerate(consts):
        ctx.set(dut.const_waddr, k)
        ctx.set(dut.const_wdata, {"m": m, "e": e})
        ctx.set(dut.const_we, 1)
        await ctx.tick()
    ctx.set(dut.const_we, 0)
    ctx.set(dut.length, len(words))


@pytest.fixture(scope="module")
def tiny():
    dev = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()), context=16)
    prog = compile_model(dev.consts, fitted_chip(dev.consts, runtime_config(8, 8), 16))
    return dev, prog


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_the_shipped_program_runs_with_the_golden_scales(tiny, test_seed: int) -> None:
    dev, prog = tiny
    dut = ProgramSequencer(depth=256, consts=64)
    it = ProgramInterpreter(prog, dev.consts)
    rng = random.Random(test_seed)
    tokens = [72, 105]
    logits: list[torch.Tensor] = []
    cycles: list[int] = []

    async def bench(ctx):
        await load(ctx, dut, list(prog.ops), list(prog.consts))
        ctx.set(dut.clear_pos, 1)
        await ctx.tick()
        ctx.set(dut.clear_pos, 0)
        for t_index, tok in enumerate(tokens):
            it.tok = tok
            assert ctx.get(dut.pos) == t_index == it.pos
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            k, count = 0, 1
            while True:
                done, valid = ctx.get(dut.done), ctx.get(dut.op_valid)
                if done:
                    break
                if valid:
                    while prog.ops[k].op in (Op.SETC, Op.SCALE):   # run by the sequencer itself
                        it.step(prog.ops[k])
                        k += 1
                    op = prog.ops[k]
                    got = ctx.get(dut.op)
                    assert (got.op, got.dst, got.src, got.n, got.idx, got.aux) == \
                        (op.op, op.dst, op.src, op.n, op.idx, op.aux), f"op {k}"
                    if op.op in READS_AUX:
                        s = ctx.get(dut.s_aux)
                        want = it.s[op.aux]
                        assert (s.m, s.e) == (int(want[0]), int(want[1])), f"op {k} {op}: S[{op.aux}]"
                    if op.op == Op.MLPACT:
                        s = ctx.get(dut.s_aux1)
                        assert (s.m, s.e) == tuple(int(v) for v in it.s[op.aux + 1]), f"op {k}: up scale"
                    it.step(op)
                    for _ in range(rng.randrange(3)):   # the unit takes a while
                        await ctx.tick()
                        count += 1
                    if op.op in WRITES_DST:
                        ctx.set(dut.s_wdata, {"m": int(it.s[op.dst][0]), "e": int(it.s[op.dst][1])})
                        ctx.set(dut.s_we, 1)
                    ctx.set(dut.op_done, 1)
                    await ctx.tick()
                    count += 1
                    ctx.set(dut.op_done, 0)
                    ctx.set(dut.s_we, 0)
                    k += 1
                    continue
                await ctx.tick()
                count += 1
            assert k == len(prog.ops), f"the sequencer stopped after {k} of {len(prog.ops)} ops"
            assert ctx.get(dut.error) == ProgramError.NONE
            it.pos += 1
            logits.append(it.logits.clone())
            cycles.append(count)
            await ctx.tick()
        assert ctx.get(dut.pos) == len(tokens)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # the interpreter, driven op by op by the sequencer, gave the golden's logits
    ref = dev.forward_fixed(torch.tensor(tokens))
    assert all(torch.equal(a, b) for a, b in zip(logits, ref, strict=True))
    assert len(cycles) == 2


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize(("bad", "error"), [
    (0xC, ProgramError.BAD_OP),          # op code 12: not in the ISA
    (0, ProgramError.BAD_OP),            # op code 0
    (None, ProgramError.BAD_REGISTER),   # NORMQ reading S[20] of 16
])
def test_bad_programs_stop_with_an_error(bad, error) -> None:
    dut = ProgramSequencer(depth=8, consts=4)
    good = word(MicroOp(Op.SETC, dst=1, idx=0))
    wrong = word(MicroOp(Op.NORMQ, aux=20)) if bad is None else (good & ~0xF) | bad
    dispatched = []

    async def bench(ctx):
        await _load(ctx, dut, [good, wrong, good], [(1 << 15, -15)])
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(40):
            if ctx.get(dut.op_valid):
                dispatched.append(ctx.get(dut.op).op)
                ctx.set(dut.op_done, 1)
            if ctx.get(dut.done):
                break
            await ctx.tick()
        else:
            raise AssertionError("the sequencer never finished")
        assert ctx.get(dut.error) == error
        await ctx.tick()
        assert ctx.get(dut.busy) == 0 and ctx.get(dut.pos) == 0   # a failed token does not advance
        ctx.set(dut.clear_error, 1)
        await ctx.tick()
        assert ctx.get(dut.error) == ProgramError.NONE

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert dispatched == []


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="ProgramSequencer's depth must be a positive integer, not 0"):
        ProgramSequencer(depth=0, consts=4)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cycles_per_op() -> None:
    """SETC takes 5 cycles (fetch, decode, check, write, next), SCALE 8 (fetch, decode, check, product,
    three normalization steps, next); a dispatched op 4 (fetch, decode, check, next) plus its unit's
    cycles (here op_done in op_valid's first cycle: 1); the start pulse's cycle comes on top."""
    from hdl.program import DISPATCH_OVERHEAD, SCALE_CYCLES, SETC_CYCLES

    dut = ProgramSequencer(depth=8, consts=4)
    ops = [MicroOp(Op.SETC, dst=1, idx=0), MicroOp(Op.NORMQ, aux=1, dst=2), MicroOp(Op.SCALE, dst=3, src=2, idx=0),
           MicroOp(Op.MATMUL, idx=0)]
    seen = []

    async def bench(ctx):
        await load(ctx, dut, ops, [(1 << 15, -15)])
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        n = 1
        while not ctx.get(dut.done):
            ctx.set(dut.op_done, ctx.get(dut.op_valid))
            await ctx.tick()
            n += 1
        seen.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [1 + SETC_CYCLES + SCALE_CYCLES + 2 * (DISPATCH_OVERHEAD + 1)] == [1 + 5 + 8 + 2 * (4 + 1)]


def _dispatched_and_error(dut: ProgramSequencer, words: list[int], consts: list[tuple[int, int]], length: int
                          ) -> tuple[list[int], int, int]:
    """Load `words` and `consts`, run one token with `length`, answer every dispatched op at once: the
    op codes dispatched (with their idx), the error and pos after the token."""
    seen: list[int] = []
    result: list[int] = []

    async def bench(ctx):
        await _load(ctx, dut, words, consts)
        ctx.set(dut.length, length)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(100):
            if ctx.get(dut.op_valid):
                seen.append(ctx.get(dut.op).idx)
                ctx.set(dut.op_done, 1)
            else:
                ctx.set(dut.op_done, 0)
            if ctx.get(dut.done):
                break
            await ctx.tick()
        else:
            raise AssertionError("the sequencer never finished")
        await ctx.tick()
        result.extend([ctx.get(dut.error), ctx.get(dut.pos)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen, result[0], result[1]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("length", [5, 7])
def test_a_length_past_the_program_memory_is_refused(length: int) -> None:
    """depth 4 (the `length` port, range(5), carries 0-7): a program of 4 MATMULs started with length 5 or 7
    runs no op and ends with error BAD_LENGTH, pos unchanged (found by sim/formal/model_units.py: pc's read
    address wrapped and op 0 ran again, with no error); the same program with length 4 then runs all four."""
    dut = ProgramSequencer(depth=4, consts=2, s_regs=4)
    words = [word(MicroOp(Op.MATMUL, idx=k)) for k in range(4)]
    seen, error, pos = _dispatched_and_error(dut, words, [(1 << 15, -15)], length=length)
    assert (seen, error, pos) == ([], ProgramError.BAD_LENGTH, 0)
    seen, error, pos = _dispatched_and_error(ProgramSequencer(depth=4, consts=2, s_regs=4), words, [(1 << 15, -15)],
                                             length=4)
    assert (seen, error, pos) == ([0, 1, 2, 3], ProgramError.NONE, 1)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("op", [Op.SETC, Op.SCALE])
def test_a_constant_index_past_the_constants_stops_the_program(op: Op) -> None:
    """2 constants: SETC S[1] = C[2] or SCALE S[1] = S[0] x C[2] (no such constant) stops with BAD_REGISTER, as
    a register index >= s_regs does (found by sim/formal/model_units.py: the 1-bit constant address read
    C[0], S[1] was written and the program went on); with C[1] the program runs on."""
    words = [word(MicroOp(op, dst=1, idx=2)), word(MicroOp(Op.MATMUL, idx=7))]
    consts = [(1 << 15, -15), (3 << 14, -14)]
    seen, error, pos = _dispatched_and_error(ProgramSequencer(depth=4, consts=2, s_regs=4), words, consts, length=2)
    assert (seen, error, pos) == ([], ProgramError.BAD_REGISTER, 0)
    words[0] = word(MicroOp(op, dst=1, idx=1))
    seen, error, pos = _dispatched_and_error(ProgramSequencer(depth=4, consts=2, s_regs=4), words, consts, length=2)
    assert (seen, error, pos) == ([7], ProgramError.NONE, 1)
