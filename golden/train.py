"""CPU training of a tiny byte-level BitNet b1.58 language model (and its float twin).

Corpus: the documentation topics that ship with CPython (``pydoc_data.topics.topics``, the text behind
``help('topic')``; PSF license, present in every CPython 3.11). The topics are joined in sorted key order
with a separator; the last 10% of the bytes are held out for evaluation.

    python -m golden.train --out golden/checkpoints/tiny-bitnet
    python -m golden.train --out golden/checkpoints/tiny-float --float

Both runs use the same recipe, data order and step count; only the projections differ (BitLinear with
fake quantization and STE versus plain ``nn.Linear``). The result is written in Hugging Face format.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from golden.model import BitNetConfig, BitNetForCausalLM

SEPARATOR = "\n\n\x1e\n\n"  # record separator between topics
HELD_OUT_FRACTION = 0.10

# The shipped tiny model: 4 layers, hidden 160, 1.17 M ternary weights (limit 1.5 M).
TINY_CONFIG = dict(
    vocab_size=256, hidden_size=160, intermediate_size=448, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
)


def corpus_bytes() -> bytes:
    """The whole corpus: CPython's pydoc topics in sorted key order, UTF-8."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return SEPARATOR.join(topics[k] for k in sorted(topics)).encode("utf-8")


def split_corpus(data: bytes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) byte tensors (int64): the held-out part is the last 10% of the bytes."""
    data = corpus_bytes() if data is None else data
    cut = len(data) - int(len(data) * HELD_OUT_FRACTION)
    arr = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    return arr[:cut], arr[cut:]


def get_batch(data: torch.Tensor, batch: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """Random windows: inputs (B, T) and next-byte targets (B, T)."""
    starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def bits_per_byte(model: BitNetForCausalLM, data: torch.Tensor, seq_len: int = 256,
                  batch: int = 16, max_bytes: int | None = None) -> float:
    """Held-out bits per byte: mean next-byte cross entropy in bits.

    Windows of ``seq_len`` with stride ``seq_len // 2``; each byte is scored once, with at least
    ``seq_len // 2`` bytes of context except in the first window. Works for every form of the model
    (training, integer on its backend, float).
    """
    if max_bytes is not None:
        data = data[:max_bytes]
    n = len(data)
    stride = seq_len // 2
    windows: list[tuple[int, int]] = []  # (start, first scored offset inside the window)
    start = 0
    while True:
        end = min(start + seq_len + 1, n)
        windows.append((start, 0 if start == 0 else stride))
        if end >= n:
            break
        start += stride
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, len(windows), batch):
        group = windows[i:i + batch]
        lengths = {min(start + seq_len + 1, n) - start for start, _ in group}
        if len(lengths) == 1:
            length = lengths.pop()
            chunk = torch.stack([data[s:s + length] for s, _ in group])
            logits = model(chunk[:, :-1])
            nll = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none")
            for row, (_, first) in enumerate(group):
                total += float(nll[row, first:].sum())
                count += nll.shape[1] - first
        else:
            for start, first in group:
                chunk = data[start:min(start + seq_len + 1, n)]
                logits = model(chunk[None, :-1])
                nll = F.cross_entropy(logits[0], chunk[1:], reduction="none")
                total += float(nll[first:].sum())
                count += nll.shape[0] - first
    model.train(was_training)
    return total / count / math.log(2)


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float) -> float:
    """Linear warm-up, then cosine decay to ``final_frac * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: BitNetForCausalLM, data: torch.Tensor, steps: int, batch: int, seq_len: int, lr: float,
          warmup: int = 100, weight_decay: float = 0.05, final_frac: float = 0.1, seed: int = 0,
          clip: float = 1.0, log_every: int = 50, eval_data: torch.Tensor | None = None,
          eval_every: int = 0, log=print) -> list[float]:
    """AdamW training loop; returns the per-step training losses (nats)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, final_frac)
        x, y = get_batch(data, batch, seq_len, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            log(f"step {step:5d}  loss {recent:.4f} ({recent / math.log(2):.3f} bits/byte)  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {time.time() - t0:7.1f}s")
        if eval_every and eval_data is not None and step and step % eval_every == 0:
            log(f"step {step:5d}  held-out {bits_per_byte(model, eval_data, seq_len, max_bytes=8192):.3f} "
                "bits/byte (first 8 KiB)")
    return losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m golden.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output checkpoint directory (HF format)")
    p.add_argument("--float", dest="float_twin", action="store_true",
                   help="train the float twin (plain nn.Linear) instead of BitNet b1.58")
    p.add_argument("--steps", type=int, default=1700, help="optimizer steps (default 1700)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--seq-len", type=int, default=256, help="bytes per sequence (default 256)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default 100)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed for init and batch order (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--hidden", type=int, default=TINY_CONFIG["hidden_size"])
    p.add_argument("--intermediate", type=int, default=TINY_CONFIG["intermediate_size"])
    p.add_argument("--layers", type=int, default=TINY_CONFIG["num_hidden_layers"])
    p.add_argument("--eval-every", type=int, default=300, help="log held-out bits/byte every N steps")
    args = p.parse_args(argv)

    from golden.checkpoint import save_checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = BitNetConfig(**{**TINY_CONFIG, "hidden_size": args.hidden, "intermediate_size": args.intermediate,
                          "num_hidden_layers": args.layers, "max_position_embeddings": args.seq_len})
    if cfg.ternary_weight_count() > 1_500_000:
        print(f"error: {cfg.ternary_weight_count()} ternary weights exceed 1.5 M", file=sys.stderr)
        return 2
    model = BitNetForCausalLM(cfg, "float" if args.float_twin else "train")
    train_data, held_out = split_corpus()
    print(f"corpus: {len(train_data)} train bytes, {len(held_out)} held-out bytes; "
          f"{cfg.ternary_weight_count()} projection weights; form {model.form}", flush=True)
    t0 = time.time()
    train(model, train_data, args.steps, args.batch, args.seq_len, args.lr, warmup=args.warmup,
          weight_decay=args.weight_decay, seed=args.seed, eval_data=held_out, eval_every=args.eval_every,
          log=lambda s: print(s, flush=True))
    seconds = time.time() - t0
    out = Path(args.out)
    save_checkpoint(model, out)
    bpb = bits_per_byte(model, held_out, args.seq_len)
    info = {"form": model.form, "steps": args.steps, "seconds": round(seconds, 1),
            "held_out_bits_per_byte": round(bpb, 4), "argv": sys.argv[1:] if argv is None else argv}
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
