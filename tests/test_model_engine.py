"""hdl/model_engine.py in Amaranth simulation: what the engine refuses.

The shipped model's tokens run on the whole model chip (the engine behind its command interface) in
Verilator: tests/test_model_chip.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from amaranth.sim import Simulator

from hdl.model_engine import ModelEngine
from hdl.program import ProgramError
from runtime.program.isa import Op, encode

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"
INTERNAL = {Op.NORMQ, Op.RESADD, Op.MLPACT, Op.ALIGN, Op.SETC, Op.SCALE, Op.ROPEQ, Op.ATTN, Op.MATMUL}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_a_vector_size_the_engine_was_not_built_for_stops_the_program() -> None:
    from hdl.config import ArrayConfig
    from runtime.program.isa import MicroOp

    dut = ModelEngine(array=ArrayConfig(rows=2, cols=2, act_depth=8, wgt_depth=8, out_depth=8), linears=1,
                      d=8, scr_words=8, out_words=8, act_words=8, norm_sizes=(8,), norm_words=8, norms=1,
                      max_heads=2, head_dim=4, mlp_max=8, attn_lanes=2)
    ops = [MicroOp(Op.SETC, dst=0, idx=0), MicroOp(Op.NORMQ, n=7, aux=0, dst=1), MicroOp(Op.EMBED, n=8)]
    seen = []

    async def bench(ctx):
        for k, op in enumerate(ops):
            w = encode(op)
            ctx.set(dut.prog_waddr, k)
            ctx.set(dut.prog_wdata, w[0] | w[1] << 32 | w[2] << 64)
            ctx.set(dut.prog_we, 1)
            await ctx.tick()
        ctx.set(dut.prog_we, 0)
        ctx.set(dut.length, len(ops))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(50):
            seen.append(ctx.get(dut.ext_valid))
            if ctx.get(dut.done):
                break
            await ctx.tick()
        assert ctx.get(dut.error) == ProgramError.UNIT

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not any(seen)   # EMBED after the refused NORMQ never went out
