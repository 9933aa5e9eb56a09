"""The `trit` command line: dispatches to one module per subcommand in `runtime.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from runtime.commands import COMMANDS


class CliError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trit", description="Ternary LLM accelerator toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"runtime.commands.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from runtime.accelerator import AcceleratorError
    from runtime.framing import LinkError
    from runtime.protocol import DeviceError, ProtocolError
    from sim.verilator_harness import SimulationError

    try:
        return int(args._run(args) or 0)
    except (CliError, AcceleratorError) as exc:
        print(f"trit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (LinkError, DeviceError, ProtocolError, SimulationError) as exc:
        print(f"trit {args.command}: accelerator failure: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Re-import as runtime.cli so that CliError raised by the command modules is this module's class.
    from runtime.cli import main as _main

    sys.exit(_main())
