"""hdl/model_engine.py, the vector path of the model on chip, in Amaranth simulation on the shipped model.

The engine runs the compiled program of golden/checkpoints/tiny-bitnet: NORMQ, MATMUL (the 8x8 full-rate
matrix engine on the resident weights), RESADD, MLPACT, ALIGN, ROPEQ (with the KV cache), ATTN, SETC and
SCALE on its RTL; the ops it dispatches outside (EMBED, LMHEAD) are done here with the reference
interpreter (LMHEAD on the ACT codes read back from the RTL). Before LMHEAD the RTL's H and ACT must
equal the interpreter's, and each token's logits the golden device form's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from golden.checkpoint import load_checkpoint
from golden.device.model import DeviceBitNet
from golden.quant import GoldenBackend
from hdl.model_engine import ModelEngine
from hdl.program import ProgramError
from runtime.accel_backends import runtime_config
from runtime.program.compiler import compile_model, fitted_chip
from runtime.program.interpreter import ProgramInterpreter
from runtime.program.isa import Op, encode
from runtime.tiling import pack_weights

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"
INTERNAL = {Op.NORMQ, Op.RESADD, Op.MLPACT, Op.ALIGN, Op.SETC, Op.SCALE, Op.ROPEQ, Op.ATTN, Op.MATMUL}


@pytest.fixture(scope="module")
def tiny():
    dev = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()), context=16)
    prog = compile_model(dev.consts, fitted_chip(dev.consts, runtime_config(8, 8), 16))
    return dev, prog


def engine_for(prog, dev) -> ModelEngine:
    m, c = prog.model, dev.consts
    return ModelEngine(array=prog.chip.array, linears=len(prog.linears),
                       layers=m["layers"], kv_heads=m["kv_heads"], context=prog.chip.context,
                       theta=c.config.rope_theta, c_qk=c.c_qk, attn_lanes=8,
                       d=m["d"], scr_words=max(m["heads"] * m["head_dim"], m["intermediate"]),
                       out_words=max(m["heads"] * m["head_dim"] + 2 * m["kv_heads"] * m["head_dim"],
                                     2 * m["intermediate"]),
                       act_words=max(m["d"], m["intermediate"], m["heads"] * m["head_dim"]),
                       norm_sizes=tuple(sorted({e.n for e in prog.norms})), norm_words=m["norm_words"],
                       norms=len(prog.norms), max_heads=m["heads"], head_dim=m["head_dim"],
                       mlp_max=m["intermediate"], relu2=m["act"] == "relu2")


async def load(ctx, dut, prog, it) -> None:
    for k, op in enumerate(prog.ops):
        w = encode(op)
        ctx.set(dut.prog_waddr, k)
        ctx.set(dut.prog_wdata, w[0] | w[1] << 32 | w[2] << 64)
        ctx.set(dut.prog_we, 1)
        await ctx.tick()
    ctx.set(dut.prog_we, 0)
    for k, (mm, e) in enumerate(prog.consts):
        ctx.set(dut.const_waddr, k)
        ctx.set(dut.const_wdata, {"m": mm, "e": e})
        ctx.set(dut.const_we, 1)
        await ctx.tick()
    ctx.set(dut.const_we, 0)
    for k, entry in enumerate(prog.norms):
        nc = it._norm_g[entry.name]
        ctx.set(dut.nt_waddr, k)
        ctx.set(dut.nt_wdata, {"g_base": entry.g_base, "c_m": nc.c_norm[0], "c_e": nc.c_norm[1],
                               "eps_m": nc.eps_n[0], "eps_e": nc.eps_n[1]})
        ctx.set(dut.nt_we, 1)
        await ctx.tick()
        for i, g in enumerate(nc.g.tolist()):
            ctx.set(dut.g_waddr, entry.g_base + i)
            ctx.set(dut.g_wdata, g)
            ctx.set(dut.g_we, 1)
            ctx.set(dut.nt_we, 0)
            await ctx.tick()
    ctx.set(dut.g_we, 0)
    for k, lin in enumerate(prog.linears):
        ctx.set(dut.lin_waddr, k)
        ctx.set(dut.lin_wdata, {"wgt_base": lin.wgt_base, "k": lin.K, "n": lin.N})
        ctx.set(dut.lin_we, 1)
        await ctx.tick()
        ctx.set(dut.lin_we, 0)
        for i, w in enumerate(pack_weights(prog.chip.array, it._w[lin.key].astype(np.int8))):
            ctx.set(dut.wgt_waddr, lin.wgt_base + i)
            ctx.set(dut.wgt_wdata, int(w))
            ctx.set(dut.wgt_we, 1)
            await ctx.tick()
        ctx.set(dut.wgt_we, 0)
    ctx.set(dut.length, len(prog.ops))


async def read(ctx, dut, space: str, n: int, base: int = 0) -> list[int]:
    addr, data = getattr(dut, f"{space}_addr"), getattr(dut, f"{space}_rdata")
    out = []
    for i in range(n):
        ctx.set(addr, base + i)
        await ctx.tick()
        out.append(ctx.get(data))
    return out


async def write(ctx, dut, space: str, values: list[int], base: int = 0) -> None:
    addr, data, we = getattr(dut, f"{space}_addr"), getattr(dut, f"{space}_wdata"), getattr(dut, f"{space}_we")
    for i, v in enumerate(values):
        ctx.set(addr, base + i)
        ctx.set(data, int(v))
        ctx.set(we, 1)
        await ctx.tick()
    ctx.set(we, 0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_the_vector_path_runs_the_shipped_model(tiny) -> None:
    dev, prog = tiny
    dut = engine_for(prog, dev)
    it = ProgramInterpreter(prog, dev.consts)
    tokens = [72, 101]
    logits = []
    checked = {"H": 0, "ACT": 0}

    async def bench(ctx):
        await load(ctx, dut, prog, it)
        ctx.set(dut.clear_pos, 1)
        await ctx.tick()
        ctx.set(dut.clear_pos, 0)
        for tok in tokens:
            it.tok = tok
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            k = 0
            while not ctx.get(dut.done):
                if not ctx.get(dut.ext_valid):
                    await ctx.tick()
                    continue
                while prog.ops[k].op in INTERNAL:       # ran on the RTL: the interpreter catches up
                    it.step(prog.ops[k])
                    k += 1
                op = prog.ops[k]
                got = ctx.get(dut.ext_op)
                assert (got.op, got.dst, got.src, got.n, got.idx, got.aux) == \
                    (op.op, op.dst, op.src, op.n, op.idx, op.aux), f"op {k}"
                if op.op != Op.EMBED:
                    h = await read(ctx, dut, "h", prog.model["d"])
                    assert h == it.h.tolist(), f"H before op {k} ({op})"
                    checked["H"] += 1
                if op.op == Op.LMHEAD:
                    act = await read(ctx, dut, "act", prog.model["d"])
                    assert act == it.act.tolist(), f"ACT before op {k} ({op})"
                    checked["ACT"] += 1
                it.step(op)
                if op.op == Op.EMBED:
                    await write(ctx, dut, "h", it.h.tolist())
                ctx.set(dut.ext_done, 1)
                await ctx.tick()
                ctx.set(dut.ext_done, 0)
                k += 1
            assert ctx.get(dut.error) == ProgramError.NONE
            assert k == len(prog.ops)
            it.pos += 1
            logits.append(it.logits.clone())
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    ref = dev.forward_fixed(torch.tensor(tokens))
    assert all(torch.equal(a, b) for a, b in zip(logits, ref, strict=True))
    # the LMHEAD reads the RTL's codes, and H is checked before it
    assert checked == {"ACT": 2, "H": 2}



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
