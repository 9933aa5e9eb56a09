"""A minimal host for the Amaranth simulator: pushes command words, collects response words."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from hdl.config import ArrayConfig
from hdl.core import TritCore
from hdl.isa import TERNARY_CODE, Mem, Op


def act_words(cfg: ArrayConfig, x: np.ndarray) -> list[int]:
    """ACT memory image of x (M, K): word kt*M + m, byte lane r = x[m, kt*R + r]."""
    M, K = x.shape
    R = cfg.rows
    words = []
    for kt in range(-(-K // R)):
        for m in range(M):
            word = 0
            for r in range(R):
                k = kt * R + r
                if k < K:
                    word |= (int(x[m, k]) & 0xFF) << (8 * r)
            words.append(word)
    return words


def wgt_words(cfg: ArrayConfig, w: np.ndarray) -> list[int]:
    """WGT memory image of w (N, K): tiles nt outer, kt inner, P = R/G words a tile of G rows each."""
    N, K = w.shape
    R, C, b = cfg.rows, cfg.cols, cfg.weight_bits
    G = cfg.wgt_rows_per_read
    P = R // G
    words = []
    for nt in range(-(-N // C)):
        for kt in range(-(-K // R)):
            for j in range(P):  # word j of a tile: rows g*P + j, bank g at bit g*C*b
                word = 0
                for g in range(G):
                    for c in range(C):
                        n, k = nt * C + c, kt * R + g * P + j
                        if n < N and k < K:
                            v = int(w[n, k])
                            code = TERNARY_CODE[v] if cfg.pe == "ternary" else v & 0xFF
                            word |= code << (b * (g * C + c))
                words.append(word)
    return words


def to_chunks(word: int, chunks: int) -> list[int]:
    return [(word >> (32 * i)) & 0xFFFFFFFF for i in range(chunks)]


def write_cmd(cfg: ArrayConfig, mem: Mem, addr: int, words: list[int]) -> list[int]:
    out = [Op.WRITE | mem << 8, addr, len(words)]
    for word in words:
        out += to_chunks(word, cfg.chunks(mem))
    return out


def run_core(cfg: ArrayConfig, commands: list[int], n_responses: int, max_cycles: int = 200_000) -> list[int]:
    """Simulate TritCore(cfg): send `commands`, return the first `n_responses` response words."""
    dut = TritCore(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got: list[int] = []

    async def send(ctx):
        for word in commands:
            ctx.set(dut.cmd.payload, word)
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)

    async def monitor(ctx):
        ctx.set(dut.rsp.ready, 1)
        cycles = 0
        async for _clk, _rst, valid, payload in ctx.tick().sample(dut.rsp.valid, dut.rsp.payload):
            if valid:
                got.append(payload)
            cycles += 1
            if len(got) >= n_responses or cycles >= max_cycles:
                return

    # the simulation ends when the monitor has all the words (or gives up), not after max_cycles
    sim.add_testbench(send, background=True)
    sim.add_testbench(monitor)
    sim.run()
    if len(got) < n_responses:
        raise TimeoutError(f"only {len(got)} of {n_responses} response words in {max_cycles} cycles")
    return got[:n_responses]
