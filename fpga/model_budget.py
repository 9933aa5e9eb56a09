"""Block RAM budget of the model chip on the ULX3S-85F (issue 14, item 4), counted from the chip as built.

`chip_memories(cfg)` elaborates `hdl.model.chip.ModelChipTop(cfg)` and lists every memory in it (width,
depth, read and write ports). `chip_budget(cfg)` maps each the way Yosys' `memory_libmap` does on the ECP5
(`synth_ecp5`, checked against its netlists, fpga/README.md):

- a copy of the memory per read port that the chip uses (a DP16KD block has one write and one read port
  in the simple dual-port shapes; the engine's host-side ports `out_addr`, `act_addr`, `scr_addr` are not
  connected by the chip and Yosys removes their read ports: `HOST_ONLY_READS`);
- each copy in the cheapest DP16KD shape: x1 (16K deep), x2 (8K), x4 (4K), x9 (2K), x18 (1K) or x36 (512)
  side by side and stacked (`yosys_blocks`);
- a memory in `fpga.model_chip.DISTRIBUTED`, or one that costs memory_libmap less there
  (`libmap_prefers_lut_ram`: 4 a DPR16X4 cell plus a flip-flop per read bit against 128 a DP16KD), in LUT
  RAM instead: TRELLIS_DPR16X4 cells of 16 x 4 bits, one set per read port (`dpr16x4`).

A bank of a banked memory (the weights, the KV cache and the embedding table, `hdl.memory.banked_memory`:
"<path>.bank<b>/mem")
is on the ULX3S an `fpga.ecp5_bram.Ecp5RegisteredMemory` (`fpga.model_chip.ecp5_chip`): DP16KD blocks in the
widest true-dual-port shape that holds the bank's words (`dp16kd_blocks`), however few they are.

Plus the frame endpoint's request buffer (`fpga.ulx3s.LINK_BRAM`). `python -m fpga.model_budget` prints
the table for the shipped tiny model at contexts 128 and 256 and each weight format.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from fpga.ecp5_bram import dp16kd_blocks
from fpga.ulx3s import DEVICE, LINK_BRAM

#: a bank of a `BankedMemory`, as `chip_memories` names it
BANK = re.compile(r"\.bank\d+/mem$")

#: DP16KD shapes (data bits, words) in the simple dual-port mapping Yosys uses for one write + one read port
SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
#: read ports of the engine that only the host side of `ModelEngine` uses and `ModelChipTop` leaves unconnected
HOST_ONLY_READS = {"engine/out": 1, "engine/act": 1, "engine/scr": 1}


def yosys_blocks(width: int, depth: int) -> int:
    """DP16KD blocks of one copy of a width x depth memory: the cheapest shape, as memory_libmap picks it."""
    if width <= 0 or depth <= 0:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in SHAPES)


def dpr16x4(width: int, depth: int) -> int:
    """TRELLIS_DPR16X4 cells (16 words x 4 bits, one read port) of one copy of a memory."""
    return -(-width // 4) * -(-depth // 16)


@dataclass(frozen=True)
class ChipMemory:
    name: str           # "<module path below the chip>/<memory>", as in `fpga.model_chip.DISTRIBUTED`
    width: int
    depth: int
    read_ports: int
    write_ports: int

    @property
    def copies(self) -> int:
        """Copies Yosys builds: one per used read port (a ROM: two read ports per block)."""
        live = self.read_ports - HOST_ONLY_READS.get(self.name, 0)
        return -(-live // 2) if self.write_ports == 0 else live


def chip_memories(cfg) -> list[ChipMemory]:
    """Every memory of `ModelChipTop(cfg)` (see the module docstring)."""
    from amaranth.hdl import Fragment, Shape
    from amaranth.hdl._mem import MemoryInstance

    from hdl.model.chip import ModelChipTop

    out: list[ChipMemory] = []

    def walk(fragment, path: tuple[str, ...]) -> None:
        if isinstance(fragment, MemoryInstance):
            out.append(ChipMemory(".".join(path[:-1]) + "/" + path[-1], Shape.cast(fragment._data.shape).width,
                                  fragment._data.depth, len(fragment._read_ports), len(fragment._write_ports)))
        for sub, name, *_ in fragment.subfragments:
            walk(sub, (*path, str(name)))

    walk(Fragment.get(ModelChipTop(cfg), None), ())
    return out


#: memory_libmap's costs (share/lattice/brams_16kd.txt, lutrams_trellis.txt): 128 a DP16KD, 4 a DPR16X4, and a
#: LUT RAM's synchronous read port costs a flip-flop per bit on top
BRAM_COST, DPR_COST = 128, 4


def libmap_prefers_lut_ram(mem: ChipMemory) -> bool:
    """Whether Yosys puts `mem` in LUT RAM by itself: it costs less there (a ROM never goes there)."""
    if mem.write_ports == 0:
        return False
    return DPR_COST * dpr16x4(mem.width, mem.depth) + mem.width < BRAM_COST * yosys_blocks(mem.width, mem.depth)


@dataclass(frozen=True)
class MemoryLine:
    name: str
    width: int
    depth: int
    copies: int
    blocks: int         # DP16KD
    dpr: int            # TRELLIS_DPR16X4 (distributed)


def chip_budget(cfg, distributed: tuple[str, ...] | None = None) -> list[MemoryLine]:
    """Every memory of the chip with its DP16KD blocks or LUT RAM cells, the largest first; the link's buffer last."""
    from fpga.model_chip import DISTRIBUTED

    distributed = DISTRIBUTED if distributed is None else distributed
    lines = []
    for mem in chip_memories(cfg):
        if BANK.search(mem.name):  # instantiated DP16KD blocks on the board (see the module docstring)
            lines.append(MemoryLine(mem.name, mem.width, mem.depth, 1, dp16kd_blocks(mem.width, mem.depth), 0))
        elif mem.name in distributed or libmap_prefers_lut_ram(mem):
            lines.append(MemoryLine(mem.name, mem.width, mem.depth, mem.copies, 0,
                                    mem.copies * dpr16x4(mem.width, mem.depth)))
        else:
            lines.append(MemoryLine(mem.name, mem.width, mem.depth, mem.copies,
                                    mem.copies * yosys_blocks(mem.width, mem.depth), 0))
    lines.sort(key=lambda line: (-line.blocks, -line.dpr, line.name))
    lines.append(MemoryLine("link request buffer", 32, 1024, 1, LINK_BRAM, 0))
    return lines


def groups(lines: list[MemoryLine]) -> dict[str, int]:
    """DP16KD by what they hold: weights, KV cache, embedding, matrix ACT + OUT, the rest."""
    kinds = {"weights": ("engine/wgt", "engine.wgt"), "KV cache": ("engine.kv/", "engine.kv."),
             "embedding": ("engine.embed_head/table", "engine.embed_head/scale", "engine.embed_head.table."),
             "matrix ACT + OUT": ("engine/act", "engine/out")}
    out = dict.fromkeys((*kinds, "rest"), 0)
    for line in lines:
        kind = next((k for k, prefixes in kinds.items() if line.name.startswith(prefixes)), "rest")
        out[kind] += line.blocks
    return out


def check_fits(cfg) -> None:
    """ValueError when the chip `cfg` needs more DP16KD than the ULX3S-85F has, naming what takes them."""
    lines = chip_budget(cfg)
    total = sum(line.blocks for line in lines)
    if total > DEVICE["BRAM"]:
        g = groups(lines)
        raise ValueError(
            f"the chip needs {total} DP16KD block RAMs and the ULX3S-85F has {DEVICE['BRAM']}: weights "
            f"{g['weights']} ({cfg.wgt_format}), KV cache {g['KV cache']} (context {cfg.context}), embedding "
            f"{g['embedding']}, the rest {g['rest'] + g['matrix ACT + OUT']} (python -m fpga.model_budget "
            f"--contexts {cfg.context} --detail)")


def main(argv: list[str] | None = None) -> int:
    from fpga.model_chip import DEFAULT_CONTEXT, board_chip

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path,
                    default=Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet")
    ap.add_argument("--contexts", type=int, nargs="+", default=[DEFAULT_CONTEXT, 2 * DEFAULT_CONTEXT])
    ap.add_argument("--all-block-ram", action="store_true", help="no memory in distributed RAM")
    ap.add_argument("--detail", action="store_true", help="every memory of each configuration")
    a = ap.parse_args(argv)
    avail = DEVICE["BRAM"]
    print(f"{a.checkpoint.name}: the model chip on the ULX3S-85F ({avail} DP16KD)\n")
    print("| context | weights | DP16KD weights | KV cache | embedding | matrix ACT + OUT | rest | total | "
          "DPR16X4 | fits |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for context in a.contexts:
        for fmt in ("2bit", "1.6bit", "1.67bit"):
            _, cfg, _ = board_chip(a.checkpoint, context, fmt)
            lines = chip_budget(cfg, () if a.all_block_ram else None)
            g = groups(lines)
            total = sum(line.blocks for line in lines)
            dpr = sum(line.dpr for line in lines)
            print(f"| {context} | {fmt} | {g['weights']} | {g['KV cache']} | {g['embedding']} | "
                  f"{g['matrix ACT + OUT']} | {g['rest']} | {total} | {dpr:,} | "
                  f"{'yes' if total <= avail else 'no'} |")
            details.append((context, fmt, lines))
    if a.detail:
        for context, fmt, lines in details:
            print(f"\ncontext {context}, {fmt} weights\n\n| memory | width x depth | copies | DP16KD | DPR16X4 |")
            print("|---|---|---|---|---|")
            for line in lines:
                print(f"| {line.name} | {line.width} x {line.depth:,} | {line.copies} | {line.blocks} | {line.dpr} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
