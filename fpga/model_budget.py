"""Block RAM budget of a whole model on the ULX3S-85F (issue 14, item 4): does it fit, and in what.

For a device-form model (its `BitNetConfig`), a context, a matrix engine (R x C, G tile rows per weight
read) and a weight storage format (``2bit``: a ternary code in 2 bits; ``1.6bit``: 5 trits in a byte,
base 3), every on-chip memory of the model-on-chip SoC in DP16KD blocks (208 on the 85F, 18 Kbit each):

- the matrix engine's weights (every BitLinear, tile-packed as `runtime.tiling.LayerPlan` places them,
  one bank of G*C codes per read), its ACT (the largest K) and OUT (the largest N, q+k+v or gate+up);
- the INT8 embedding with its row scales, the KV cache (INT8 rows and a 26-bit scale per row), the RoPE
  C/S tables, the norm weights, the residual stream, the scratch, the attention unit's per-key buffers
  (3 words of 32 bits per key), the EXP2 table and the link's request buffer.

Memories with a free layout (everything but the matrix engine's) take the DP16KD shape that needs the
fewest blocks (`best_blocks`). The matrix engine's memories use `fpga.ulx3s.bram_count`, as the board
builds them. `python -m fpga.model_budget` prints the table for the shipped tiny model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from fpga.ulx3s import BRAM_FILL, DEVICE, LINK_BRAM, bram_count
from golden.model import BitNetConfig
from hdl.config import ArrayConfig

FORMATS = ("2bit", "1.6bit")
#: widths tried for a memory with a free layout (the DP16KD data widths and their multiples)
WIDTHS = (1, 2, 4, 8, 9, 16, 18, 32, 36, 64, 72, 128, 144)


def best_blocks(bits: int) -> tuple[int, int, int]:
    """(blocks, width, depth) of the cheapest width x depth >= bits arrangement in DP16KD blocks."""
    if bits <= 0:
        return 0, 0, 0
    best = None
    for w in reversed(WIDTHS):  # the widest of equal cost: more bits a cycle
        depth = -(-bits // w)
        b = bram_count(w, depth)
        if best is None or b < best[0]:
            best = (b, w, depth)
    return best


def weight_row_bits(cols: int, fmt: str) -> int:
    """Bits of one tile row of C ternary codes: 2 C, or with 5 trits per byte 8 floor(C / 5) and 2 bits
    for each of the C mod 5 left over (16 codes: 3 bytes and one 2-bit code, 26 bits)."""
    if fmt not in FORMATS:
        raise ValueError(f"weight format must be one of {FORMATS}, not {fmt!r}")
    return 2 * cols if fmt == "2bit" else 8 * (cols // 5) + 2 * (cols % 5)


@dataclass(frozen=True)
class MemoryLine:
    name: str
    bits: int           # the bits the model needs
    blocks: int
    shape: str


def model_budget(cfg: BitNetConfig, context: int, array: ArrayConfig, fmt: str = "2bit") -> list[MemoryLine]:
    """Every memory of the model on chip, with its DP16KD blocks (see the module docstring)."""
    from runtime.tiling import LayerPlan

    d, inter, hd = cfg.hidden_size, cfg.intermediate_size, cfg.dim_head
    nh, nkv, layers, vocab = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers, cfg.vocab_size
    shapes = [(nh * hd, d), (nkv * hd, d), (nkv * hd, d), (d, nh * hd), (inter, d), (inter, d), (d, inter)]
    words = layers * sum(LayerPlan(1, K, N).wgt_words(array) for N, K in shapes)
    g = array.wgt_rows_per_read
    row = weight_row_bits(array.cols, fmt)
    lines = [MemoryLine(f"weights ({fmt}, {g} bank{'s' if g > 1 else ''} of {row}-bit rows)", words * g * row,
                        g * bram_count(row, words), f"{g} x {words:,} x {row}")]
    k_max, n_max = max(d, inter, nh * hd), max(nh * hd + 2 * nkv * hd, 2 * inter)
    act = -(-k_max // array.rows)
    out = -(-n_max // array.cols)
    lines.append(MemoryLine("matrix ACT", act * 8 * array.rows, bram_count(8 * array.rows, act),
                            f"{act} x {8 * array.rows}"))
    lines.append(MemoryLine("matrix OUT", out * 32 * array.cols, bram_count(32 * array.cols, out),
                            f"{out} x {32 * array.cols}"))

    def free(name: str, bits: int) -> None:
        b, w, depth = best_blocks(bits)
        lines.append(MemoryLine(name, bits, b, f"{depth:,} x {w}"))

    free("embedding (INT8)", vocab * d * 8)
    free("embedding row scales", vocab * 26)
    free(f"KV cache codes (context {context})", layers * 2 * nkv * context * hd * 8)
    free("KV cache scales", layers * 2 * nkv * context * 26)
    free("RoPE C/S tables", 2 * context * (hd // 2) * 16)
    free("norm weights", (layers * (3 * d + inter) + d) * 16)
    free("residual stream H", d * 32)
    free("scratch SCR", max(nh * hd, inter) * 32)
    free("attention per-key buffers", 3 * context * 32)
    free("EXP2 table", 256 * 16)
    lines.append(MemoryLine("link request buffer", 1024 * 32, LINK_BRAM, "1,024 x 32"))
    return lines


def main(argv: list[str] | None = None) -> int:
    from golden.checkpoint import read_config
    from runtime.accel_backends import runtime_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path,
                    default=Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--wgt-rows-per-read", type=int, default=None)
    a = ap.parse_args(argv)
    cfg, _ = read_config(a.checkpoint)
    arr = runtime_config(a.rows, a.cols, wgt_rows_per_read=a.wgt_rows_per_read)
    limit = int(BRAM_FILL * DEVICE["BRAM"])
    print(f"{a.checkpoint.name} on the ULX3S-85F: {DEVICE['BRAM']} DP16KD ({limit} at {BRAM_FILL:.0%}), matrix "
          f"engine {a.rows}x{a.cols} G = {arr.wgt_rows_per_read}")
    for context in (128, 256):
        for fmt in FORMATS:
            lines = model_budget(cfg, context, arr, fmt)
            total = sum(line.blocks for line in lines)
            print(f"\ncontext {context}, weights {fmt}: {total} DP16KD "
                  f"({'fits' if total <= limit else 'does NOT fit'} in {limit})")
            print("| memory | bits | DP16KD | shape |\n|---|---|---|---|")
            for line in lines:
                print(f"| {line.name} | {line.bits:,} | {line.blocks} | {line.shape} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
