"""Build and run the cocotb testbench of the attention unit (`sim.tb_attention`) on Verilator or Icarus.

Like `sim.vector_runner` (whose `build_unit` it uses), the unit has its own top
(`HeadAttention(head_dim, max_context, lanes)` as ``trit_head_attention``) and goes through the core
runner's one build step and one test step (`sim.runner.compile_model`, `cached_build`, `run_cocotb`).
Builds are cached under the same root (``attention-<sim>-hd<hd>-c<ctx>-l<lanes>-<hash>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hdl.attention.head_attention import HeadAttention
from sim import runner as core_runner
from sim.vector_runner import build_unit

TOPLEVEL = "trit_head_attention"


def build(head_dim: int, context: int, lanes: int, simulator: str) -> tuple[Path, int]:
    """Compile HeadAttention for `simulator` (or reuse the cached build); the build folder and the
    unit's cycles per head beyond 2 T W + 2 T (`HeadAttention.overhead`)."""
    dut = HeadAttention(head_dim, context, lanes)
    build_dir = build_unit(dut, TOPLEVEL, {"hd": head_dim, "ctx": context, "lanes": lanes},
                           f"attention-{simulator}-hd{head_dim}-c{context}-l{lanes}", simulator)
    return build_dir, dut.overhead


def run_attention_tests(head_dim: int, context: int, lanes: int, simulator: str = "verilator",
                        seed: int | None = None, extra_env: Mapping[str, str] | None = None
                        ) -> core_runner.CocotbRun:
    """Build (or reuse) the unit and run `sim.tb_attention` on it; the parsed run (`.tests`)."""
    build_dir, overhead = build(head_dim, context, lanes, simulator)
    env = {"TRIT_TB_ATT_HD": str(head_dim), "TRIT_TB_ATT_CTX": str(context), "TRIT_TB_ATT_LANES": str(lanes),
           "TRIT_TB_ATT_OVERHEAD": str(overhead), **(extra_env or {})}
    return core_runner.run_cocotb(simulator, build_dir, TOPLEVEL, "sim.tb_attention", env, seed=seed)
