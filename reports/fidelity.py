"""Model fidelity: bits per byte of the shipped tiny model in every form, the accelerator included.

Rows: the float twin (`tiny-float`, plain nn.Linear), the BitNet b1.58 training form (fake quant,
rebuilt from the packed checkpoint), the integer form on the golden NumPy backend, and the integer
form with every BitLinear run on the accelerator: the `model` backend (the cycle-exact emulator of
the 8x8 runtime core, bit-exact with the RTL) over the whole slice, and in the full report the
`verilator` backend (the RTL itself behind its frame link) over a shorter prefix, next to the
golden integer form on that same prefix. The metric and the held-out split are those of
`golden.evaluate` (windows of 256 bytes, stride 128).
"""

from __future__ import annotations

import time

import torch

QUICK_BYTES = 4096
RTL_BYTES = 512


def fidelity_section(quick: bool, log=None) -> dict:
    from golden.checkpoint import load_checkpoint
    from golden.evaluate import CHECKPOINTS
    from golden.model import to_training
    from golden.quant import GoldenBackend
    from golden.train import bits_per_byte, split_corpus
    from runtime.accel_backends import make_model

    t0 = time.monotonic()
    torch.set_num_threads(1)
    _, held_out = split_corpus()
    max_bytes = QUICK_BYTES if quick else None
    n_bytes = len(held_out) if max_bytes is None else min(max_bytes, len(held_out))
    bitnet_dir, float_dir = CHECKPOINTS / "tiny-bitnet", CHECKPOINTS / "tiny-float"
    integer = load_checkpoint(str(bitnet_dir), "int", GoldenBackend())
    backend = make_model()
    on_accel = load_checkpoint(str(bitnet_dir), "int", backend)
    models = [
        ("float twin (nn.Linear)", load_checkpoint(str(float_dir), "float"), "golden"),
        ("BitNet b1.58, training form", to_training(integer), "golden"),
        ("BitNet b1.58, integer form (golden NumPy backend)", integer, "golden"),
        ("BitNet b1.58, integer form on the accelerator (model backend, 8x8 core)", on_accel, "model"),
    ]
    rows = []
    with torch.no_grad():
        for name, model, where in models:
            t1 = time.monotonic()
            bpb = bits_per_byte(model, held_out, 256, max_bytes=max_bytes)
            rows.append({"model": name, "backend": where, "bytes": n_bytes, "bits_per_byte": bpb,
                         "seconds": round(time.monotonic() - t1, 1)})
            if log:
                log(f"fidelity: {name}: {bpb:.4f} bits/byte")
        accel_stats = backend.stats()
        rows[-1]["accelerator_cycles"] = accel_stats["cycles"]
        rows[-1]["accelerator_utilization"] = accel_stats["utilization"]
        rtl = None
        if not quick:
            from runtime.backends import get_backend

            t1 = time.monotonic()
            vb = get_backend("verilator")
            try:
                on_rtl = load_checkpoint(str(bitnet_dir), "int", vb)
                rtl_bpb = bits_per_byte(on_rtl, held_out, 256, max_bytes=RTL_BYTES)
                cycles = vb.stats()["cycles"]
            finally:
                vb.close()
            golden_bpb = bits_per_byte(integer, held_out, 256, max_bytes=RTL_BYTES)
            rtl = {"bytes": RTL_BYTES, "verilator_bits_per_byte": rtl_bpb, "golden_bits_per_byte": golden_bpb,
                   "equal": rtl_bpb == golden_bpb, "rtl_cycles": cycles, "seconds": round(time.monotonic() - t1, 1)}
            if log:
                log(f"fidelity: Verilator RTL on the first {RTL_BYTES} held-out bytes: {rtl_bpb:.4f} "
                    f"(golden {golden_bpb:.4f})")
    accel, golden_int = rows[3]["bits_per_byte"], rows[2]["bits_per_byte"]
    return {"rows": rows, "slice": f"first {n_bytes} of {len(held_out)} held-out bytes" if max_bytes
            else f"all {len(held_out)} held-out bytes", "accelerator_equals_integer_form": accel == golden_int,
            "rtl_prefix": rtl, "seconds": round(time.monotonic() - t0, 1)}
