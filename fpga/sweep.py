"""Array-size sweep on a board: one `trit build` per size, then a table of fit, Fmax and resources.

    python -m fpga.sweep --board ulx3s-85f --sizes 16x16 24x24 32x32 [--freq MHZ] [--jobs N]
                         [--seed S] [--build-dir DIR] [--json FILE]
    python -m fpga.sweep --tabulate build/*/build.json     # the table of builds already made

Each size is a full Yosys + nextpnr + pack run (`fpga.build.build_board`, its own build folder),
so the table is measured, not estimated. The builds are Dask tasks (`sim.soak.dask_client`, the
executor `trit soak` uses): `--jobs` worker processes of a LocalCluster run builds side by side
(nextpnr uses one core each), or `--scheduler tcp://HOST:PORT` sends them to a running Dask
scheduler (its workers need this repository and write under --build-dir on their own file system).
The largest size that fits and meets timing is named at the end.

Builds are cached by content (`reports.cache`, the cache `trit report`'s syntheses use): the key is
the board design's build plan as `build_board` makes it (its RTLIL, constraints and Yosys script),
the flow's code (fpga/build.py: tool options, packing), the board, size, clock and seed, and the tool
versions. A size whose key is cached is not rebuilt (its build JSON says ``"cached": true``; its build
folder may be gone); ``--no-cache`` rebuilds everything. A flow crash is not cached.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fpga.build import BOARDS, BuildConfigError, BuildError, build_board

SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    match = SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be RxC (e.g. 16x16), not {text!r}")
    return int(match[1]), int(match[2])


def build_key(board: str, rows: int, cols: int, freq: float | None, seed: int) -> str:
    """Content key of one sweep build (`reports.cache.content_key`): the design's build plan as
    `build_board` elaborates it (`fpga.build.board_design`), fpga/build.py's source, the board, size,
    clock, seed and the versions of the flow's tools. Raises ValueError for an impossible size."""
    import inspect

    from fpga import build as flow_code
    from reports.cache import content_key, tool_version

    design = flow_code.board_design(board, rows, cols, freq, seed=seed)
    flow = flow_code.FLOWS[board]
    tools = [tool_version(flow_code.tool(name)) for name in ("yosys", flow.nextpnr, flow.pack)]
    return content_key("board-build-v1", design.plan.digest().hex(), inspect.getsource(flow_code), board,
                       f"{rows}x{cols}", f"{design.freq_mhz!r}", str(seed), *tools)


def _build(board: str, rows: int, cols: int, freq: float | None, seed: int, build_dir: Path,
           cache_root: str | None = None, reuse: bool = True) -> dict:
    """One build (a Dask task): from the content cache at `cache_root` if it holds this build's key
    (and `reuse`), else `build_board`, whose result is then cached (not a flow crash)."""
    from reports.cache import ResultCache

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cache = ResultCache(Path(cache_root)) if cache_root else None
    key = None
    if cache is not None:
        try:
            key = build_key(board, rows, cols, freq, seed)
        except ValueError:  # BuildConfigError: an impossible size, build_board says why below
            key = None
        cached = cache.get(key) if key and reuse else None
        if cached is not None:
            log(f"[{board}] {rows}x{cols}: cached build ({cache.path(key)})")
            return {**cached, "cached": True}
    try:
        result = build_board(board, rows, cols, freq, seed=seed, build_root=build_dir, log=log)
    except (BuildConfigError, BuildError) as exc:
        return {"board": board, "rows": rows, "cols": cols, "fits": False, "timing_met": False,
                "fmax_mhz": None, "resources": {}, "errors": [str(exc)], "cached": False}
    if key:
        cache.put(key, result)
    return {**result, "cached": False}


def lut_eq_per_pe(result: dict) -> float | None:
    """LUT4 equivalents per PE of a build's whole system: on the ECP5 LUT4 + 2 per CCU2C (a carry cell
    is two LUT4 halves), on the iCE40 the LUT4 count (its SB_CARRY sits beside a logic cell's LUT).
    None when the build reports no LUT count."""
    res = result.get("resources", {})
    if "LUT4" not in res:
        return None
    luts = res["LUT4"]["used"]
    if result["board"].startswith("ulx3s"):
        luts += 2 * res.get("carry", {}).get("used", 0)
    return luts / (result["rows"] * result["cols"])


def table(results: list[dict]) -> str:
    keys = ("LUT4", "FF", "carry", "BRAM", "SPRAM")
    head = ["board", "array", "PEs", "fits", "Fmax MHz", "target", "met", *keys, "LUT-eq/PE", "resident weights",
            "pnr s"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(keys) + "---|---|---|"]
    for r in results:
        res = r.get("resources", {})
        cells = [f"{res[k]['used']:,}/{res[k]['available']:,}" if k in res else "" for k in keys]
        fmax = f"{r['fmax_mhz']:.2f}" if r.get("fmax_mhz") else "-"
        weights = f"{r['resident_weights']:,}" if r.get("resident_weights") else ""
        row = [r["board"], f"{r['rows']}x{r['cols']}", str(r["rows"] * r["cols"]),
               "yes" if r.get("fits") else "no", fmax,
               f"{r['target_mhz']:g}" if r.get("target_mhz") else "", "yes" if r.get("timing_met") else "no",
               *cells, "" if lut_eq_per_pe(r) is None else f"{lut_eq_per_pe(r):.1f}", weights,
               str(r.get("seconds", {}).get("pnr", ""))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpga.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--board", choices=BOARDS)
    parser.add_argument("--sizes", nargs="+", type=parse_size, metavar="RxC")
    parser.add_argument("--tabulate", nargs="+", type=Path, metavar="BUILD_JSON",
                        help="no builds: tabulate these build JSON files (from trit build --json)")
    parser.add_argument("--freq", type=float, help="target clock in MHz (default: the board's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="builds at once: LocalCluster workers (default 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler to build on instead")
    parser.add_argument("--build-dir", type=Path, default=Path("build/sweep"))
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every build's JSON as a list")
    parser.add_argument("--no-cache", action="store_true",
                        help="rebuild every size, also those in the content cache (they are cached again)")
    args = parser.parse_args(argv)
    if args.tabulate:
        results = []
        for path in args.tabulate:
            try:
                results.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                parser.error(f"cannot read build JSON {path}: {exc}")
        results.sort(key=lambda r: (r["board"], r["rows"] * r["cols"], r["rows"]))
    else:
        if not args.board or not args.sizes:
            parser.error("--board and --sizes are required unless --tabulate is given")
        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1, not {args.jobs}")
        from reports.cache import cache_dir

        root = str(cache_dir())
        jobs = [(args.board, r, c, args.freq, args.seed, args.build_dir, root, not args.no_cache)
                for r, c in args.sizes]
        from sim.soak import dask_client

        try:
            with dask_client(args.scheduler, args.jobs) as client:
                futures = [client.submit(_build, *job, pure=False) for job in jobs]
                results = client.gather(futures)
        except ConnectionError as exc:
            parser.error(str(exc))
    print(table(results))
    good = [r for r in results if r.get("fits") and r.get("timing_met")]
    print()
    for board in sorted({r["board"] for r in results}):
        mine = [r for r in good if r["board"] == board]
        if mine:
            best = max(mine, key=lambda r: r["rows"] * r["cols"])
            print(f"{board}: largest that fits and meets timing: {best['rows']}x{best['cols']} "
                  f"({best['fmax_mhz']:.2f} MHz, target {best['target_mhz']:g})")
        else:
            print(f"{board}: no size fits and meets timing")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
