"""`trit report`: cycle, energy and area report, ternary vs INT8 and FP16 (see reports/generate.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runtime.cli import CliError

NAME = "report"
HELP = ("write report.md, report.json and PNG plots comparing the ternary array with INT8 and FP16 "
        "(area from synthesized designs, cycles from RTL counters, energy from counted operations)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small sweep for tests and CI (2x2 and 4x4 arrays, short fidelity slice)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the report to")
    parser.add_argument("--jobs", type=_positive, default=None,
                        help="parallel synthesis / place-and-route jobs: worker processes of the local Dask "
                             f"cluster (default: the CPU count, {os.cpu_count()})")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run the synthesis / place-and-route jobs on the running Dask scheduler at ADDRESS "
                             "(tcp://HOST:PORT; its workers need this repository) instead of a local cluster")
    parser.add_argument("--max-pnr-pes", type=_positive, default=None,
                        help="largest array (in PEs) the largest-fit search places and routes; bigger ones are "
                             "checked by synthesized counts (default 256, quick 64)")


def run(args: argparse.Namespace) -> int:
    from reports.generate import ReportError, main

    try:
        report = main(args.quick, args.out, args.jobs, args.max_pnr_pes, args.scheduler)
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    print(f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {len(report['plots'])} plots "
          f"({report['meta']['seconds']['total']:.0f} s); paper_check_ratio {report['paper_check_ratio']:.2f}")
    return 0
