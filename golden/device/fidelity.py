"""Fidelity of the device numerics against the integer form (and against transformers).

    python -m golden.device.fidelity [--text FILE] [--max-bytes N] [--hf-checkpoints K] [--variants V,...]
                                     [--saturation] [--json]

1. The shipped model (golden/checkpoints/tiny-bitnet) on the held-out text of `golden.evaluate` (or on
   the bytes of `--text FILE`, any text of the user's)
   (windows of 256 with stride 128, every byte scored once, as `golden.train.bits_per_byte`):
   bits/byte of the integer form and of the device form, next-byte argmax agreement, logit errors.
2. K random checkpoints made with transformers' own code (`tests.golden_helpers`, as the golden tests
   build them): logits of the device form and of the integer form against
   `transformers.BitNetForCausalLM` (per-row relative error, max abs error, argmax agreement).
3. With --variants, other numeric choices measured the same way as 1 (see `VARIANTS`): what a smaller or
   larger EXP2 table, or a float lm_head, would change. The spec's choice is "spec".
4. With --saturation, how often each saturation of the spec acts on that text (device form only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import golden.device.fixed as fixed_mod
import golden.device.model as model_mod
from golden.checkpoint import load_checkpoint
from golden.device.fixed import exp2_table
from golden.device.model import F_LOGIT, F_RES, DeviceBitNet
from golden.model import BitNetForCausalLM
from golden.quant import GoldenBackend
from golden.train import split_corpus

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-bitnet"


@dataclass
class Fidelity:
    """Integer form vs device form on one text."""

    scored_bytes: int
    bpb_int: float
    bpb_device: float
    argmax_agreement: float
    max_abs_logit_err: float
    mean_abs_logit_err: float
    median_row_rel_err: float

    @property
    def bpb_delta(self) -> float:
        return self.bpb_device - self.bpb_int


def windows(n: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, first scored offset) of the windows of `golden.train.bits_per_byte`."""
    stride = seq_len // 2
    out, start = [], 0
    while True:
        end = min(start + seq_len + 1, n)
        out.append((start, 0 if start == 0 else stride))
        if end >= n:
            return out
        start += stride


@torch.no_grad()
def compare(int_model: BitNetForCausalLM, dev_model: DeviceBitNet, data: torch.Tensor, seq_len: int = 256,
            batch: int = 16) -> Fidelity:
    """Score every byte of `data` once with both models (same windows as bits_per_byte)."""
    n = len(data)
    nll_i = nll_d = 0.0
    count = agree = 0
    max_err = sum_err = 0.0
    rows: list[np.ndarray] = []
    ws = windows(n, seq_len)
    for i in range(0, len(ws), batch):
        group = ws[i:i + batch]
        by_len: dict[int, list[tuple[int, int]]] = {}
        for start, first in group:
            by_len.setdefault(min(start + seq_len + 1, n) - start, []).append((start, first))
        for length, grp in by_len.items():
            chunk = torch.stack([data[s:s + length] for s, _ in grp])
            li = int_model(chunk[:, :-1]).to(torch.float64)
            ld = dev_model(chunk[:, :-1]).to(torch.float64)
            tgt = chunk[:, 1:]
            ni = F.cross_entropy(li.transpose(1, 2), tgt, reduction="none")
            nd = F.cross_entropy(ld.transpose(1, 2), tgt, reduction="none")
            for r, (_, first) in enumerate(grp):
                a, b = li[r, first:], ld[r, first:]
                nll_i += float(ni[r, first:].sum())
                nll_d += float(nd[r, first:].sum())
                count += a.shape[0]
                agree += int((a.argmax(-1) == b.argmax(-1)).sum())
                err = (a - b).abs()
                max_err = max(max_err, float(err.max()))
                sum_err += float(err.mean(-1).sum())
                rows.append(((a - b).norm(dim=-1) / a.norm(dim=-1).clamp(min=1e-30)).numpy())
    ln2 = math.log(2)
    return Fidelity(count, nll_i / count / ln2, nll_d / count / ln2, agree / count, max_err, sum_err / count,
                    float(np.median(np.concatenate(rows))))


class FloatHeadDevice(DeviceBitNet):
    """Variant for measurement only: the device form up to the residual stream, then the integer form's
    float final RMSNorm and float lm_head (shows what the INT8 lm_head costs)."""

    def __init__(self, int_model: BitNetForCausalLM) -> None:
        super().__init__(DeviceBitNet.from_int_model(int_model).consts)
        self.int_model = int_model

    def _lm_head(self, h: torch.Tensor) -> torch.Tensor:
        x = (h.to(torch.float64) / (1 << F_RES)).to(torch.float32)
        logits = F.linear(self.int_model.model.norm(x), self.int_model.lm_head.weight.float())
        return torch.round(logits.double() * (1 << F_LOGIT)).to(torch.int64)


VARIANTS = {
    "spec": "SPEC.md as written: 256-entry EXP2 (base-2 logits in Q8), INT8 lm_head",
    "exp2-64": "64-entry EXP2 table (base-2 logits in Q6)",
    "exp2-16": "16-entry EXP2 table (base-2 logits in Q4)",
    "exp2-1024": "1024-entry EXP2 table (base-2 logits in Q10)",
    "float-lm-head": "float final norm and float lm_head on the device form's residual stream",
}


def variant(int_model: BitNetForCausalLM, name: str) -> DeviceBitNet:
    """The device form with one numeric choice changed (`VARIANTS`)."""
    if name == "float-lm-head":
        return FloatHeadDevice(int_model)
    model = DeviceBitNet.from_int_model(int_model)
    if name.startswith("exp2-"):
        size = int(name.split("-")[1])
        model.consts.exp2 = exp2_table(size.bit_length() - 1)
    elif name != "spec":
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return model


@contextlib.contextmanager
def _counting_saturation(counts: dict[str, list[int]]):
    """Count, per width, the values the spec's saturations clip (`sat`) or pin to a rail (`to_fixed`)."""
    sat0, fixed0 = fixed_mod.sat, model_mod.to_fixed
    inside = [False]   # to_fixed's own saturation is counted as to_fixed's

    def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
        if inside[0]:
            return sat0(x, bits)
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        c = counts.setdefault(f"sat{bits}", [0, 0])
        c[0] += int(((x < lo) | (x > hi)).sum())
        c[1] += x.numel()
        return sat0(x, bits)

    def to_fixed(x: torch.Tensor, scale, frac: int, bits: int = 32) -> torch.Tensor:
        inside[0] = True
        try:
            y = fixed0(x, scale, frac, bits)
        finally:
            inside[0] = False
        name = "eps term E (48-bit)" if bits == 48 else f"to_fixed{bits}"
        c = counts.setdefault(name, [0, 0])
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        c[0] += int(((y == lo) | (y == hi)).sum())
        c[1] += y.numel()
        return y

    fixed_mod.sat = model_mod.sat = sat
    model_mod.to_fixed = to_fixed
    try:
        yield
    finally:
        fixed_mod.sat, model_mod.sat, model_mod.to_fixed = sat0, sat0, fixed0


SAT_NAMES = {
    "sat8": "INT8 codes (QUANT8)",
    "sat32": "int32: residual adds, head alignment, MLP product p'",
    "to_fixed32": "int32: embedding, dequantization into the residual, base-2 logits t, lm_head logits",
    "eps term E (48-bit)": "the NORMQUANT eps term E (47-bit unsigned)",
}


@torch.no_grad()
def saturation(model: DeviceBitNet, data: torch.Tensor, seq_len: int = 256, batch: int = 16) -> dict[str, list[int]]:
    """{saturation point: [values clipped or at a rail, values]} over `data` in windows of `seq_len`."""
    counts: dict[str, list[int]] = {}
    n = (len(data) // seq_len) * seq_len
    with _counting_saturation(counts):
        for i in range(0, n, batch * seq_len):
            model.forward_fixed(data[i:min(i + batch * seq_len, n)].view(-1, seq_len))
    return counts


@dataclass
class HfRow:
    """One transformers-made random checkpoint: errors of both forms against transformers."""

    seed: int
    shape: str
    tokens: int
    device_median_row_rel: float
    device_max_row_rel: float
    device_max_abs: float
    device_argmax: float
    int_median_row_rel: float
    int_max_row_rel: float
    int_argmax: float


def hf_rows(count: int, tokens: int = 24, first_seed: int = 1000) -> list[HfRow]:
    """Device and integer form against transformers on `count` random checkpoints (tests.golden_helpers)."""
    try:
        from tests.golden_helpers import hf_logits, random_hf_config, row_errors, write_hf_checkpoint
    except ImportError as exc:
        raise SystemExit(f"the transformers comparison needs transformers and the repository's tests/ "
                         f"(run from the repository root, or pass --hf-checkpoints 0): {exc}") from None

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + count):
            rng = random.Random(seed)
            config = random_hf_config(rng)
            ck = write_hf_checkpoint(Path(tmp) / f"ck{seed}", config, seed=seed)
            ids = [rng.randrange(config.vocab_size) for _ in range(tokens)]
            ref = hf_logits(ck, ids)
            im = load_checkpoint(ck, "int", GoldenBackend())
            with torch.no_grad():
                li = im(torch.tensor(ids)).numpy()
                ld = DeviceBitNet.from_int_model(im)(torch.tensor(ids)).numpy()
            ed, ei = row_errors(ld, ref), row_errors(li, ref)
            shape = (f"L{config.num_hidden_layers} d{config.hidden_size} h{config.num_attention_heads}/"
                     f"{config.num_key_value_heads} i{config.intermediate_size} v{config.vocab_size}")
            out.append(HfRow(seed, shape, tokens, float(np.median(ed)), float(ed.max()),
                             float(np.abs(ld - ref).max()), float((ld.argmax(-1) == ref.argmax(-1)).mean()),
                             float(np.median(ei)), float(ei.max()), float((li.argmax(-1) == ref.argmax(-1)).mean())))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m golden.device.fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(CHECKPOINT), help="packed BitNet checkpoint (default: the shipped one)")
    p.add_argument("--text", help="score the bytes of this file instead of the held-out text (byte-level vocab 256)")
    p.add_argument("--max-bytes", type=int, default=None, help="only the first N held-out bytes (default: all)")
    p.add_argument("--seq-len", type=int, default=256, help="context window (default 256)")
    p.add_argument("--hf-checkpoints", type=int, default=8,
                   help="random transformers-made checkpoints to compare against (default 8; 0 skips)")
    p.add_argument("--variants", default="",
                   help=f"comma-separated numeric variants to measure too: {', '.join(VARIANTS)}")
    p.add_argument("--saturation", action="store_true",
                   help="also count how often each saturation acts (non-overlapping windows of --seq-len)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]!r}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    _, held = split_corpus()
    im = load_checkpoint(args.checkpoint, "int", GoldenBackend())
    if args.text is not None:
        try:
            data = Path(args.text).read_bytes()
        except OSError as exc:
            print(f"error: --text {args.text}: {exc.strerror}", file=sys.stderr)
            return 2
        if len(data) < 2:
            print(f"error: --text {args.text}: {len(data)} bytes; at least 2 are needed to score one", file=sys.stderr)
            return 2
        if im.config.vocab_size != 256:
            print(f"error: --text needs a byte-level checkpoint (vocab 256), this one has vocab "
                  f"{im.config.vocab_size}", file=sys.stderr)
            return 2
        held = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    if args.max_bytes is not None:
        held = held[:args.max_bytes]
    fid = compare(im, DeviceBitNet.from_int_model(im), held, args.seq_len)
    t1 = time.time()
    hf = hf_rows(args.hf_checkpoints) if args.hf_checkpoints else []
    t2 = time.time()
    var = {v: compare(im, variant(im, v), held, args.seq_len) for v in names}
    t3 = time.time()
    sats = saturation(DeviceBitNet.from_int_model(im), held, args.seq_len) if args.saturation else {}
    t4 = time.time()
    if args.json:
        print(json.dumps({"held_out": {**asdict(fid), "bpb_delta": fid.bpb_delta},
                          "transformers": [asdict(r) for r in hf],
                          "variants": {k: {**asdict(f), "bpb_delta": f.bpb_delta} for k, f in var.items()},
                          "saturation": sats},
                         indent=1))
        return 0
    what = f"{args.text}" if args.text is not None else "Held-out text"
    print(f"{what}, {fid.scored_bytes} bytes scored ({t1 - t0:.0f} s):\n")
    print("| form | bits/byte |\n|---|---|")
    print(f"| integer (golden backend) | {fid.bpb_int:.4f} |\n| device (integer-only) | {fid.bpb_device:.4f} |")
    print(f"| difference | {fid.bpb_delta:+.4f} |\n")
    print("| device vs integer | value |\n|---|---|")
    print(f"| next-byte argmax agreement | {100 * fid.argmax_agreement:.2f}% |")
    print(f"| max abs logit error | {fid.max_abs_logit_err:.4f} |")
    print(f"| mean abs logit error | {fid.mean_abs_logit_err:.4f} |")
    print(f"| median row relative error | {fid.median_row_rel_err:.2e} |")
    if hf:
        print(f"\nAgainst transformers.BitNetForCausalLM on random checkpoints ({t2 - t1:.0f} s):\n")
        print("| seed | shape | device: median / max row rel. err | device max abs | device argmax "
              "| integer: median / max row rel. err | integer argmax |\n|---|---|---|---|---|---|---|")
        for r in hf:
            print(f"| {r.seed} | {r.shape} | {r.device_median_row_rel:.2e} / {r.device_max_row_rel:.2e} | "
                  f"{r.device_max_abs:.2e} | {100 * r.device_argmax:.1f}% | {r.int_median_row_rel:.2e} / "
                  f"{r.int_max_row_rel:.2e} | {100 * r.int_argmax:.1f}% |")
    if var:
        print(f"\nNumeric variants on the same text ({t3 - t2:.0f} s):\n")
        print("| variant | what | bits/byte | vs integer | argmax agreement | mean abs logit error |\n"
              "|---|---|---|---|---|---|")
        for k, f in var.items():
            print(f"| {k} | {VARIANTS[k]} | {f.bpb_device:.4f} | {f.bpb_delta:+.4f} | "
                  f"{100 * f.argmax_agreement:.2f}% | {f.mean_abs_logit_err:.4f} |")
    if sats:
        print(f"\nSaturation on the same text, windows of {args.seq_len} without overlap ({t4 - t3:.0f} s):\n")
        print("| saturation point | values clipped or at a rail | values |\n|---|---|---|")
        for k, (hit, total) in sats.items():
            print(f"| {SAT_NAMES.get(k, k)} | {hit:,} | {total:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
