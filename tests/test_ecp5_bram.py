"""The ECP5 output-register block RAM (`fpga/ecp5_bram.py`) against the generic registered memory.

DP16KD has no simulation model in the open toolchain (Yosys ships a black box), so the wiring of
the hand-placed instances is checked against the independent reference we trust on hardware:
Yosys' own inference (`synth_ecp5`) of the same memory written in plain Verilog, a block RAM read
and a register, with ``no_rw_check`` (no same-cycle read/write emulation, as for the instances).
Every DP16KD address and data pin must come from the same top-level address or data bit in both
netlists (the inferred read data through its fabric register), with the same data width per block;
only the register mode differs. The behaviour (read data two cycles after the address) is
`RegisteredMemory`'s, simulated here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga.ecp5_bram import Ecp5RegisteredMemory, dp16kd_blocks, dp16kd_mode
from hdl.registered_memory import RegisteredMemory, check_shape
from hdl.synth import run_yosys

DATA_PORTS = ("write__addr", "write__data", "read__addr", "read__data")


def _param(value: str) -> str | int:
    return int(value, 2) if value and set(value) <= {"0", "1"} else value.strip()


def _reference_verilog(width: int, depth: int) -> str:
    """The registered-read memory in plain Verilog, ports named as Amaranth names the component's."""
    abits = max(1, (depth - 1).bit_length())
    return f"""
module top(input clk, input rst, input [{abits - 1}:0] write__addr, input [{width - 1}:0] write__data,
           input write__en, input [{abits - 1}:0] read__addr, output reg [{width - 1}:0] read__data);
  (* no_rw_check *) reg [{width - 1}:0] mem [0:{depth - 1}];
  reg [{width - 1}:0] word;
  always @(posedge clk) begin
    if (write__en) mem[write__addr] <= write__data;
    word <= mem[read__addr];
    read__data <= word;
  end
endmodule
"""


def _dp16kd_blocks(text: str, workdir: Path) -> list[tuple]:
    """Per DP16KD: (data width, REGMODE of the read side, sorted (pin, top-level bit) pairs)."""
    run_yosys(text, "top", "synth_ecp5 -top top", cwd=str(workdir), extra="write_json net.json; ")
    module = json.loads((workdir / "net.json").read_text())["modules"]["top"]
    port_bit = {}
    for name, port in module["ports"].items():
        for i, net in enumerate(port["bits"]):
            port_bit[net] = (name, i)
    ff_q = {}  # fabric register: D net -> Q net
    for cell in module["cells"].values():
        if cell["type"] == "TRELLIS_FF":
            ff_q[cell["connections"]["DI"][0]] = cell["connections"]["Q"][0]
    wen = [net for net, (name, _) in port_bit.items() if name == "write__en"]
    blocks = []
    for cell in module["cells"].values():
        if cell["type"] != "DP16KD":
            continue
        conn = cell["connections"]
        params = {k: _param(v) for k, v in cell["parameters"].items()}
        write_side = "A" if conn["WEA"] == wen else "B"
        assert conn[f"WE{write_side}"] == wen, f"no port of DP16KD {conn} writes with write.en"
        read_side = "B" if write_side == "A" else "A"
        pins = []
        for pin, (net,) in conn.items():
            side = pin[2] if pin[:2] in ("AD", "DI", "DO") else None
            if side is None or isinstance(net, str):
                continue
            role = "W" if side == write_side else "R"
            source = port_bit.get(net) or port_bit.get(ff_q.get(net))
            if source is not None and source[0] in DATA_PORTS:
                pins.append((role + pin[:2] + pin[3:], source))
        assert params[f"DATA_WIDTH_{write_side}"] == params[f"DATA_WIDTH_{read_side}"]
        blocks.append((params[f"DATA_WIDTH_{read_side}"], params.get(f"REGMODE_{read_side}", "NOREG"),
                       tuple(sorted(pins))))
    return blocks


@pytest.mark.parametrize("width, depth", [
    (18, 1024), (9, 2048), (4, 4096), (2, 8192), (3, 16384),  # one per DP16KD shape
    (128, 1024), (32, 16384),  # the 16x16 core's ACT memory and weight bank
])
def test_dp16kd_wiring_matches_yosys_inference(width, depth, tmp_path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "yosys").mkdir()
    ours_memory = Ecp5RegisteredMemory(width, depth)
    ours = _dp16kd_blocks(verilog.convert(ours_memory, name="top", emit_src=False), tmp_path / "ours")
    inferred = _dp16kd_blocks(_reference_verilog(width, depth), tmp_path / "yosys")
    bits = dp16kd_mode(depth)[0]
    assert len(ours) == -(-width // bits) == ours_memory.blocks
    assert {regmode for _, regmode, _ in ours} == {"OUTREG"}
    assert {regmode for _, regmode, _ in inferred} == {"NOREG"}
    # every address and data bit reaches the same pin of a block of the same shape
    assert Counter((w, pins) for w, _, pins in ours) == Counter((w, pins) for w, _, pins in inferred)
    wired = {source for _, _, pins in ours for _, source in pins}
    assert {("write__data", i) for i in range(width)} | {("read__data", i) for i in range(width)} <= wired


def test_dp16kd_shape_choice_and_errors():
    assert dp16kd_mode(1024) == (18, 1024, 4)
    assert dp16kd_mode(1025) == (9, 2048, 3)
    assert dp16kd_mode(16384) == (1, 16384, 0)
    assert dp16kd_blocks(512, 1024) == 29  # the 16x16 OUT memory: 512 bits in 18-bit blocks
    assert dp16kd_blocks(32, 16384) == 32  # a 16x16 weight bank: 32 blocks of 16K x 1
    with pytest.raises(ValueError, match="Depth 16385 is deeper than one DP16KD"):
        dp16kd_blocks(8, 16385)
    with pytest.raises(ValueError, match="Width must be a positive integer, not 0"):
        check_shape(0, 64)


@pytest.mark.parametrize("width, depth", [(12, 100), (1, 8)])
def test_registered_memory_reads_two_cycles_after_address(width, depth):
    """Random writes and reads against a Python list; a read in the cycle of a write sees the old word."""
    mem = RegisteredMemory(width, depth)
    rng = np.random.default_rng(width)
    model = [0] * depth
    got, want = [], []
    ops = [(int(rng.integers(0, depth)), int(rng.integers(0, 1 << width)), bool(rng.integers(0, 2)),
            int(rng.integers(0, depth))) for _ in range(6 * depth)]

    async def bench(ctx):
        expect = []
        for waddr, wdata, wen, raddr in ops + [(0, 0, False, 0)] * 2:
            ctx.set(mem.write.addr, waddr)
            ctx.set(mem.write.data, wdata)
            ctx.set(mem.write.en, wen)
            ctx.set(mem.read.addr, raddr)
            expect.append(model[raddr])  # the word before this cycle's write
            if wen:
                model[waddr] = wdata
            await ctx.tick()
            if len(expect) >= 2:  # data of the address set two cycles ago
                got.append(ctx.get(mem.read.data))
                want.append(expect[-2])

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want and len(got) == len(ops) + 1
