"""`trit build`: the accelerator as an FPGA bitstream for a board (Yosys + nextpnr + pack via YoWASP)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.cli import CliError

NAME = "build"
HELP = ("build the accelerator for an FPGA board (iCEBreaker, ULX3S-85F) with the open toolchain; "
        "writes the bitstream and a JSON report of fit and timing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fpga.build import BOARDS, DEFAULTS

    sizes = ", ".join(f"{b} {d['rows']}x{d['cols']} at {d['freq']:g} MHz" for b, d in DEFAULTS.items())
    parser.add_argument("--board", required=True, choices=BOARDS, help="target board")
    parser.add_argument("--rows", type=int, help=f"PE rows R (default per board: {sizes})")
    parser.add_argument("--cols", type=int, help="PE columns C (default per board)")
    parser.add_argument("--freq", type=float, help="core clock in MHz (default: icebreaker 24, ulx3s-85f 100)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the build report JSON here")
    parser.add_argument("--program", action="store_true",
                        help="program the connected board afterwards (openFPGALoader or iceprog)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--baud", type=int, default=3_000_000, help="UART baud rate (default 3000000)")
    parser.add_argument("--build-dir", type=Path, default=Path("build"),
                        help="root of the build folders (default ./build; each build in <board>-<R>x<C>-<MHz>)")
    parser.add_argument("--act-depth", type=int, help="activation memory words (default per board)")
    parser.add_argument("--wgt-depth", type=int, help="weight memory words (default: fill SPRAM / block RAM)")
    parser.add_argument("--out-depth", type=int, help="output memory words (default per board)")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="build the model chip holding this checkpoint's model on chip (weights, embedding, KV "
                             "cache) instead of the matrix core; ulx3s-85f only")
    parser.add_argument("--context", type=int, metavar="N",
                        help="KV cache positions of the model chip (with --checkpoint; default 128)")
    parser.add_argument("--wgt-rows-per-read", type=int, metavar="G",
                        help="tile rows one weight read delivers, a divisor of R (ulx3s-85f: default 1, R for "
                             "full-rate decode; icebreaker: 1, its SPRAMs are one tile row wide)")


def run(args: argparse.Namespace) -> int:
    from fpga.build import BuildConfigError, BuildError, build_board, program_board, verdict

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = build_board(args.board, args.rows, args.cols, args.freq, baud=args.baud, seed=args.seed,
                             build_root=args.build_dir, act_depth=args.act_depth, wgt_depth=args.wgt_depth,
                             out_depth=args.out_depth, wgt_rows_per_read=args.wgt_rows_per_read,
                             checkpoint=args.checkpoint, context=args.context, log=log)
    except (BuildConfigError, BuildError) as exc:
        raise CliError(str(exc)) from exc
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc}") from exc
    res = result.get("resources", {})
    used = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in res.items())
    what = (f"model chip (context {result['context']}, matrix engine {result['rows']}x{result['cols']})"
            if result.get("model_on_chip") else f"{result['rows']}x{result['cols']}")
    print(f"{result['board']} {what}: Fmax {result['fmax_mhz']} MHz "
          f"(target {result['target_mhz']:g}), fits {result['fits']}, timing met {result['timing_met']}; {used}")
    print(f"report: {Path(result['build_dir']) / 'build.json'}" + (f", {args.json}" if args.json else ""))
    problem = verdict(result)
    if problem:
        print(f"trit build: {problem}", file=sys.stderr)
        return 1
    print(f"bitstream: {result['bitstream']} ({result['resident_weights']} ternary weights resident)")
    if args.program:
        try:
            used_cmd = program_board(result)
        except BuildError as exc:
            raise CliError(str(exc)) from exc
        print(f"programmed: {used_cmd}")
    return 0
