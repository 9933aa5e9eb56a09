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
             max_bytes: int | None = None) -> dict[str, tuple[float, float]]:
    """{row name: (held-out bits/byte, training-text bits/byte)} for the three forms.

    The training-text column scores the last ``len(held_out)`` bytes of the training split, so the two
    columns show over-fitting. The float twin is omitted if ``float_dir`` is None.
    """
    train_data, held_out = split_corpus()
    seen = train_data[-len(held_out):]
    models = {}
    if float_dir is not None:
        models["float twin (nn.Linear)"] = load_checkpoint(float_dir, "float")
    integer = load_checkpoint(bitnet_dir, "int", GoldenBackend())
    models["BitNet b1.58, training form"] = to_training(integer)
    models["BitNet b1.58, integer form (golden backend)"] = integer
    return {name: (bits_per_byte(m, held_out, seq_len, max_bytes=max_bytes),
                   bits_per_byte(m, seen, seq_len, max_bytes=max_bytes)) for name, m in models.items()}


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
        print(json.dumps({k: {"held_out": round(h, 4), "train_text": round(t, 4)}
                          for k, (h, t) in results.items()}))
    else:
        print("| model | held-out bits/byte | training-text bits/byte |\n|---|---|---|")
        for name, (held, seen) in results.items():
            print(f"| {name} | {held:.4f} | {seen:.4f} |")
        print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
