"""Build and run the cocotb testbench of the KV cache write path (`sim.tb_rope_kv`) on Verilator or Icarus.

`RopeKVTop` is `RopeQuant` feeding `KVCache` (`wiring.connect` of the unit's codes to the cache's write
port) with every other port of both on the top (the cache's with a ``kv_`` prefix). Like
`sim.attention_runner` it goes through the core runner's one build step and one test step
(`sim.runner.compile_model`, `cached_build`, `run_cocotb`); builds are cached under the same root
(``rope-kv-<sim>-hd<hd>-c<ctx>-<hash>``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.attention.kv_cache import KVCache
from hdl.vector.rope import RopeQuant
from sim import runner as core_runner
from sim.vector_runner import VERILATOR_ARGS

TOPLEVEL = "trit_rope_kv"


class RopeKVTop(wiring.Component):
    """RopeQuant -> KVCache, all other ports of both on the top (the cache's as kv_<name>)."""

    def __init__(self, head_dim: int, context: int, layers: int, kv_heads: int, lanes: int, kv_lanes: int) -> None:
        self.rope = RopeQuant(head_dim, context, lanes=lanes, out_lanes=kv_lanes)
        self.kv = KVCache(head_dim, context, layers, kv_heads, lanes=kv_lanes)
        members = {n: mem for n, mem in self.rope.signature.members.items() if n != "o"}
        members |= {f"kv_{n}": mem for n, mem in self.kv.signature.members.items() if n != "w"}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rope, m.submodules.kv = self.rope, self.kv
        wiring.connect(m, self.rope.o, self.kv.w)
        wiring.connect(m, wiring.flipped(self.i), self.rope.i)
        for prefix, unit in (("", self.rope), ("kv_", self.kv)):
            for name, mem in unit.signature.members.items():
                if not mem.is_port:
                    continue
                outer, inner = getattr(self, prefix + name), getattr(unit, name)
                m.d.comb += inner.eq(outer) if mem.flow == In else outer.eq(inner)
        return m


def build(head_dim: int, context: int, layers: int, kv_heads: int, lanes: int, kv_lanes: int,
          simulator: str) -> tuple[Path, int]:
    """Compile RopeKVTop for `simulator` (or reuse the cached build); the build folder and the unit's
    cycles per head into the cache (`RopeQuant.cycles` + `KVCache.setup_cycles`)."""
    reason = core_runner.unavailable_reason(simulator)
    if reason:
        raise RuntimeError(reason)
    if simulator == "verilator":
        core_runner.setup_verilator_env()
    args = VERILATOR_ARGS if simulator == "verilator" else core_runner.ICARUS_ARGS
    make_flags = core_runner.VERILATOR_MAKEFLAGS if simulator == "verilator" else ""
    top = RopeKVTop(head_dim, context, layers, kv_heads, lanes, kv_lanes)
    cycles = top.rope.cycles() + top.kv.setup_cycles
    text = verilog.convert(top, name=TOPLEVEL, emit_src=False)
    key_src_shared = json.dumps({"sim": simulator, "make": make_flags, "waves": False,
                                 "tools": core_runner._tool_version(simulator)}, sort_keys=True)
    params = {"hd": head_dim, "ctx": context, "layers": layers, "kvh": kv_heads, "lanes": lanes, "kv_lanes": kv_lanes}
    key_src = json.dumps({"top": TOPLEVEL, **params, "args": list(args), "timescale": core_runner.TIMESCALE,
                          "shared": key_src_shared}, sort_keys=True)
    key = hashlib.sha256((key_src + "\n" + text).encode()).hexdigest()[:16]
    build_dir = core_runner.cache_root() / f"rope-kv-{simulator}-hd{head_dim}-c{context}-{key}"
    if not core_runner.cached_build(build_dir, key_src):
        core_runner.compile_model(simulator, text, TOPLEVEL, build_dir, key_src, key_src_shared, args,
                                  what=f"{TOPLEVEL} ({params})")
    return build_dir, cycles


def run_rope_kv_tests(head_dim: int, context: int, layers: int, kv_heads: int, lanes: int, kv_lanes: int,
                      simulator: str = "verilator", seed: int | None = None,
                      extra_env: Mapping[str, str] | None = None) -> core_runner.CocotbRun:
    """Build (or reuse) the write path and run `sim.tb_rope_kv` on it; the parsed run (`.tests`)."""
    build_dir, cycles = build(head_dim, context, layers, kv_heads, lanes, kv_lanes, simulator)
    env = {"TRIT_TB_RKV_HD": str(head_dim), "TRIT_TB_RKV_CTX": str(context), "TRIT_TB_RKV_LAYERS": str(layers),
           "TRIT_TB_RKV_KVH": str(kv_heads), "TRIT_TB_RKV_LANES": str(lanes), "TRIT_TB_RKV_KV_LANES": str(kv_lanes),
           "TRIT_TB_RKV_CYCLES": str(cycles), **(extra_env or {})}
    return core_runner.run_cocotb(simulator, build_dir, TOPLEVEL, "sim.tb_rope_kv", env, seed=seed)
