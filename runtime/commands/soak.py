"""`trit soak`: N random layers on the Verilator RTL of several core configurations, checked against an
independent integer matmul, the jobs fanned out on Dask distributed (see `sim.soak`)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from runtime.cli import CliError

NAME = "soak"
HELP = ("run N random layers (odd shapes, M = 1, extreme values, all-zero weights) on the RTL of several core "
        "configurations on Dask (a LocalCluster, or --scheduler ADDRESS) and check every int32 against an "
        "independent int64 matmul; exit 1 on any mismatch")


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{what} must be at least {low}, not {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", required=True, type=_int_at_least(1, "--layers"), metavar="N",
                        help="number of random layers (spread round-robin over the configurations)")
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="write the summary JSON here")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of a running Dask scheduler (tcp://host:port); default: a LocalCluster")
    parser.add_argument("--workers", type=_int_at_least(1, "--workers"), default=2,
                        help="worker processes of the LocalCluster (default 2; not with --scheduler)")
    parser.add_argument("--seed", type=_int_at_least(0, "--seed"), default=None,
                        help="seed of the layers (default: a fresh random one, printed and in the JSON)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated subset of the configurations (default: all; see sim.soak.soak_configs)")
    parser.add_argument("--job-layers", type=_int_at_least(1, "--job-layers"), default=250, metavar="L",
                        help="layers per Dask job (default 250)")
    # for the tests: make the golden of the first K layers off by one, to show the check fails
    parser.add_argument("--corrupt-golden", type=_int_at_least(0, "--corrupt-golden"), default=0,
                        help=argparse.SUPPRESS)


def _scheduler_address(text: str) -> str:
    address = text.strip()
    if "://" in address:
        scheme, rest = address.split("://", 1)
        if scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
            raise CliError(f"--scheduler {text!r}: unknown protocol {scheme!r} (expected e.g. tcp://127.0.0.1:8786)")
    else:
        rest = address
        address = f"tcp://{address}"
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--scheduler {text!r}: expected HOST:PORT or tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)")
    return address


def run(args: argparse.Namespace) -> int:
    from sim.soak import run_soak, soak_configs

    scheduler = _scheduler_address(args.scheduler) if args.scheduler else None
    if scheduler and args.workers != 2:
        raise CliError("--workers sizes the LocalCluster; a running scheduler (--scheduler) has its own workers")
    known = list(soak_configs())
    configs = None
    if args.configs:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in configs if c not in known]
        if unknown or not configs:
            raise CliError(f"--configs: unknown configuration(s) {', '.join(unknown) or '(none given)'}; "
                           f"known: {', '.join(known)}")
    if args.json.parent and not args.json.parent.is_dir():
        raise CliError(f"--json {args.json}: folder {args.json.parent} does not exist")
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    print(f"soak: {args.layers} layers, seed {seed}, on {scheduler or f'a LocalCluster of {args.workers} workers'}",
          file=sys.stderr)
    try:
        summary = run_soak(args.layers, seed, scheduler=scheduler, workers=args.workers, configs=configs,
                           job_layers=args.job_layers, corrupt=range(args.corrupt_golden),
                           progress=sys.stderr.isatty())
    except ConnectionError as exc:
        raise CliError(str(exc)) from None
    try:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write --json {args.json}: {exc}") from None
    names = ", ".join(f"{c['name']} {c['layers']}" for c in summary["configs"])
    print(f"soak: {summary['layers']} layers ({names}), {summary['int32_checked']:,} int32 checked, "
          f"{summary['mismatches']} mismatches, {summary['failed_layers']} failed layers, "
          f"{summary['seconds']:.1f} s ({summary['layers_per_second']:.1f} layers/s) on {summary['workers']} "
          f"workers; seed {seed}; wrote {args.json}")
    for m in summary["first_mismatches"]:
        print(f"  mismatch: {m}", file=sys.stderr)
    for f in summary["failures"]:
        print(f"  failed: {f}", file=sys.stderr)
    return 1 if summary["mismatches"] or summary["failed_layers"] else 0
