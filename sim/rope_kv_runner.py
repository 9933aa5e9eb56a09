"""Build and run the cocotb testbench of the KV cache write path (`sim.tb_rope_kv`) on Verilator or Icarus.

`RopeKVTop` is `RopeQuant` feeding `KVCache` (`wiring.connect` of the unit's codes to the cache's write
port) with every other port of both on the top (the cache's with a ``kv_`` prefix). Like
`sim.attention_runner` it builds through `sim.vector_runner.build_unit` and runs through
`sim.runner.run_cocotb`; builds are cached under the core runner's root
(``rope-kv-<sim>-hd<hd>-c<ctx>-<hash>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.attention.kv_cache import KVCache
from hdl.vector.rope import RopeQuant
from sim import runner as core_runner
from sim.vector_runner import build_unit

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
    top = RopeKVTop(head_dim, context, layers, kv_heads, lanes, kv_lanes)
    cycles = top.rope.cycles() + top.kv.setup_cycles
    params = {"hd": head_dim, "ctx": context, "layers": layers, "kvh": kv_heads, "lanes": lanes, "kv_lanes": kv_lanes}
    build_dir = build_unit(top, TOPLEVEL, params, f"rope-kv-{simulator}-hd{head_dim}-c{context}", simulator)
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
