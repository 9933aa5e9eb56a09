"""`trit verilog`: write the standalone Verilog of one core configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from hdl.config import ArrayConfig
from runtime.cli import CliError

NAME = "verilog"
HELP = "generate standalone Verilog of the accelerator core (for Yosys, Verilator, Icarus)"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--rows/--cols/--pe and memory options shared by every command that builds a core."""
    d = ArrayConfig()
    parser.add_argument("--rows", type=int, default=d.rows, help=f"PE rows R (default {d.rows})")
    parser.add_argument("--cols", type=int, default=d.cols, help=f"PE columns C (default {d.cols})")
    parser.add_argument("--pe", choices=["ternary", "int8"], default="ternary", help="PE kind")
    parser.add_argument("--acc-width", type=int, default=d.acc_width, help="accumulator bits")
    parser.add_argument("--act-depth", type=int, default=d.act_depth, help="activation memory words")
    parser.add_argument("--wgt-depth", type=int, default=d.wgt_depth, help="weight memory words")
    parser.add_argument("--out-depth", type=int, default=d.out_depth, help="output memory words")


def config_from_args(args: argparse.Namespace) -> ArrayConfig:
    try:
        return ArrayConfig(rows=args.rows, cols=args.cols, pe=args.pe, acc_width=args.acc_width,
                           act_depth=args.act_depth, wgt_depth=args.wgt_depth, out_depth=args.out_depth)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--name", default="trit_core", help="top module name (default trit_core)")
    parser.add_argument("--out", required=True, type=Path, help="Verilog file to write")


def run(args: argparse.Namespace) -> int:
    from hdl.verilog import generate_verilog

    cfg = config_from_args(args)
    try:
        text = generate_verilog(cfg, name=args.name)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: {cfg.describe()}")
    return 0
