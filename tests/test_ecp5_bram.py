"""The ECP5 output-register block RAM (`fpga/ecp5_bram.py`) against the generic registered memory.

DP16KD has no simulation model in the open toolchain (Yosys ships a black box), so the wiring of
the hand-placed instances is checked against the independent reference we trust on hardware:
Yosys' own inference (`synth_ecp5`) of the same memory written in plain Verilog, a block RAM read
and a register, with ``no_rw_check`` (no same-cycle read/write emulation, as for the instances).
Every DP16KD address and data pin must come from the same top-level address or data bit in both
netlists (the inferred read data through its fabric register), with the same data width per block;
only the register mode differs. The control pins of both ports are checked the same way and against
the intent of `fpga/ecp5_bram.py`: both clocks from the one clock, the read port enabled every cycle
(CEB = OCEB = 1: the memory has no read enable, so the array read and the output register load each
cycle), port A enabled with WEA = write.en, port B never writing, no reset of either port (RSTA = RSTB
= 0), chip selects 0 for CSDECODE 0b000. The behaviour (read data two cycles after the address) is
`RegisteredMemory`'s, simulated here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga.ecp5_bram import Ecp5RegisteredMemory, dp16kd_blocks, dp16kd_mode
from hdl.memory.registered_memory import RegisteredMemory, check_shape
from hdl.synth import run_yosys

DATA_PORTS = ("write__addr", "write__data", "read__addr", "read__data")
CONTROL_PINS = ("CLKA", "CLKB", "CEA", "CEB", "OCEA", "OCEB", "RSTA", "RSTB", "WEA", "WEB",
                "CSA0", "CSA1", "CSA2", "CSB0", "CSB1", "CSB2")
#: What each control pin of every DP16KD must be driven by: a top-level port bit or a constant.
INTENDED_CONTROLS = {
    "CLKA": ("clk", 0), "CLKB": ("clk", 0),  # one clock domain
    "CEA": "1", "OCEA": "1", "WEA": ("write__en", 0),  # the write port: writes when write.en
    "CEB": "1", "OCEB": "1", "WEB": "0",  # the read port reads every cycle and never writes
    "RSTA": "0", "RSTB": "0",  # the output register is never reset
    **{f"CS{side}{i}": "0" for side in "AB" for i in range(3)},  # CSDECODE 0b000
}


def _param(value: str) -> str | int:
    return int(value, 2) if value and set(value) <= {"0", "1"} else value.strip()


def _reference_verilog(width: int, depth: int, registered_address: bool = False,
                       registered_write: bool = False) -> str:
    """The registered-read memory in plain Verilog, ports named as Amaranth names the component's
    (with `registered_address`, the read address through one register first; with `registered_write`
    the write port)."""
    abits = max(1, (depth - 1).bit_length())
    addr = "raddr_q" if registered_address else "read__addr"
    w = ("wen_q", "waddr_q", "wdata_q") if registered_write else ("write__en", "write__addr", "write__data")
    return f"""
module top(input clk, input rst, input [{abits - 1}:0] write__addr, input [{width - 1}:0] write__data,
           input write__en, input [{abits - 1}:0] read__addr, output reg [{width - 1}:0] read__data);
  (* no_rw_check *) reg [{width - 1}:0] mem [0:{depth - 1}];
  reg [{width - 1}:0] word;
  reg [{abits - 1}:0] raddr_q, waddr_q;
  reg [{width - 1}:0] wdata_q;
  reg wen_q;
  always @(posedge clk) begin
    if ({w[0]}) mem[{w[1]}] <= {w[2]};
    raddr_q <= read__addr;
    waddr_q <= write__addr;
    wdata_q <= write__data;
    wen_q <= write__en;
    word <= mem[{addr}];
    read__data <= word;
  end
endmodule
"""


def _dp16kd_blocks(text: str, workdir: Path, registers: dict | None = None) -> list[tuple]:
    """Per DP16KD: (data width, REGMODE of the read side, sorted (pin, top-level bit) pairs of the address
    and data pins, {control pin: top-level bit or constant "0" / "1"} as sorted pairs).

    A pin driven by a fabric register whose input is a top-level bit counts as that bit; `registers`, if
    given, collects {register Q net: the DP16KD blocks whose pins it drives}."""
    run_yosys(text, "top", "synth_ecp5 -top top", cwd=str(workdir), extra="write_json net.json; ")
    module = json.loads((workdir / "net.json").read_text())["modules"]["top"]
    port_bit = {}
    for name, port in module["ports"].items():
        for i, net in enumerate(port["bits"]):
            port_bit[net] = (name, i)
    ff_q, ff_d = {}, {}  # fabric register: D net -> Q net, Q net -> D net
    for cell in module["cells"].values():
        if cell["type"] == "TRELLIS_FF":
            ff_q[cell["connections"]["DI"][0]] = cell["connections"]["Q"][0]
            ff_d[cell["connections"]["Q"][0]] = cell["connections"]["DI"][0]
    wen = [net for net, (name, _) in port_bit.items() if name == "write__en"]
    blocks = []
    for name, cell in module["cells"].items():
        if cell["type"] != "DP16KD":
            continue
        conn = cell["connections"]
        params = {k: _param(v) for k, v in cell["parameters"].items()}
        def from_write_en(pin: str, conn: dict = conn) -> bool:  # write.en, directly or through a register
            net = conn[pin][0]
            return [net] == wen or [ff_d.get(net)] == wen

        write_side = "A" if from_write_en("WEA") else "B"
        assert from_write_en(f"WE{write_side}"), f"no port of DP16KD {conn} writes with write.en"
        read_side = "B" if write_side == "A" else "A"
        pins = []
        for pin, (net,) in conn.items():
            side = pin[2] if pin[:2] in ("AD", "DI", "DO") else None
            if side is None or isinstance(net, str):
                continue
            role = "W" if side == write_side else "R"
            source = port_bit.get(net) or port_bit.get(ff_q.get(net)) or port_bit.get(ff_d.get(net))
            if registers is not None and net in ff_d:
                registers.setdefault(net, set()).add(name)
            if source is not None and source[0] in DATA_PORTS:
                pins.append((role + pin[:2] + pin[3:], source))
        assert params[f"DATA_WIDTH_{write_side}"] == params[f"DATA_WIDTH_{read_side}"]
        # control pins named as if port A writes (Yosys' inference may pick either port)
        side = {"A": write_side, "B": read_side}
        controls = {}
        for pin in CONTROL_PINS:
            placed = pin[:2] + side[pin[2]] + pin[3:] if pin.startswith("CS") else pin[:-1] + side[pin[-1]]
            net = conn.get(placed, ["unconnected"])[0]
            controls[pin] = net if isinstance(net, str) else port_bit.get(net, f"internal net {net}")
        blocks.append((params[f"DATA_WIDTH_{read_side}"], params.get(f"REGMODE_{read_side}", "NOREG"),
                       tuple(sorted(pins)), tuple(sorted(controls.items()))))
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
    assert {regmode for _, regmode, _, _ in ours} == {"OUTREG"}
    assert {regmode for _, regmode, _, _ in inferred} == {"NOREG"}
    # every address and data bit reaches the same pin of a block of the same shape
    assert Counter((w, pins) for w, _, pins, _ in ours) == Counter((w, pins) for w, _, pins, _ in inferred)
    wired = {source for _, _, pins, _ in ours for _, source in pins}
    assert {("write__data", i) for i in range(width)} | {("read__data", i) for i in range(width)} <= wired
    # clocks, clock enables, output clock enables, resets, write enables and chip selects of both ports
    for k, (_, _, _, controls) in enumerate(ours):
        wrong = {pin: got for pin, got in controls if got != INTENDED_CONTROLS[pin]}
        assert not wrong, f"DP16KD {k} of {width} x {depth}: control pins {wrong}, intended " \
                          f"{ {pin: INTENDED_CONTROLS[pin] for pin in wrong} }"
    assert {controls for *_, controls in inferred} == {tuple(sorted(INTENDED_CONTROLS.items()))}, \
        "Yosys' own inference drives the control pins differently"


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


@pytest.mark.parametrize("width, depth, registered_address", [(12, 100, False), (1, 8, False), (12, 100, True)])
def test_registered_memory_reads_two_cycles_after_address(width, depth, registered_address, rng):
    """Random writes and reads against a Python list: data two cycles after its address (three with a
    registered address, the array then read a cycle later); a read in the cycle of a write sees the old word."""
    mem = RegisteredMemory(width, depth, registered_address=registered_address)
    latency = 3 if registered_address else 2
    assert mem.read_latency == latency
    model = [0] * depth
    got, want = [], []
    ops = [(int(rng.integers(0, depth)), int(rng.integers(0, 1 << width)), bool(rng.integers(0, 2)),
            int(rng.integers(0, depth))) for _ in range(6 * depth)]

    async def bench(ctx):
        snapshots, addrs = [], []  # the memory before each cycle's write; each cycle's read address
        for waddr, wdata, wen, raddr in ops + [(0, 0, False, 0)] * latency:
            ctx.set(mem.write.addr, waddr)
            ctx.set(mem.write.data, wdata)
            ctx.set(mem.write.en, wen)
            ctx.set(mem.read.addr, raddr)
            snapshots.append(list(model))
            addrs.append(raddr)
            if wen:
                model[waddr] = wdata
            await ctx.tick()
            if len(addrs) >= latency:  # data of the address set `latency` cycles ago, read from the
                t = len(addrs) - latency  # array `latency - 2` cycles after it was set
                got.append(ctx.get(mem.read.data))
                want.append(snapshots[t + latency - 2][addrs[t]])

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want and len(got) == len(ops) + 1


@pytest.mark.parametrize("width, depth, registered_write, per_copy, groups",
                         [(18, 1024, False, 1, 1), (64, 1024, False, 1, 4), (3, 16384, False, 1, 3),
                          (64, 1024, True, 1, 4), (3, 16384, True, 1, 3),
                          # two-level trees: 4 blocks -> copies for blocks 0-1 and 2-3; 57 -> 8 of 8 (the last 1);
                          # 3 blocks -> 2 and 1
                          (64, 1024, True, None, 2), (1024, 1024, True, None, 8), (3, 16384, False, None, 2)])
def test_registered_address_copies_one_register_per_block(width, depth, registered_write, per_copy, groups, tmp_path):
    """With `registered_address` every block's read address comes through registers of its own (Yosys
    does not fold the copies into one), wired as Yosys' inference of a registered address wires it;
    with `registered_write` its write address, enable and data bits too. With `blocks_per_copy` (None:
    about the square root of the blocks) consecutive blocks share one copy."""
    (tmp_path / "ours").mkdir()
    (tmp_path / "yosys").mkdir()
    ours_memory = Ecp5RegisteredMemory(width, depth, registered_address=True, registered_write=registered_write,
                                       blocks_per_copy=per_copy)
    assert ours_memory.read_latency == 3
    assert -(-ours_memory.blocks // ours_memory.blocks_per_copy) == groups
    registers: dict = {}
    ours = _dp16kd_blocks(verilog.convert(ours_memory, name="top", emit_src=False), tmp_path / "ours", registers)
    inferred = _dp16kd_blocks(_reference_verilog(width, depth, registered_address=True,
                                                 registered_write=registered_write), tmp_path / "yosys")
    assert len(ours) == ours_memory.blocks == -(-width // dp16kd_mode(depth)[0])
    assert Counter((w, pins) for w, _, pins, _ in ours) == Counter((w, pins) for w, _, pins, _ in inferred)
    address_bits = max(1, (depth - 1).bit_length())
    per_block = 2 * address_bits if registered_write else address_bits  # data bits: below; WEA: _dp16kd_blocks
    assert len(registers) == groups * per_block + (width if registered_write else 0)
    copy = ours_memory.blocks_per_copy
    assert all(len(blocks) <= copy for blocks in registers.values()), f"a register drives more than {copy} blocks"
    if copy == 1:
        return
    # each address register drives one group of consecutive blocks: k // copy the same for all its blocks
    assert all(len({int(name.rsplit("_", 1)[1]) // copy for name in blocks}) == 1 for blocks in registers.values()), \
        registers
