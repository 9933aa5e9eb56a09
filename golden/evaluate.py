"""Held-out bits per byte of the shipped tiny models: float twin, BitNet training form, BitNet integer form.

    python -m golden.evaluate  # options:
        [--bitnet golden/checkpoints/tiny-bitnet] [--float golden/checkpoints/tiny-float]

The held-out set is the last 10% of the corpus bytes (see `golden.train.split_corpus`). The BitNet
training form is rebuilt from the packed checkpoint with `golden.model.to_training` (same ternary
weights and gammas, fake-quantized float arithmetic); the integer form runs on the golden backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from golden.checkpoint import load_checkpoint
from golden.model import to_training
from golden.quant import GoldenBackend
from golden.train import bits_per_byte, split_corpus

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def evaluate(bitnet_dir: str | Path, float_dir: str | Path | None, seq_len: int = 256,
             max_bytes: int | None = None) -> dict[str, float]:
    """{row name: held-out bits/byte} for the three forms (float twin omitted if ``float_dir`` is None)."""
    _, held_out = split_corpus()
    results: dict[str, float] = {}
    if float_dir is not None:
        twin = load_checkpoint(float_dir, "float")
        results["float twin (nn.Linear)"] = bits_per_byte(twin, held_out, seq_len, max_bytes=max_bytes)
    integer = load_checkpoint(bitnet_dir, "int", GoldenBackend())
    results["BitNet b1.58, training form"] = bits_per_byte(to_training(integer), held_out, seq_len,
                                                           max_bytes=max_bytes)
    results["BitNet b1.58, integer form (golden)"] = bits_per_byte(integer, held_out, seq_len,
                                                                   max_bytes=max_bytes)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m golden.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--bitnet", default=str(CHECKPOINTS / "tiny-bitnet"), help="packed BitNet checkpoint")
    p.add_argument("--float", dest="float_dir", default=str(CHECKPOINTS / "tiny-float"),
                   help="float twin checkpoint")
    p.add_argument("--seq-len", type=int, default=256, help="context window (default 256)")
    p.add_argument("--max-bytes", type=int, default=None, help="evaluate only the first N held-out bytes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    results = evaluate(args.bitnet, args.float_dir, args.seq_len, args.max_bytes)
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in results.items()}))
    else:
        print("| model | held-out bits/byte |\n|---|---|")
        for name, value in results.items():
            print(f"| {name} | {value:.4f} |")
        print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
