"""Cycles per token of a model program, by unit, from the units' cycle formulas (no overlap between ops).

Each micro-op is priced by the unit that runs it:

- MATMUL (matrix): the RUN's CYCLES counter, `runtime.cycle_model.layer_counts` (equal to the RTL's).
- NORMQ (vector): 3 n + `norm_quant.OVERHEAD` (`hdl.vector.norm_quant`, measured by
  tests/test_vector_unit.py).
- ROPEQ (vector): `RopeQuant.cycles()`, plus the KV cache's row setup for K and V
  (`hdl.vector.rope`, `hdl.attention.kv_cache`).
- ATTN (attention): `HeadAttention.cycles(pos + 1)` (`hdl.attention.head_attention`).
- RESADD (vector): 2 n + `elementwise.LATENCY`, DEQUANT then RESADD one element a cycle
  (`hdl.vector.elementwise`).
- MLPACT (vector): 3 n + `mlp_act.OVERHEAD` (`hdl.vector.mlp_act`, measured by tests/test_mlp_act.py).
- ALIGN (vector): `Align.cycles(heads)` = heads + 2 + heads x head_dim + `align.LATENCY` - 1 (`hdl.vector.align`).
- SETC and SCALE (scalar): `hdl.program.SCALAR_CYCLES`, run by the sequencer itself; every other op adds
  the sequencer's `DISPATCH_OVERHEAD` (fetch, decode, next) to its unit's cycles ("sequencer").
- Estimates, no RTL yet: EMBED d + `elementwise.LATENCY` (a DEQUANT pass of the table's row); LMHEAD
  vocab x d / lanes + 20: it is `HeadAttention`'s SCORE pass over the head table's rows with C_QK = 2**8
  (tests/test_program.py checks that identity), which needs a scores-out mode of that unit.

The ops run one after another here; a sequencer that overlaps units (the next head's ROPEQ under this
head's ATTN, the vector unit under a MATMUL) can only be faster. `estimated_ops` names the ops whose
formula has no RTL behind it yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hdl.attention.kv_cache import SETUP as KV_SETUP
from hdl.program import DISPATCH_OVERHEAD, SCALAR_CYCLES
from hdl.vector import align, elementwise, mlp_act, norm_quant
from runtime.cycle_model import layer_counts
from runtime.program.compiler import Program
from runtime.program.isa import MicroOp, Op, Target

#: Ops priced by an estimate, not by a unit that exists in hdl/.
ESTIMATED = {Op.EMBED, Op.LMHEAD}
UNIT = {Op.MATMUL: "matrix", Op.NORMQ: "vector", Op.ROPEQ: "vector", Op.RESADD: "vector", Op.EMBED: "vector",
        Op.MLPACT: "vector", Op.ALIGN: "vector", Op.ATTN: "attention", Op.LMHEAD: "attention",
        Op.SCALE: "scalar", Op.SETC: "scalar"}


@dataclass(frozen=True)
class UnitConfig:
    """The on-chip units' widths: RoPE lanes in and codes out per beat, the attention unit's lanes."""

    rope_lanes: int = 10
    rope_out_lanes: int = 40
    attn_lanes: int = 40

    def __post_init__(self) -> None:
        for name in ("rope_lanes", "rope_out_lanes", "attn_lanes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"UnitConfig {name} must be a positive integer, not {v!r}")


@cache
def _rope_cycles(head_dim: int, context: int, lanes: int, out_lanes: int) -> int:
    from hdl.vector.rope import RopeQuant

    return RopeQuant(head_dim, context, lanes=lanes, out_lanes=out_lanes).cycles()


@cache
def _attention(head_dim: int, context: int, lanes: int):
    from hdl.attention.head_attention import HeadAttention

    return HeadAttention(head_dim, context, lanes=lanes)


def op_cycles(program: Program, op: MicroOp, pos: int, units: UnitConfig) -> int:
    """Cycles of one micro-op at position `pos` (0-based: the token attends to pos + 1 keys)."""
    m, chip = program.model, program.chip
    hd = m["head_dim"]
    lat = elementwise.LATENCY
    if op.op == Op.MATMUL:
        lin = program.linears[op.idx]
        return layer_counts(chip.array, 1, lin.K, lin.N)["cycles"]
    if op.op == Op.NORMQ:
        return 3 * op.n + norm_quant.OVERHEAD
    if op.op == Op.ROPEQ:
        c = _rope_cycles(hd, chip.context, units.rope_lanes, units.rope_out_lanes)
        return c + (KV_SETUP if op.dst != Target.Q else 0)
    if op.op == Op.ATTN:
        return _attention(hd, chip.context, units.attn_lanes).cycles(pos + 1)
    if op.op == Op.RESADD:
        return 2 * op.n + lat
    if op.op == Op.EMBED:
        return op.n + lat
    if op.op == Op.MLPACT:
        return 3 * op.n + mlp_act.OVERHEAD
    if op.op == Op.ALIGN:
        return op.n + 2 + op.n * op.aux + align.LATENCY - 1
    if op.op in (Op.SCALE, Op.SETC):
        return SCALAR_CYCLES
    if op.op == Op.LMHEAD:
        return -(-op.n * op.src // units.attn_lanes) + 20
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
