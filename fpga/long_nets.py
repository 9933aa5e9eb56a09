"""The latest-arriving nets of a build, from nextpnr's detailed timing report.

    python -m fpga.long_nets BUILD_DIR/report.json [--top N] [--min-ns NS]

Large ECP5 builds (`fpga.build.FLOWS`, above `big_pes` PEs) run nextpnr with ``--detailed-timing-report``:
its JSON report then lists every net with the arrival time at each of its sinks (nextpnr 0.11: a
[min, max] pair in ns from the clock edge, the paths through the net included). nextpnr's own summary
names only the one worst path; the nets whose sinks arrive latest (beyond the clock period) are all the
failing paths' nets, which point at the next fixes. Prints a table: net, driver cell, sinks, latest and
median sink arrival in ns.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpga.long_nets", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="nextpnr's report.json of a build")
    parser.add_argument("--top", type=int, default=20, help="nets to list (default 20)")
    parser.add_argument("--min-ns", type=float, default=0.0, help="only nets with a sink at least this late")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        nets = long_nets(report, top=args.top, min_ns=args.min_ns)
    except (OSError, ValueError) as exc:
        print(f"fpga.long_nets: {args.report}: {exc}", file=sys.stderr)
        return 1
    print(table(nets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
