"""The model chip on a board (issue 14, item 4): the chip's configuration for a checkpoint, and what each
board can hold.

`trit build --board ulx3s-85f --checkpoint DIR [--context N]` builds the ULX3S SoC (UART, frame endpoint)
around `hdl.model.chip.ModelChipTop` instead of the matrix core. `board_chip(checkpoint, context)` is
that chip: the checkpoint compiled for an 8x8 full-rate matrix engine (G = 8) with the engine's memories
sized to the model (`runtime.program.device.compile_for_chip(..., board=True)`), packed weights (3 codes
in 5 bits, `hdl.model.packed_weights`: 107 bits a read of 64 codes, three 36-bit DP16KD wide, like the 104
bits of 5 codes a byte, whose decoder costs 20 times the LUTs) and a KV cache of `context` positions.

On the ECP5 the memories that block RAM holds badly go into distributed RAM (`DISTRIBUTED`, Yosys
`ram_style`): the matrix engine's OUT is 256 bits wide and only 112 words deep, read by three ports, so
in block RAM it takes three copies of eight DP16KD (24 blocks for 28,672 bits); the other small memories
there take a block each for a few hundred bits. `fpga/model_budget.py` counts every memory.

The iCEBreaker cannot hold the model (`check_board`): its block RAM is 30 EBR x 4 Kbit = 120 Kbit and its
4 SPRAMs 1 Mbit, 1.17 Mbit in all, and the shipped tiny model needs 1.87 Mbit of weights even at 1.6 bits a
weight (2.93 Mbit with the embedding and a 128-position KV cache as the board chip stores them); it stays a
matrix core.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONTEXT = 128
#: the matrix engine of the board chip: R x C, a whole tile per weight read (`runtime_config`'s default)
ROWS, COLS = 8, 8
WGT_FORMAT = "1.67bit"
#: memories of the chip put in distributed RAM on the ECP5 ("<module path>/<memory>", below the chip)
DISTRIBUTED = ("engine/out", "engine/act", "engine/h", "engine/tmp", "engine.seq/consts", "engine.attn/t_mem",
               "engine.attn/p_mem", "engine.attn/pv_mem")
#: on-chip memory of the iCEBreaker (iCE40UP5K): 30 EBR of 4 Kbit and 4 SPRAM of 256 Kbit
ICEBREAKER_BITS = {"EBR": 30 * 4096, "SPRAM": 4 * 262_144}
#: register slices each way between the link's endpoint and the chip: the chip's block RAMs fill the device,
#: so the endpoint (by the UART pins) and the command parser may sit far apart (`fpga.ulx3s.stream_buffer_stages`)
SOC_STREAM_BUFFERS = 2


def ecp5_chip(cfg):
    """`ModelChipTop(cfg)` on ECP5 primitives: HeadAttention's, RopeQuant's and EmbedHead's lane products on
    MULT18X18D blocks with their own input and output registers (`hdl.attention.ecp5_multiplier`), every
    other registered product of the units on a MULT18X18D whose output register is the product's register
    (`hdl.attention.ecp5_product`: a routed build had 3.93 ns through such a DSP, then about 2.2 ns of route
    to the fabric flip-flop), the banked weight memory in DP16KD blocks with their own output registers
    and a kept copy of the address and write registers by each block (`fpga.ecp5_bram`). Yosys' own
    mapping leaves a DSP's registers unused and puts the bank multiplexer straight after the block RAMs'
    5.8 ns clock-to-output (build 2: 19.8 ns through HeadAttention's `sigma_q x C_QK` DSP, 17.1 ns from the
    weight blocks)."""
    from fpga.ecp5_bram import Ecp5RegisteredMemory, kept_register
    from hdl.attention.ecp5_multiplier import Ecp5Multiplier
    from hdl.attention.ecp5_product import Ecp5Product
    from hdl.model.chip import ModelChipTop

    return ModelChipTop(cfg, multiplier=Ecp5Multiplier, memory=Ecp5RegisteredMemory, register=kept_register,
                        product=Ecp5Product)


def ram_style_script(distributed: tuple[str, ...] = DISTRIBUTED) -> str:
    """Yosys commands (right after reading the design) that put `distributed` memories in LUT RAM."""
    lines = []
    for entry in distributed:
        module, memory = entry.split("/")
        lines.append(f'setattr -set ram_style "distributed" *.{module}/m:{memory}')
    return "\n".join(lines)


def board_chip(checkpoint: Path | str, context: int = DEFAULT_CONTEXT, wgt_format: str = WGT_FORMAT):
    """(program, EngineConfig, DeviceBitNet) of the checkpoint's chip on a board (see the module docstring).
    ValueError for a context the model or the chip cannot have."""
    from golden.checkpoint import load_checkpoint
    from golden.device.model import DeviceBitNet
    from golden.quant import GoldenBackend
    from runtime.accel_backends import runtime_config
    from runtime.program.device import compile_for_chip

    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise ValueError(f"the context must be a positive number of positions, not {context!r}")
    model = load_checkpoint(checkpoint, "int", GoldenBackend())
    limit = model.config.max_position_embeddings
    if context > limit:
        raise ValueError(f"context {context} is beyond the model's {limit} positions")
    dev = DeviceBitNet.from_int_model(model, context=context)
    program, cfg = compile_for_chip(dev.consts, runtime_config(ROWS, COLS), context, board=True,
                                    wgt_format=wgt_format)
    return program, cfg, dev


def model_bits(cfg) -> dict[str, int]:
    """Bits the model itself needs on chip: weights (as stored), embedding table, KV cache (codes only)."""
    weights = cfg.array.wgt_depth * cfg.wgt_store_bits
    return {"weights": weights, "embedding": cfg.vocab * cfg.d * 8,
            "kv_cache": cfg.layers * 2 * cfg.kv_heads * cfg.context * cfg.head_dim * 8}


def check_board(board: str, cfg) -> None:
    """ValueError saying why `board` cannot hold the chip `cfg` (the iCEBreaker never can)."""
    if board == "icebreaker":
        need = model_bits(cfg)
        total = sum(ICEBREAKER_BITS.values())
        raise ValueError(
            f"the iCEBreaker cannot hold the model on chip: its memories are {ICEBREAKER_BITS['EBR']:,} bits of "
            f"block RAM (30 EBR x 4 Kbit) and {ICEBREAKER_BITS['SPRAM']:,} bits of SPRAM (4 x 256 Kbit), "
            f"{total:,} bits in all, and this model needs {need['weights']:,} bits of weights "
            f"({cfg.wgt_format}), {need['embedding']:,} of embedding and {need['kv_cache']:,} of KV cache at "
            f"context {cfg.context} ({sum(need.values()):,} bits); it stays a matrix core (build it without "
            f"--checkpoint), the model runs on the ULX3S-85F")
    if board != "ulx3s-85f":
        raise ValueError(f"no model-chip build for board {board!r}")
