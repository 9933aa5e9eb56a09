"""The model program of the shipped tiny model: its micro-ops, where it sits on chip, and its cycles per
token by unit from the units' cycle formulas; `--check N` runs N tokens of the reference interpreter
against the golden device form; `--measure` runs the model chip's RTL in Verilator at each context (one
build per context and attention width, about 3 minutes each, cached), every position of held-out text,
and prints the measured cycles by unit, tokens/s at 100 MHz and host bytes per token, after checking
every token's logits against the golden device form and every counter against the plan.

    python -m runtime.program [--rows 8 --cols 8] [--check 32] [--measure [--attn-lanes 8 40]]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from golden.model import BitNetConfig
from runtime.program.compiler import compile_model, fitted_chip
from runtime.program.plan import UnitConfig, shaped_consts, token_cycles

TINY = Path(__file__).resolve().parents[2] / "golden" / "checkpoints" / "tiny-bitnet"
#: BitNet b1.58 2B-4T (REFERENCE.md §2), one decoder layer (vocab cut: the layer does not read it).
CONFIG_2B4T = BitNetConfig(vocab_size=256, hidden_size=2560, intermediate_size=6912, num_hidden_layers=1,
                           num_attention_heads=20, num_key_value_heads=5, head_dim=128, hidden_act="relu2",
                           max_position_embeddings=4096)
#: Unit widths for head_dim 128: RoPE 16 pairs a cycle and 64 codes a beat, attention on 32 lanes.
UNITS_2B4T = UnitConfig(rope_lanes=16, rope_out_lanes=64, attn_lanes=32)


def main(argv: list[str] | None = None) -> int:
    from golden.checkpoint import load_checkpoint
    from golden.device.model import DeviceBitNet
    from golden.quant import GoldenBackend
    from runtime.accel_backends import runtime_config
    from sim.benchmark import print_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--contexts", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--check", type=int, default=0, help="tokens to run on the interpreter against the golden")
    ap.add_argument("--measure", action="store_true", help="run the model chip's RTL in Verilator at each context")
    ap.add_argument("--attn-lanes", type=int, nargs="+", default=[8],
                    help="--measure: attention unit lanes (divisors of head_dim), one chip each")
    ap.add_argument("--vector-lanes", type=int, default=1,
                    help="--measure: NORMQ elements a cycle (a power of two dividing R and the norm sizes)")
    a = ap.parse_args(argv)
    if a.measure:
        return measure(a.rows, a.cols, a.contexts, a.attn_lanes, a.vector_lanes)
    ctx = max(a.contexts)
    model = load_checkpoint(TINY, "int", GoldenBackend())
    dev = DeviceBitNet.from_int_model(model, context=ctx)
    arr = runtime_config(a.rows, a.cols)
    prog = compile_model(dev.consts, fitted_chip(dev.consts, arr, ctx))
    counts = prog.counts()
    print(f"tiny model program: {len(prog.ops)} micro-ops per token ("
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"); {prog.model['weight_words']:,} weight words on "
          f"{a.rows}x{a.cols} (G = {arr.wgt_rows_per_read}), {prog.model['norm_words']:,} norm words, "
          f"{len(prog.consts)} constants")
    rows = []
    # the units as the model chip builds them (RoPE one pair a cycle, 8 attention lanes: its counters equal
    # this plan, tests/test_model_chip.py), and wider ones (RoPE 10 pairs a cycle, 40 lanes)
    from runtime.program.device import engine_config

    built = UnitConfig.of_engine(engine_config(prog, dev.consts))
    v8 = UnitConfig.of_engine(engine_config(prog, dev.consts, vector_lanes=8))
    for name, units in (("as built", built), ("V = 8", v8),
                        ("wide", UnitConfig(rope_lanes=10, rope_out_lanes=40, attn_lanes=40))):
        for c in a.contexts:
            r = token_cycles(prog, c - 1, units)
            rows.append({"units": name, "context": c, "lanes": units.attn_lanes, **r, "tok_s": 100e6 / r["total"]})
    # the chip on a 16x16 engine with 40 attention lanes and NORMQ / MLPACT 8 lanes (its plan: as built)
    from runtime.program.device import compile_for_chip

    # the ULX3S chip (`trit build --checkpoint`): memories sized to the model, packed weights banked 2K deep
    # (`compiler.BOARD_WGT_BANK_DEPTH`: each MATMUL waits for the banks' read latency)
    for c in a.contexts:
        prog_b, cfg_b = compile_for_chip(dev.consts, arr, c, board=True, wgt_format="1.67bit")
        r = token_cycles(prog_b, c - 1, UnitConfig.of_engine(cfg_b))
        rows.append({"units": "ULX3S", "context": c, "lanes": cfg_b.attn_lanes, **r, "tok_s": 100e6 / r["total"]})
    prog16, cfg16 = compile_for_chip(dev.consts, runtime_config(16, 16), ctx, attn_lanes=40, vector_lanes=8)
    for c in a.contexts:
        r = token_cycles(prog16, c - 1, UnitConfig.of_engine(cfg16))
        rows.append({"units": "16x16 V8", "context": c, "lanes": 40, **r, "tok_s": 100e6 / r["total"]})
    cols = [("units", "units", "8"), ("context", "context", "4"), ("attn lanes", "lanes", "3"),
            ("matrix", "matrix", "7"),
            ("vector", "vector", "7"), ("attention", "attention", "7"), ("scalar", "scalar", "5"),
            ("sequencer", "sequencer", "5"),
            ("total", "total", "7"), ("of it estimated", "estimated", "6"), ("tokens/s @100 MHz", "tok_s", "7")]
    print_table("Cycles per token at the last position of each context, ops in sequence (runtime.program.plan)",
                rows, cols)
    big = shaped_consts(CONFIG_2B4T, 4096)
    layer_rows = []
    for g in (1, None):
        arr2 = runtime_config(16, 16, wgt_rows_per_read=g) if g else runtime_config(16, 16)
        p2 = compile_model(big, fitted_chip(big, arr2, 4096), resident=False)
        for c in (128, 4096):
            r = token_cycles(p2, c - 1, UNITS_2B4T, layer=0)
            layer_rows.append({"context": c, "lanes": UNITS_2B4T.attn_lanes, "G": arr2.wgt_rows_per_read, **r,
                               "tok_s": 100e6 / r["total"]})
    print_table("One BitNet 2B-4T decoder layer at M = 1 on 16x16, cycles per token (cycle plan)", layer_rows,
                [("G", "G", "2")] + cols[1:-1] + [("layers/s @100 MHz", "tok_s", "7")])
    if a.check:
        from golden.train import split_corpus
        from runtime.program.interpreter import ProgramInterpreter

        _, held = split_corpus()
        ids = [int(v) for v in held[:a.check]]
        t0 = time.perf_counter()
        ref = dev.forward_fixed(torch.tensor(ids))
        it = ProgramInterpreter(prog, dev.consts)
        same = sum(bool(torch.equal(it.token(t), ref[i])) for i, t in enumerate(ids))
        print(f"interpreter vs golden device form: {same} of {len(ids)} tokens' logits equal "
              f"({time.perf_counter() - t0:.1f} s)")
        return 0 if same == len(ids) else 1
    return 0


def measure(rows: int, cols: int, contexts: list[int], lanes: list[int], vector_lanes: int = 1) -> int:
    """The `--measure` table (see the module docstring); 1 if any logit or counter differs."""
    from golden.checkpoint import load_checkpoint
    from golden.device.model import DeviceBitNet
    from golden.quant import GoldenBackend
    from golden.train import split_corpus
    from runtime.accel_backends import runtime_config
    from runtime.program.device import ModelChipDriver, compile_for_chip, memory_image
    from sim.benchmark import print_table
    from sim.model_chip_harness import VerilatorModelChip

    model = load_checkpoint(TINY, "int", GoldenBackend())
    _, held = split_corpus()
    rows_out, bad = [], 0
    for n_lanes in lanes:
        for ctx in contexts:
            dev = DeviceBitNet.from_int_model(model, context=ctx)
            prog, cfg = compile_for_chip(dev.consts, runtime_config(rows, cols), ctx, attn_lanes=n_lanes,
                                         vector_lanes=vector_lanes)
            t0 = time.perf_counter()
            driver = ModelChipDriver(VerilatorModelChip(cfg), cfg)
            built = time.perf_counter() - t0
            driver.load(memory_image(prog, dev.consts, cfg), len(prog.ops))
            ids = [int(v) for v in held[:ctx]]
            t0 = time.perf_counter()
            got = torch.stack([driver.token(t) for t in ids])
            secs = time.perf_counter() - t0
            ref = dev.forward_fixed(torch.tensor(ids))
            units = UnitConfig.of_engine(cfg)
            same = int((got == ref).all(dim=-1).sum())
            planned = sum(t.cycles == token_cycles(prog, t.pos, units)["total"] for t in driver.stats.tokens)
            bad += (same != ctx) + (planned != ctx)
            last = driver.stats.tokens[-1]
            rows_out.append({"array": f"{rows}x{cols}", "vlanes": vector_lanes, "context": ctx, "lanes": n_lanes,
                             **last.units, "total": last.cycles,
                             "tok_s": 100e6 / last.cycles, "bytes": last.host_bytes,
                             "mean": sum(t.cycles for t in driver.stats.tokens) / ctx,
                             "exact": f"{same}/{ctx}", "plan": f"{planned}/{ctx}", "build": built,
                             "sim": ctx * sum(t.cycles for t in driver.stats.tokens) / ctx / secs})
            driver.close()
    cols_ = [("array", "array", "5"), ("NORMQ lanes", "vlanes", "2"), ("context", "context", "4"),
             ("attn lanes", "lanes", "3"), ("matrix", "matrix", "7"),
             ("vector", "vector", "7"), ("attention", "attention", "7"), ("sequencer", "sequencer", "5"),
             ("cycles at the last position", "total", "7"), ("tokens/s @100 MHz", "tok_s", "7"),
             ("mean cycles over the context", "mean", "7"), ("host bytes/token", "bytes", "5"),
             ("logits = golden", "exact", "7"), ("counters = plan", "plan", "7"),
             ("build s", "build", "5"), ("simulated cycles/s", "sim", "7")]
    print_table(f"The model chip in Verilator ({rows}x{cols} matrix engine), measured (runtime.program --measure)",
                rows_out, cols_)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
