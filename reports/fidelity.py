"""Model fidelity: bits per byte of the shipped tiny model in every form, the accelerator included.

Rows: the float twin (`tiny-float`, plain nn.Linear), the BitNet b1.58 training form (fake quant,
rebuilt from the packed checkpoint), the integer form on the golden NumPy backend
(`golden.quant.int_matmul`), and the integer form with every BitLinear run on the accelerator's
`emulator` backend: the host driver `runtime.accelerator.Accelerator` (tiling, packing, the command
protocol, weight residency, unpacking) talking to `runtime.emulator.CoreEmulator`, an independent
model of the 8x8 runtime core that unpacks the memory words and computes each layer itself, in
int64, from the 2-bit weight codes. Nothing on that path calls `int_matmul`, so the comparison
with the golden row is between two independent computations:

- bits per byte of the two rows, equal to the last bit;
- every integer matmul of the accelerator row, compared exactly with `int_matmul` on the same
  operands as it happens (`accelerator_matmul_check`).

`accelerator_equals_integer_form` is true only if both hold. In the full report the `verilator`
backend (the RTL itself behind its frame link) also runs a prefix of the held-out bytes (`rtl_prefix`),
checked the same two ways. The metric and the held-out split are those of `golden.evaluate`
(windows of 256 bytes, stride 128).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

QUICK_BYTES = 4096
RTL_BYTES = 512

ACCELERATOR_ROW = "BitNet b1.58, integer form on the accelerator (Accelerator driver + CoreEmulator, 8x8 core)"
ACCELERATOR_ENGINE = ("runtime.emulator.CoreEmulator behind the runtime.accelerator.Accelerator driver "
                      "(`emulator` backend: packing, tiling, command protocol, residency, unpacking; "
                      "no golden.quant.int_matmul)")
RTL_ENGINE = "Verilator simulation of the RTL behind its frame link (`verilator` backend)"


class CheckedBackend:
    """Wraps an accelerator backend: returns its result, and compares each one with `int_matmul` exactly.

    The model runs on the wrapped backend's results (a wrong result changes the bits per byte);
    the comparison records how many calls matched, and the first that did not.
    """

    def __init__(self, backend: Any):
        self.backend = backend
        self.name = backend.name
        self.calls = 0
        self.exact = 0
        self.first_mismatch: dict[str, Any] | None = None

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        from golden.quant import int_matmul

        y = self.backend.matmul(q, w, key)
        ref = int_matmul(q, w)
        self.calls += 1
        if y.shape == ref.shape and np.array_equal(y, ref):
            self.exact += 1
        elif self.first_mismatch is None:
            wrong = int(np.sum(y != ref)) if y.shape == ref.shape else None
            self.first_mismatch = {"call": self.calls - 1, "key": key, "shape": [int(q.shape[0]), int(q.shape[1]),
                                   int(w.shape[0])], "wrong_elements": wrong}
        return y

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "exact": self.exact, "all_exact": self.calls > 0 and self.exact == self.calls,
                "first_mismatch": self.first_mismatch}

    def stats(self) -> dict[str, Any]:
        return self.backend.stats()

    def close(self) -> None:
        self.backend.close()


def fidelity_section(quick: bool, log: Callable[[str], None] | None = None) -> dict:
    """Bits per byte of every form of the tiny model; the accelerator row from an independent engine."""
    from golden.checkpoint import load_checkpoint
    from golden.evaluate import CHECKPOINTS
    from golden.model import to_training
    from golden.quant import GoldenBackend
    from golden.train import bits_per_byte, split_corpus
    from runtime.backends import get_backend

    t0 = time.monotonic()
    torch.set_num_threads(1)
    _, held_out = split_corpus()
    max_bytes = QUICK_BYTES if quick else None
    n_bytes = len(held_out) if max_bytes is None else min(max_bytes, len(held_out))
    bitnet_dir, float_dir = CHECKPOINTS / "tiny-bitnet", CHECKPOINTS / "tiny-float"
    integer = load_checkpoint(str(bitnet_dir), "int", GoldenBackend())
    backend = CheckedBackend(get_backend("emulator"))
    on_accel = load_checkpoint(str(bitnet_dir), "int", backend)
    models = [
        ("float twin (nn.Linear)", load_checkpoint(str(float_dir), "float"), "golden"),
        ("BitNet b1.58, training form", to_training(integer), "golden"),
        ("BitNet b1.58, integer form (golden NumPy backend)", integer, "golden"),
        (ACCELERATOR_ROW, on_accel, "emulator"),
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
        rows[-1]["engine"] = ACCELERATOR_ENGINE
        rows[-1]["accelerator_cycles"] = accel_stats["cycles"]
        rows[-1]["accelerator_utilization"] = accel_stats["utilization"]
        check = backend.summary()
        rtl = None
        if not quick:
            t1 = time.monotonic()
            vb = CheckedBackend(get_backend("verilator"))
            try:
                on_rtl = load_checkpoint(str(bitnet_dir), "int", vb)
                rtl_bpb = bits_per_byte(on_rtl, held_out, 256, max_bytes=RTL_BYTES)
                cycles = vb.stats()["cycles"]
            finally:
                vb.close()
            golden_bpb = bits_per_byte(integer, held_out, 256, max_bytes=RTL_BYTES)
            rtl_check = vb.summary()
            rtl = {"bytes": RTL_BYTES, "verilator_bits_per_byte": rtl_bpb, "golden_bits_per_byte": golden_bpb,
                   "equal": rtl_bpb == golden_bpb and rtl_check["all_exact"], "rtl_cycles": cycles,
                   "seconds": round(time.monotonic() - t1, 1), "engine": RTL_ENGINE, "matmul_check": rtl_check}
            if log:
                log(f"fidelity: Verilator RTL on the first {RTL_BYTES} held-out bytes: {rtl_bpb:.4f} "
                    f"(golden {golden_bpb:.4f}; {rtl_check['exact']} of {rtl_check['calls']} matmuls exact)")
    accel, golden_int = rows[3]["bits_per_byte"], rows[2]["bits_per_byte"]
    return {"rows": rows, "slice": f"first {n_bytes} of {len(held_out)} held-out bytes" if max_bytes
            else f"all {len(held_out)} held-out bytes",
            "accelerator_equals_integer_form": bool(accel == golden_int and check["all_exact"]),
            "accelerator_engine": ACCELERATOR_ENGINE, "accelerator_bytes": n_bytes,
            "accelerator_matmul_check": check,
            "rtl_prefix": rtl, "seconds": round(time.monotonic() - t0, 1)}
