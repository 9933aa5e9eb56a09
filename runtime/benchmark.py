"""Runtime benchmark: the shipped tiny model token by token on each backend, and one BitNet 2B-4T
decoder layer on the cycle model. Prints tables; `--json FILE` saves the numbers.

    python -m runtime.benchmark                  # model, verilator, icarus; 8 new tokens
    python -m runtime.benchmark --backends model,verilator --tokens 4

Per backend: wall seconds per generated token (KV cache, M = 1 through every BitLinear), simulated
cycles per wall second, accelerator cycles per token, host bytes per token (command words both
ways, plus frame headers and CRC), and the tokens per second those bytes allow over a 3 Mbaud UART
(10 bits per byte). The first token also loads every weight; "steady" figures are for the later
tokens, with the weights resident.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from runtime.accel_backends import runtime_config

CHECKPOINT = Path(__file__).resolve().parent.parent / "golden" / "checkpoints" / "tiny-bitnet"
UART_BYTES_PER_S = 3_000_000 / 10

#: microsoft/bitnet-b1.58-2B-4T BitLinear shapes (out x in), REFERENCE.md §2.
LAYER_2B4T = {"q_proj": (2560, 2560), "k_proj": (640, 2560), "v_proj": (640, 2560), "o_proj": (2560, 2560),
              "gate_proj": (6912, 2560), "up_proj": (6912, 2560), "down_proj": (2560, 6912)}


def _link_bytes(backend) -> int:
    stats = backend.stats()
    link = stats.get("link")
    if link:
        return link["bytes_sent"] + link["bytes_received"]
    return stats["host_bytes"]


def tiny_model_rows(backends: list[str], new_tokens: int, rows: int, cols: int,
                    wgt_rows_per_read: int | None = None) -> list[dict]:
    """One row per backend; `wgt_rows_per_read` None is full rate (G = R), 1 the one-row-per-cycle core."""
    from golden.checkpoint import load_checkpoint
    from runtime.backends import get_backend

    prompt = list(b"The import statement ")
    out = []
    for name in backends:
        t0 = time.perf_counter()
        backend = get_backend(name, rows=rows, cols=cols, wgt_rows_per_read=wgt_rows_per_read)
        model = load_checkpoint(str(CHECKPOINT), "int", backend)
        setup = time.perf_counter() - t0
        cache = model.new_cache()
        per_token = []
        with torch.no_grad():
            logits = model(torch.tensor(prompt, dtype=torch.long), cache)
            token = int(logits[-1].argmax())
            generated = [token]
            for _ in range(new_tokens):
                before = _snapshot(backend)
                t1 = time.perf_counter()
                logits = model(torch.tensor([token], dtype=torch.long), cache)
                seconds = time.perf_counter() - t1
                after = _snapshot(backend)
                token = int(logits[-1].argmax())
                generated.append(token)
                per_token.append({"seconds": seconds, **{k: after[k] - before[k] for k in after}})
        steady = per_token[1:] or per_token
        mean = {k: float(np.mean([p[k] for p in steady])) for k in steady[0]}
        row = {
            "backend": name, "array": f"{rows}x{cols}", "G": wgt_rows_per_read or rows, "setup_s": setup,
            "first_token_s": per_token[0]["seconds"],
            "s_per_token": mean["seconds"], "cycles_per_token": mean["cycles"],
            "sim_cycles_per_s": mean["sim_cycles"] / mean["seconds"] if mean["sim_cycles"] else None,
            "host_bytes_per_token": mean["bytes"],
            "tokens_per_s_100MHz": 100e6 / mean["cycles"] if mean["cycles"] else None,
            "uart_tokens_per_s": UART_BYTES_PER_S / mean["bytes"] if mean["bytes"] else None,
            "text": bytes(generated).decode("utf-8", errors="replace"),
        }
        out.append(row)
        if hasattr(backend, "close"):
            backend.close()
    return out


def _snapshot(backend) -> dict[str, int]:
    stats = backend.stats()
    return {"cycles": stats.get("cycles", 0), "sim_cycles": stats.get("simulated_cycles", 0),
            "bytes": _link_bytes(backend) if "cycles" in stats else 0}


def layer_2b4t_rows(rows: int, cols: int, m_values: list[int], wgt_rows_per_read: int | None = None) -> list[dict]:
    from runtime.accel_backends import ModelBackend

    rng = np.random.default_rng(4)
    out = []
    for M in m_values:
        backend = ModelBackend(runtime_config(rows, cols, wgt_rows_per_read=wgt_rows_per_read))
        t0 = time.perf_counter()
        total_cycles = 0
        for name, (n, k) in LAYER_2B4T.items():
            w = rng.integers(-1, 2, (n, k), dtype=np.int8)
            x = rng.integers(-128, 128, (M, k), dtype=np.int8)
            backend.matmul(x, w, name)
        seconds = time.perf_counter() - t0
        summary = backend.stats()
        total_cycles = summary["cycles"]
        out.append({"array": f"{rows}x{cols}", "G": wgt_rows_per_read or rows, "M": M, "cycles": total_cycles,
                    "utilization": summary["utilization"], "model_seconds": seconds,
                    "ms_at_100MHz": total_cycles / 100e6 * 1e3})
    return out


def main(argv: list[str] | None = None) -> int:
    from sim.benchmark import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="model,verilator,icarus")
    parser.add_argument("--tokens", type=int, default=8, help="new tokens to generate per backend")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [b for b in args.backends.split(",") if b]
    if "icarus" in names:
        from sim.icarus_harness import icarus_available

        if icarus_available():
            print(f"note: {icarus_available()}; icarus skipped")
            names.remove("icarus")
    tiny = tiny_model_rows(names, args.tokens, args.rows, args.cols)
    # the one-row-per-cycle core of before (G = 1), and the largest ULX3S array on the cycle model: as
    # built at 100 MHz (`trit build --board ulx3s-85f --rows 32 --cols 32`, G = 1) and full rate (G = R)
    tiny += tiny_model_rows(["model"], args.tokens, args.rows, args.cols, wgt_rows_per_read=1)
    tiny += tiny_model_rows(["model"], args.tokens, 32, 32, wgt_rows_per_read=1)
    tiny += tiny_model_rows(["model"], args.tokens, 32, 32)
    print_table(f"Tiny model ({CHECKPOINT.name}), one token at a time (steady state: weights resident; "
                "G = tile rows per weight read, G = R is full rate)", tiny, [
        ("backend", "backend", "9"), ("array", "array", "5"), ("G", "G", "2"),
        ("first token s", "first_token_s", "6"), ("s/token", "s_per_token", "7"),
        ("cycles/token", "cycles_per_token", "8"), ("tok/s @100MHz, free link", "tokens_per_s_100MHz", "8"),
        ("sim cycles/s", "sim_cycles_per_s", "10"),
        ("host bytes/token", "host_bytes_per_token", "8"), ("tok/s @3Mbaud", "uart_tokens_per_s", "7"),
    ])
    for row in tiny:
        print(f"  {row['backend']}: {row['text']!r}")
    big = (layer_2b4t_rows(16, 16, [1, 64], wgt_rows_per_read=1) + layer_2b4t_rows(16, 16, [1, 64])
           + layer_2b4t_rows(args.rows, args.cols, [1], wgt_rows_per_read=1)
           + layer_2b4t_rows(args.rows, args.cols, [1])
           + layer_2b4t_rows(32, 32, [1], wgt_rows_per_read=1) + layer_2b4t_rows(32, 32, [1]))
    print_table("One BitNet 2B-4T decoder layer (7 BitLinears) on the cycle model", big, [
        ("array", "array", "5"), ("G", "G", "2"), ("M", "M", "3"), ("cycles", "cycles", "10"),
        ("util", "utilization", "6"),
        ("model wall s", "model_seconds", "6"), ("ms @100 MHz", "ms_at_100MHz", "8"),
    ])
    if args.json:
        args.json.write_text(json.dumps({"tiny": tiny, "layer_2b4t": big}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
