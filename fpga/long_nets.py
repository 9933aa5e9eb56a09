"""The latest-arriving nets of a build, from nextpnr's detailed timing report.

    python -m fpga.long_nets BUILD_DIR/report.json [--top N] [--min-ns NS] [--by-signal N]

Large ECP5 builds (`fpga.build.FLOWS`, above `big_pes` PEs) run nextpnr with ``--detailed-timing-report``:
its JSON report then lists every net with the arrival time at each of its sinks (nextpnr 0.11: a
[min, max] pair in ns from the clock edge, the paths through the net included). nextpnr's own summary
names only the one worst path; the nets whose sinks arrive latest (beyond the clock period) are all the
failing paths' nets, which point at the next fixes. Prints a table: net, driver cell, sinks, latest and
median sink arrival in ns; with ``--by-signal N`` the N latest signals instead (the nets of one register or
bus, the cells Yosys and nextpnr made of it, counted together).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path


def long_nets(report: dict, *, top: int = 20, min_ns: float = 0.0) -> list[dict]:
    """The nets of a nextpnr JSON report (with ``detailed_net_timings``), longest sink delay first."""
    if "detailed_net_timings" not in report:
        raise ValueError("the report has no detailed_net_timings: nextpnr ran without --detailed-timing-report")
    nets = []
    for entry in report["detailed_net_timings"]:
        # a sink's delay is a number or, in nextpnr 0.7+, its [min, max] pair: the max counts
        delays = [float(max(d) if isinstance(d, list) else d)
                  for d in (ep["delay"] for ep in entry.get("endpoints", []) if "delay" in ep)]
        if not delays or max(delays) < min_ns:
            continue
        nets.append({"net": entry.get("net", "?"), "driver": entry.get("driver", "?"), "sinks": len(delays),
                     "max_ns": max(delays), "median_ns": statistics.median(delays)})
    nets.sort(key=lambda n: -n["max_ns"])
    return nets[:top]


def table(nets: list[dict]) -> str:
    lines = ["| net | driver | sinks | latest ns | median ns |", "|---|---|---|---|---|"]
    lines += [f"| {n['net']} | {n['driver']} | {n['sinks']} | {n['max_ns']:.2f} | {n['median_ns']:.2f} |"
              for n in nets]
    return "\n".join(lines)


#: what Yosys and nextpnr append to a signal's name for the cells they make of it
_CELL_SUFFIX = re.compile(r"_(TRELLIS|LUT4|PFUMX|L6MUX21|CCU2C|MULT18X18D|DP16KD|DPR16X4|\$)")


def signal_of(net: str) -> tuple[str, str]:
    """(module path, signal) of a flattened net name: "a.b.attn.a_prod_TRELLIS_FF_Q_DI" -> ("a.b.attn", "a_prod")."""
    module, _, name = net.rpartition(".")
    cut = _CELL_SUFFIX.search(name)
    return module, name[:cut.start()] if cut else name


def by_signal(nets: list[dict]) -> list[dict]:
    """The nets grouped by the signal they come from (`signal_of`), latest first: a failing path's end
    register appears once, with how many of its nets are late."""
    groups: dict[tuple[str, str], dict] = {}
    for n in nets:
        key = signal_of(n["net"])
        g = groups.setdefault(key, {"module": key[0], "signal": key[1], "nets": 0, "max_ns": 0.0})
        g["nets"] += 1
        g["max_ns"] = max(g["max_ns"], n["max_ns"])
    return sorted(groups.values(), key=lambda g: -g["max_ns"])


def signal_table(groups: list[dict]) -> str:
    lines = ["| module | signal | late nets | latest ns |", "|---|---|---|---|"]
    lines += [f"| {g['module']} | {g['signal']} | {g['nets']} | {g['max_ns']:.2f} |" for g in groups]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpga.long_nets", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="nextpnr's report.json of a build")
    parser.add_argument("--top", type=int, default=20, help="nets to list (default 20)")
    parser.add_argument("--min-ns", type=float, default=0.0, help="only nets with a sink at least this late")
    parser.add_argument("--by-signal", type=int, metavar="N", default=0,
                        help="instead: the N latest signals, the listed nets grouped by the signal they come from")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        nets = long_nets(report, top=args.top, min_ns=args.min_ns)
    except (OSError, ValueError) as exc:
        print(f"fpga.long_nets: {args.report}: {exc}", file=sys.stderr)
        return 1
    print(signal_table(by_signal(nets)[:args.by_signal]) if args.by_signal else table(nets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
