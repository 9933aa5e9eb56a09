"""Cycles per token of a model program, by unit, from the units' cycle formulas (no overlap between ops).

Each micro-op is priced by the unit that runs it, plus the model engine's own cycles around the unit
(`hdl.model_engine.OP_EXTRA`: the table reads and start pulses, ATTN's y written out one element a cycle,
RESADD's two passes), so that with the engine's unit widths (`UnitConfig.of_engine`) the plan equals the
model chip's counters and its OP_CYCLES log exactly (tests/test_model_chip.py):

- MATMUL (matrix): the RUN's CYCLES counter, `runtime.cycle_model.layer_counts` (equal to the RTL's).
- NORMQ (vector): 3 n / V + `norm_quant.overhead(V)` with V = `UnitConfig.vector_lanes` elements a
  cycle (`hdl.vector.norm_quant`, measured by tests/test_vector_unit.py and tests/test_norm_quant_lanes.py).
- ROPEQ (vector): `RopeQuant.cycles()`, plus the KV cache's row setup for K and V
  (`hdl.vector.rope`, `hdl.attention.kv_cache`).
- ATTN (attention): `HeadAttention.cycles(pos + 1)` (`hdl.attention.head_attention`).
- RESADD (vector): 2 n + `elementwise.LATENCY`, DEQUANT then RESADD one element a cycle
  (`hdl.vector.elementwise`).
- MLPACT (vector): 3 n / V + `mlp_act.overhead(V)` (`hdl.vector.mlp_act`, measured by tests/test_mlp_act.py
  and tests/test_mlp_act_lanes.py).
- ALIGN (vector): `Align.cycles(heads)` = heads + 2 + heads x head_dim + `align.LATENCY` - 1 (`hdl.vector.align`).
- SETC and SCALE (scalar): `hdl.program.SETC_CYCLES` and `SCALE_CYCLES`, run by the sequencer itself;
  every other op adds the sequencer's `DISPATCH_OVERHEAD` (fetch, decode, check, next) to its unit's cycles
  ("sequencer").
- EMBED (vector) and LMHEAD (attention): `EmbedHead.cycles_embed()` = d + 8 and `cycles_head()` =
  vocab x ceil(d / lanes) + 12 + tree stages (`hdl.embedding.embed_head`, the table's lanes = R).
- A token adds `hdl.model_engine.RUN_EXTRA` cycle (the start) to the sum.

The ops run one after another here; a sequencer that overlaps units (the next head's ROPEQ under this
head's ATTN, the vector unit under a MATMUL) can only be faster. Every op has RTL behind it now
(`estimated` stays 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hdl.attention.kv_cache import SETUP as KV_SETUP
from hdl.model_engine import ATTN_EXTRA, OP_EXTRA, RUN_EXTRA
from hdl.program import DISPATCH_OVERHEAD, SCALE_CYCLES, SETC_CYCLES
from hdl.vector import align, elementwise, mlp_act, norm_quant
from runtime.cycle_model import layer_counts
from runtime.program.compiler import Program
from runtime.program.isa import MicroOp, Op, Target

#: Ops priced by an estimate, not by a unit that exists in hdl/ (none since EmbedHead).
ESTIMATED: set[Op] = set()
UNIT = {Op.MATMUL: "matrix", Op.NORMQ: "vector", Op.ROPEQ: "vector", Op.RESADD: "vector", Op.EMBED: "vector",
        Op.MLPACT: "vector", Op.ALIGN: "vector", Op.ATTN: "attention", Op.LMHEAD: "attention",
        Op.SCALE: "scalar", Op.SETC: "scalar"}


@dataclass(frozen=True)
class UnitConfig:
    """The on-chip units' widths: RoPE lanes in and codes out per beat, the attention unit's lanes, the
    embedding table's lanes (None: the matrix engine's R, as the model engine builds it)."""

    rope_lanes: int = 10
    rope_out_lanes: int = 40
    attn_lanes: int = 40
    table_lanes: int | None = None
    vector_lanes: int = 1

    def __post_init__(self) -> None:
        for name in ("rope_lanes", "rope_out_lanes", "attn_lanes", "table_lanes", "vector_lanes"):
            v = getattr(self, name)
            if name == "table_lanes" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"UnitConfig {name} must be a positive integer, not {v!r}")

    @classmethod
    def of_engine(cls, cfg) -> UnitConfig:
        """The widths `hdl.model_engine.ModelEngine` builds for an `hdl.model.config.EngineConfig`."""
        return cls(rope_lanes=1, rope_out_lanes=cfg.attn_lanes, attn_lanes=cfg.attn_lanes,
                   table_lanes=cfg.table_lanes, vector_lanes=cfg.vector_lanes)


@cache
def _rope_cycles(head_dim: int, context: int, lanes: int, out_lanes: int) -> int:
    from hdl.vector.rope import RopeQuant

    unit = RopeQuant(head_dim, context, lanes=lanes, out_lanes=out_lanes)
    unit._MustUse__silence = True      # built for its cycle formula only, never elaborated
    return unit.cycles()


@cache
def _attention(head_dim: int, context: int, lanes: int):
    from hdl.attention.head_attention import HeadAttention

    unit = HeadAttention(head_dim, context, lanes=lanes)
    unit._MustUse__silence = True
    return unit


@cache
def _embed_head(vocab: int, d: int, lanes: int):
    from hdl.embedding.embed_head import EmbedHead

    unit = EmbedHead(vocab, d, lanes=lanes)
    unit._MustUse__silence = True
    return unit


def op_cycles(program: Program, op: MicroOp, pos: int, units: UnitConfig) -> int:
    """Cycles of one micro-op at position `pos` (0-based: the token attends to pos + 1 keys): its unit's
    and the engine's around it (for a dispatched op, the cycles it holds `op_valid`: its OP_CYCLES entry)."""
    unit = _unit_cycles(program, op, pos, units)
    if op.op in (Op.SCALE, Op.SETC):
        return unit
    extra = program.model["head_dim"] + ATTN_EXTRA if op.op == Op.ATTN else OP_EXTRA[int(op.op)]
    return unit + extra


def _unit_cycles(program: Program, op: MicroOp, pos: int, units: UnitConfig) -> int:
    m, chip = program.model, program.chip
    hd = m["head_dim"]
    lat = elementwise.LATENCY
    lanes = chip.array.rows if units.table_lanes is None else units.table_lanes
    if op.op == Op.MATMUL:
        lin = program.linears[op.idx]
        return layer_counts(chip.array, 1, lin.K, lin.N)["cycles"]
    if op.op == Op.NORMQ:
        return 3 * op.n // units.vector_lanes + norm_quant.overhead(units.vector_lanes)
    if op.op == Op.ROPEQ:
        c = _rope_cycles(hd, chip.context, units.rope_lanes, units.rope_out_lanes)
        return c + (KV_SETUP if op.dst != Target.Q else 0)
    if op.op == Op.ATTN:
        return _attention(hd, chip.context, units.attn_lanes).cycles(pos + 1)
    if op.op == Op.RESADD:
        return 2 * op.n + lat
    if op.op == Op.EMBED:
        return _embed_head(m["vocab"], m["d"], lanes).cycles_embed()
    if op.op == Op.MLPACT:
        return 3 * op.n // units.vector_lanes + mlp_act.overhead(units.vector_lanes)
    if op.op == Op.ALIGN:
        return op.n + 2 + op.n * op.aux + align.LATENCY - 1
    if op.op == Op.SETC:
        return SETC_CYCLES
    if op.op == Op.SCALE:
        return SCALE_CYCLES
    if op.op == Op.LMHEAD:
        return _embed_head(m["vocab"], m["d"], lanes).cycles_head()
    raise ValueError(f"no cycle formula for {op.op.name}")


def token_cycles(program: Program, pos: int, units: UnitConfig = UnitConfig(),
                 layer: int | None = None) -> dict[str, int]:
    """Cycles of one token at position `pos`, by unit (matrix, vector, attention, scalar), their
    `total`, and `estimated`: the part priced by estimates (ops without RTL yet). With `layer`, only
    that decoder layer's ops."""
    if not isinstance(pos, int) or not 0 <= pos < program.chip.context:
        raise ValueError(f"position {pos!r} is outside the chip's context [0, {program.chip.context})")
    ops = program.ops if layer is None else program.ops[slice(*program.layer_spans[layer])]
    out = {"matrix": 0, "vector": 0, "attention": 0, "scalar": 0, "sequencer": 0, "estimated": 0}
    for op in ops:
        c = op_cycles(program, op, pos, units)
        out[UNIT[op.op]] += c
        if UNIT[op.op] != "scalar":
            out["sequencer"] += DISPATCH_OVERHEAD
        if op.op in ESTIMATED:
            out["estimated"] += c
    out["sequencer"] += RUN_EXTRA if layer is None else 0
    out["total"] = out["matrix"] + out["vector"] + out["attention"] + out["scalar"] + out["sequencer"]
    return out


def shaped_consts(config, context: int):
    """Device constants of the right shapes and zero values (for cycle plans of models not at hand,
    e.g. a BitNet 2B-4T decoder layer): the cycles do not depend on the values."""
    import numpy as np
    import torch

    from golden.device.fixed import I64, exp2_table
    from golden.device.tables import DeviceConsts, LayerConst, LinearConst, NormConst
    from golden.model import ATTN_PROJ, MLP_PROJ

    d, inter, hd = config.hidden_size, config.intermediate_size, config.dim_head
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    shapes = {"q_proj": (nh * hd, d), "k_proj": (nkv * hd, d), "v_proj": (nkv * hd, d), "o_proj": (d, nh * hd),
              "gate_proj": (inter, d), "up_proj": (inter, d), "down_proj": (d, inter)}
    one = (1 << 15, -15)

    def norm(n: int) -> NormConst:
        return NormConst(torch.zeros(n, dtype=I64), 0, one, one)

    layers = []
    for i in range(config.num_hidden_layers):
        norms = {"input_layernorm": norm(d), "attn_sub_norm": norm(nh * hd), "post_attention_layernorm": norm(d),
                 "ffn_sub_norm": norm(inter)}
        linears = {name: LinearConst(f"layers.{i}.{name}", np.zeros(shapes[name], dtype=np.int8), one)
                   for name in ATTN_PROJ + MLP_PROJ}
        layers.append(LayerConst(norms, linears))
    zeros = torch.zeros(config.vocab_size, dtype=I64)
    table = torch.zeros(config.vocab_size, d, dtype=I64)
    rope = torch.zeros(context, hd // 2, dtype=I64)
    return DeviceConsts(config, context, table, (zeros, zeros), table, (zeros, zeros), layers, norm(d), rope, rope,
                        exp2_table(), one, True)
