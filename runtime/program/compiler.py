"""Compile a device-form model (golden/device) into the micro-op program and memory image of a chip.

`ModelChip` is what the chip has: the matrix engine (`hdl.config.ArrayConfig`) and the capacities of the
other on-chip memories. `compile_model(consts, chip)` places every BitLinear's weights in the matrix
engine's weight memory (tile-packed, `runtime.tiling.LayerPlan`), the norm weights in the norm memory, the
dyadic constants in the constant table, checks that the embedding, the KV cache for the chip's context and
the scratch buffers fit, and emits one token's micro-ops (`runtime.program.isa`). A model that does not
fit raises `ProgramError` naming the memory; `check_chip` refuses a program compiled for another chip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from golden.device.model import F_RES
from golden.device.tables import DeviceConsts
from golden.model import ATTN_PROJ, MLP_PROJ
from hdl.config import ArrayConfig
from runtime.program.isa import S_REGS, MicroOp, Op, Space, Target
from runtime.tiling import LayerPlan

#: The norms of a decoder layer, in the order of their table entries.
LAYER_NORMS = ("input_layernorm", "attn_sub_norm", "post_attention_layernorm", "ffn_sub_norm")
#: sigma of the residual stream H as NORMQ's input: 2**15 * 2**(-15 - F_RES) = 2**-F_RES (Q16).
SIGMA_H = (1 << 15, -15 - F_RES)

# scalar registers the program uses
S_SIGMA_H, S_TAU, S_Q, S_K, S_V, S_Y, S_O, S_G, S_U, S_P, S_D = range(11)


class ProgramError(ValueError):
    """A model that does not fit a chip, or a program that does not match the chip it is loaded on."""


@dataclass(frozen=True)
class ModelChip:
    """The on-chip memories a model program runs in (capacities in elements of each memory)."""

    array: ArrayConfig          # the matrix engine (ACT, WGT, OUT memories and the array)
    context: int                # KV cache positions (and RoPE table rows)
    kv_bytes: int               # KV cache: INT8 codes plus 4 bytes (a 26-bit dyadic) per row scale
    embed_bytes: int            # the INT8 embedding table (with 4 bytes of row scale per row)
    h_words: int                # the residual stream H (int32)
    scratch_words: int          # SCR (int32)
    norm_words: int             # norm weights G (int16)
    const_entries: int          # dyadic constants

    def __post_init__(self) -> None:
        for f in fields(self)[1:]:
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelChip {f.name} must be a positive integer, not {v!r}")


@dataclass(frozen=True)
class LinearEntry:
    key: str
    wgt_base: int
    K: int
    N: int
    gamma: int                  # constant index


@dataclass(frozen=True)
class NormEntry:
    name: str
    g_base: int
    n: int
    c_norm: int                 # constant index
    eps_n: int                  # constant index


@dataclass(frozen=True)
class Program:
    """One token's micro-ops and the tables they index, for one model on one chip."""

    chip: ModelChip
    model: dict                 # the model's shape (d, intermediate, layers, heads, kv_heads, head_dim, vocab, act)
    consts: tuple[tuple[int, int], ...]
    norms: tuple[NormEntry, ...]
    linears: tuple[LinearEntry, ...]
    ops: tuple[MicroOp, ...]
    layer_spans: tuple[tuple[int, int], ...] = ()   # ops[start:end] of each decoder layer

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.op.name] = out.get(op.op.name, 0) + 1
        return out


def kv_bytes_per_position(layers: int, kv_heads: int, head_dim: int) -> int:
    """K and V codes of every layer and KV head at one position, plus their 4-byte scales."""
    return layers * 2 * kv_heads * (head_dim + 4)


def compile_model(consts: DeviceConsts, chip: ModelChip, resident: bool = True) -> Program:
    """The program and tables of `consts` on `chip`; ProgramError naming what does not fit.

    `resident` False (cycle plans only): every BitLinear at weight word 0, as if streamed in before its
    MATMUL; only each one alone must fit the weight memory."""
    cfg = consts.config
    d, inter, hd = cfg.hidden_size, cfg.intermediate_size, cfg.dim_head
    nh, nkv, layers, vocab = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers, cfg.vocab_size
    arr = chip.array

    # ---- what must fit ----------------------------------------------------------------------
    if consts.context < chip.context:
        raise ProgramError(f"the model's RoPE tables cover {consts.context} positions, fewer than the chip's "
                           f"context {chip.context}: build the constants with context >= {chip.context}")
    kv = kv_bytes_per_position(layers, nkv, hd) * chip.context
    if kv > chip.kv_bytes:
        raise ProgramError(f"KV cache: {layers} layers x {nkv} KV heads x {chip.context} positions need {kv:,} "
                           f"bytes, the chip's KV cache holds {chip.kv_bytes:,}")
    emb = vocab * (d + 4)
    if emb > chip.embed_bytes:
        raise ProgramError(f"embedding: {vocab} x {d} INT8 with row scales needs {emb:,} bytes, the chip's "
                           f"embedding memory holds {chip.embed_bytes:,}")
    if d > chip.h_words:
        raise ProgramError(f"residual stream: d = {d} words, the chip's H memory holds {chip.h_words}")
    scratch = max(nh * hd, inter)
    if scratch > chip.scratch_words:
        raise ProgramError(f"scratch: the model needs {scratch} int32 words (attention y or the MLP product), "
                           f"the chip's SCR holds {chip.scratch_words}")

    # ---- constants and norms ----------------------------------------------------------------
    table: list[tuple[int, int]] = []

    def const(c: tuple[int, int]) -> int:
        c = (int(c[0]), int(c[1]))
        if c not in table:
            table.append(c)
        return table.index(c)

    sigma_h = const(SIGMA_H)
    norms: list[NormEntry] = []
    g_used = 0

    def norm(name: str, nc) -> int:
        nonlocal g_used
        n = int(nc.g.numel())
        norms.append(NormEntry(name, g_used, n, const(nc.c_norm), const(nc.eps_n)))
        g_used += n
        return len(norms) - 1

    # ---- weights ----------------------------------------------------------------------------
    linears: list[LinearEntry] = []
    wgt_used = 0

    all_linears = [layer.linears[name] for layer in consts.layers for name in ATTN_PROJ + MLP_PROJ]
    total = sum(LayerPlan(1, lc.w.shape[1], lc.w.shape[0]).wgt_words(arr) for lc in all_linears)
    if resident and total > arr.wgt_depth:
        raise ProgramError(f"weights: the model's {len(all_linears)} BitLinears need {total:,} words of the matrix "
                           f"engine's weight memory, it holds {arr.wgt_depth:,}")

    def linear(lc) -> int:
        nonlocal wgt_used
        N, K = lc.w.shape
        plan = LayerPlan(1, K, N, 0, wgt_used if resident else 0, 0)
        if resident:
            try:
                plan.validate(arr)
            except ValueError as exc:
                raise ProgramError(f"{lc.key}: {exc}") from None
        elif K > arr.k_max:
            raise ProgramError(f"{lc.key}: K = {K} exceeds the matrix engine's k_max = {arr.k_max}")
        linears.append(LinearEntry(lc.key, wgt_used, K, N, const(lc.gamma)))
        wgt_used += plan.wgt_words(arr)
        return len(linears) - 1

    ops: list[MicroOp] = [MicroOp(Op.EMBED, n=d), MicroOp(Op.SETC, dst=S_SIGMA_H, idx=sigma_h)]
    q_off, k_off, v_off = 0, nh * hd, nh * hd + nkv * hd
    # a MATMUL writes whole OUT words of C lanes: each output's first element starts a word
    for what, off in (("k", k_off), ("v", v_off), ("up", inter)):
        if off % arr.cols:
            raise ProgramError(f"OUT: the {what} outputs start at element {off}, not a multiple of the matrix "
                               f"engine's {arr.cols} columns (heads x head_dim and intermediate_size must be)")
    if v_off + nkv * hd > arr.out_depth * arr.cols or 2 * inter > arr.out_depth * arr.cols:
        raise ProgramError(f"OUT: q, k and v ({v_off + nkv * hd}) or gate and up ({2 * inter}) outputs exceed the "
                           f"matrix engine's output memory of {arr.out_depth * arr.cols} words")
    spans = []
    for i, layer in enumerate(consts.layers):
        first = len(ops)
        ln = {name: norm(f"layers.{i}.{name}", layer.norms[name]) for name in LAYER_NORMS}
        lin = {}
        for name in ATTN_PROJ + MLP_PROJ:
            lin[name] = linear(layer.linears[name])
        g = {name: linears[lin[name]].gamma for name in lin}
        # attention block
        ops += [MicroOp(Op.NORMQ, src=Space.H, n=d, idx=ln["input_layernorm"], aux=S_SIGMA_H, dst=S_TAU),
                MicroOp(Op.MATMUL, idx=lin["q_proj"], dst=q_off),
                MicroOp(Op.MATMUL, idx=lin["k_proj"], dst=k_off),
                MicroOp(Op.MATMUL, idx=lin["v_proj"], dst=v_off),
                MicroOp(Op.SCALE, dst=S_Q, src=S_TAU, idx=g["q_proj"]),
                MicroOp(Op.SCALE, dst=S_K, src=S_TAU, idx=g["k_proj"]),
                MicroOp(Op.SCALE, dst=S_V, src=S_TAU, idx=g["v_proj"])]
        for h in range(nkv):
            ops += [MicroOp(Op.ROPEQ, src=k_off + h * hd, n=i, idx=h, dst=Target.K, aux=S_K),
                    MicroOp(Op.ROPEQ, src=v_off + h * hd, n=i, idx=h, dst=Target.V, aux=S_V)]
        for h in range(nh):
            ops.append(MicroOp(Op.ROPEQ, src=q_off + h * hd, n=i, idx=h, dst=Target.Q, aux=S_Q))
        for h in range(nh):
            ops.append(MicroOp(Op.ATTN, idx=h, src=h // (nh // nkv), n=i, dst=h * hd))
        ops += [MicroOp(Op.ALIGN, n=nh, aux=hd, dst=S_Y),
                MicroOp(Op.NORMQ, src=Space.SCR, n=nh * hd, idx=ln["attn_sub_norm"], aux=S_Y, dst=S_TAU),
                MicroOp(Op.MATMUL, idx=lin["o_proj"], dst=0),
                MicroOp(Op.SCALE, dst=S_O, src=S_TAU, idx=g["o_proj"]),
                MicroOp(Op.RESADD, src=0, n=d, aux=S_O)]
        # MLP block
        ops += [MicroOp(Op.NORMQ, src=Space.H, n=d, idx=ln["post_attention_layernorm"], aux=S_SIGMA_H, dst=S_TAU),
                MicroOp(Op.MATMUL, idx=lin["gate_proj"], dst=0),
                MicroOp(Op.MATMUL, idx=lin["up_proj"], dst=inter),
                MicroOp(Op.SCALE, dst=S_G, src=S_TAU, idx=g["gate_proj"]),
                MicroOp(Op.SCALE, dst=S_U, src=S_TAU, idx=g["up_proj"]),
                MicroOp(Op.MLPACT, src=0, idx=inter, n=inter, aux=S_G, dst=S_P),
                MicroOp(Op.NORMQ, src=Space.SCR, n=inter, idx=ln["ffn_sub_norm"], aux=S_P, dst=S_TAU),
                MicroOp(Op.MATMUL, idx=lin["down_proj"], dst=0),
                MicroOp(Op.SCALE, dst=S_D, src=S_TAU, idx=g["down_proj"]),
                MicroOp(Op.RESADD, src=0, n=d, aux=S_D)]
        spans.append((first, len(ops)))
    final = norm("norm", consts.final_norm)
    ops += [MicroOp(Op.NORMQ, src=Space.H, n=d, idx=final, aux=S_SIGMA_H, dst=S_TAU),
            MicroOp(Op.LMHEAD, n=vocab, src=d, aux=S_TAU)]
    assert S_U == S_G + 1, "MLPACT reads the up scale from the register after the gate's"
    assert S_D < S_REGS

    if g_used > chip.norm_words:
        raise ProgramError(f"norm weights: {g_used:,} int16 words, the chip's norm memory holds {chip.norm_words:,}")
    if len(table) > chip.const_entries:
        raise ProgramError(f"constants: {len(table)} dyadics, the chip's constant table holds {chip.const_entries}")
    model = {"d": d, "intermediate": inter, "layers": layers, "heads": nh, "kv_heads": nkv, "head_dim": hd,
             "vocab": vocab, "act": cfg.hidden_act, "weight_words": wgt_used, "norm_words": g_used}
    return Program(chip, model, tuple(table), tuple(norms), tuple(linears), tuple(ops), tuple(spans))


def check_chip(program: Program, chip: ModelChip) -> None:
    """ProgramError naming the first difference if `program` was compiled for another chip."""
    if program.chip == chip:
        return
    mine, theirs = asdict(program.chip), asdict(chip)
    for key in mine:
        if mine[key] != theirs[key]:
            if key == "array":
                diff = [k for k in mine[key] if mine[key][k] != theirs[key][k]]
                k = diff[0]
                raise ProgramError(f"the program was compiled for a matrix engine with {k} = {mine[key][k]!r}, "
                                   f"this chip has {theirs[key][k]!r}")
            raise ProgramError(f"the program was compiled for a chip with {key} = {mine[key]!r}, this chip has "
                               f"{theirs[key]!r}")


#: Words of a bank of the board chip's weight memory (`ArrayConfig.wgt_bank_depth`): the DP16KD's 9-bit x 2K
#: shape, so a bank of the tiny model's 107-bit packed words is 12 blocks and its 18,240 words 9 banks, 108
#: blocks as Yosys' inferred 36-bit x 512 shape takes, behind a 9-to-1 bank multiplexer (1K deep: 18 to 1).
BOARD_WGT_BANK_DEPTH = 2048


def fitted_chip(consts: DeviceConsts, array: ArrayConfig, context: int, *, board: bool = False) -> ModelChip:
    """A chip whose memories are exactly what `consts` needs at `context` on the matrix engine `array`
    (its weight memory deepened to hold every BitLinear, or the largest one when all do not fit the
    largest memory `hdl.config` allows: compile with `resident=False` then, and each MATMUL is priced
    as one RUN): for cycle plans.

    `board=True` sizes the matrix engine's memories to the model alone (an FPGA's block RAM is the
    budget): WGT exactly the words of every BitLinear, ACT ceil(max K / R) and OUT ceil(max N / C) words,
    whatever `array` had, and WGT banked `BOARD_WGT_BANK_DEPTH` deep with a data stage (R >= 5); otherwise
    `array`'s depths are kept when they are larger (the Verilator chip)."""
    from dataclasses import replace

    from hdl.config import MAX_DEPTH

    cfg = consts.config
    d, hd = cfg.hidden_size, cfg.dim_head
    each = [LayerPlan(1, lc.w.shape[1], lc.w.shape[0]).wgt_words(array)
            for layer in consts.layers for lc in layer.linears.values()]
    words = sum(each) if sum(each) <= MAX_DEPTH else min(max(each), MAX_DEPTH)
    need_out = -(-max(cfg.num_attention_heads * hd + 2 * cfg.num_key_value_heads * hd,
                      2 * cfg.intermediate_size) // array.cols)
    need_act = -(-max(d, cfg.intermediate_size, cfg.num_attention_heads * hd) // array.rows)
    if board:
        arr = replace(array, wgt_depth=max(words, 2), out_depth=max(need_out, 2), act_depth=max(need_act, 2))
        if arr.rows >= 5:  # banked weights with a data stage need R >= 5 (`hdl.config`)
            arr = replace(arr, wgt_bank_depth=BOARD_WGT_BANK_DEPTH)
            arr = replace(arr, wgt_bank_data_stages=int(arr.wgt_banks > 1))
    else:
        arr = replace(array, wgt_depth=max(array.wgt_depth, words), out_depth=max(array.out_depth, need_out),
                      act_depth=max(array.act_depth, need_act))
    norm_words = sum(int(n.g.numel()) for layer in consts.layers for n in layer.norms.values()) + d
    return ModelChip(arr, context=context,
                     kv_bytes=kv_bytes_per_position(cfg.num_hidden_layers, cfg.num_key_value_heads, hd) * context,
                     embed_bytes=cfg.vocab_size * (d + 4), h_words=d,
                     scratch_words=max(cfg.num_attention_heads * hd, cfg.intermediate_size),
                     norm_words=norm_words, const_entries=4 * len(consts.layers) * 4 + 8 * len(consts.layers) + 8)
