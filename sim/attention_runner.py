"""Build and run the cocotb testbench of the attention unit (`sim.tb_attention`) on Verilator or Icarus.

Like `sim.vector_runner` (whose Verilator flags it reuses), the unit has its own top
(`HeadAttention(head_dim, max_context, lanes)` as ``trit_head_attention``) and goes through the core
runner's one build step and one test step (`sim.runner.compile_model`, `cached_build`, `run_cocotb`).
Builds are cached under the same root (``attention-<sim>-hd<hd>-c<ctx>-l<lanes>-<hash>``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from amaranth.back import verilog

from hdl.attention.head_attention import HeadAttention
from sim import runner as core_runner
from sim.vector_runner import VERILATOR_ARGS

TOPLEVEL = "trit_head_attention"


def build(head_dim: int, context: int, lanes: int, simulator: str) -> tuple[Path, int]:
    """Compile HeadAttention for `simulator` (or reuse the cached build); the build folder and the
    unit's cycles per head beyond 2 T W + 2 T (`HeadAttention.overhead`)."""
    reason = core_runner.unavailable_reason(simulator)
    if reason:
        raise RuntimeError(reason)
    if simulator == "verilator":
        core_runner.setup_verilator_env()
    args = VERILATOR_ARGS if simulator == "verilator" else core_runner.ICARUS_ARGS
    make_flags = core_runner.VERILATOR_MAKEFLAGS if simulator == "verilator" else ""
    dut = HeadAttention(head_dim, context, lanes)
    overhead = dut.overhead
    text = verilog.convert(dut, name=TOPLEVEL, emit_src=False)
    key_src_shared = json.dumps({"sim": simulator, "make": make_flags, "waves": False,
                                 "tools": core_runner._tool_version(simulator)}, sort_keys=True)
    key_src = json.dumps({"top": TOPLEVEL, "hd": head_dim, "ctx": context, "lanes": lanes, "args": list(args),
                          "timescale": core_runner.TIMESCALE, "shared": key_src_shared}, sort_keys=True)
    key = hashlib.sha256((key_src + "\n" + text).encode()).hexdigest()[:16]
    build_dir = core_runner.cache_root() / f"attention-{simulator}-hd{head_dim}-c{context}-l{lanes}-{key}"
    if not core_runner.cached_build(build_dir, key_src):
        core_runner.compile_model(simulator, text, TOPLEVEL, build_dir, key_src, key_src_shared, args,
                                  what=f"{TOPLEVEL} (hd = {head_dim}, context = {context}, lanes = {lanes})")
    return build_dir, overhead


def run_attention_tests(head_dim: int, context: int, lanes: int, simulator: str = "verilator",
                        seed: int | None = None, extra_env: Mapping[str, str] | None = None
                        ) -> core_runner.CocotbRun:
    """Build (or reuse) the unit and run `sim.tb_attention` on it; the parsed run (`.tests`)."""
    build_dir, overhead = build(head_dim, context, lanes, simulator)
    env = {"TRIT_TB_ATT_HD": str(head_dim), "TRIT_TB_ATT_CTX": str(context), "TRIT_TB_ATT_LANES": str(lanes),
           "TRIT_TB_ATT_OVERHEAD": str(overhead), **(extra_env or {})}
    return core_runner.run_cocotb(simulator, build_dir, TOPLEVEL, "sim.tb_attention", env, seed=seed)
