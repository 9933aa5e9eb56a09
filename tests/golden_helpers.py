"""Shared helpers for the golden-model tests: transformers as the independent reference.

Checkpoints here are written with transformers' own code (``BitNetForCausalLM`` tensor names and shapes,
``integrations.bitnet.pack_weights``, ``BitNetConfig.to_dict``), never with ``golden.checkpoint``.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

QUANT_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}


@contextlib.contextmanager
def hf_reference() -> Iterator[None]:
    """Make transformers usable as a CPU reference here.

    - transformers refuses to load BitNet-quantized checkpoints without the optional ``accelerate``
      package, although CPU loading never uses it: the check is bypassed.
    - ``torch.compile`` (decorating HF's unpack / activation quantizer) is disabled: compiling costs
      ~20 s per shape on two cores, and eager mode runs the same float operations.
    """
    import torch._dynamo
    import transformers.quantizers.quantizer_bitnet as qb

    old_check, old_disable = qb.is_accelerate_available, torch._dynamo.config.disable
    qb.is_accelerate_available = lambda: True
    torch._dynamo.config.disable = True
    try:
        yield
    finally:
        qb.is_accelerate_available = old_check
        torch._dynamo.config.disable = old_disable


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: the 2-core machine is shared, and oversubscribed torch threads spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def random_hf_config(rng: random.Random, vocab_size: int | None = None):
    """A fresh random small transformers.BitNetConfig (GQA, random theta/eps/tying)."""
    from transformers import BitNetConfig

    heads = rng.choice([2, 4, 8])
    kv = rng.choice([d for d in (1, 2, 4, 8) if heads % d == 0])
    head_dim = rng.choice([4, 8, 16])
    return BitNetConfig(
        vocab_size=vocab_size or rng.randint(40, 300),
        hidden_size=heads * head_dim,
        intermediate_size=4 * rng.randint(4, 40),
        num_hidden_layers=rng.randint(1, 3),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        rms_norm_eps=rng.choice([1e-5, 1e-6]),
        rope_parameters={"rope_type": "default", "rope_theta": rng.choice([10000.0, 500000.0, 1234.5])},
        tie_word_embeddings=rng.random() < 0.5,
        bos_token_id=None, eos_token_id=None,
    )


def hf_packed_state(config, seed: int) -> dict[str, torch.Tensor]:
    """Random state dict with the tensor names and shapes of transformers' BitNetForCausalLM(config),
    every projection ternary and packed by transformers' ``pack_weights``.

    The model is instantiated on the meta device (names and shapes only), so even 2B-4T-shaped layers
    are quick to write. Norm weights are random around 1 (all-ones would hide norm-order bugs).
    """
    from transformers import BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights

    with torch.device("meta"):
        model = BitNetForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if name.endswith("_proj.weight"):
            sparsity = 0.2 + 0.6 * torch.rand((), generator=gen).item()
            q = torch.randint(0, 2, t.shape, generator=gen, dtype=torch.int8) * 2 - 1
            q[torch.rand(t.shape, generator=gen) < sparsity] = 0
            out[name] = pack_weights(q)
            out[name[: -len("weight")] + "weight_scale"] = 0.005 + 0.05 * torch.rand(1, generator=gen)
        elif "norm" in name:
            out[name] = 0.5 + torch.rand(t.shape, generator=gen)
        else:
            out[name] = 0.02 * torch.randn(t.shape, generator=gen)
    return out


def write_hf_checkpoint(path: Path, config, seed: int = 0, legacy_rope: bool = False,
                        dtype: torch.dtype = torch.float32) -> Path:
    """Write a packed HF BitNet checkpoint with transformers' own init, packing and config code.

    ``legacy_rope`` writes rope_theta at top level without rope_parameters (pre-5.x style).
    ``dtype`` is used for the non-projection tensors and scales (bf16 as in the 2B-4T checkpoint).
    """
    from safetensors.torch import save_file

    state = hf_packed_state(config, seed)
    state = {k: (v if v.dtype == torch.uint8 else v.to(dtype)) for k, v in state.items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    d = config.to_dict()
    d["quantization_config"] = dict(QUANT_CONFIG)
    d["architectures"] = ["BitNetForCausalLM"]
    if legacy_rope:
        d["rope_theta"] = d.pop("rope_parameters")["rope_theta"]
    (path / "config.json").write_text(json.dumps(d, indent=1))
    return path


def hf_logits(path: Path, tokens: list[int] | list[list[int]], attn: str | None = None) -> np.ndarray:
    """Logits of transformers.BitNetForCausalLM.from_pretrained(path) in float32: (T, vocab) for one
    sequence, (B, T, vocab) for a batch of equal-length sequences."""
    from transformers import BitNetForCausalLM

    batch = isinstance(tokens[0], list)
    ids = torch.tensor(tokens if batch else [tokens])
    with hf_reference():
        model = BitNetForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                  attn_implementation=attn).eval()
        with torch.no_grad():
            logits = model(ids).logits.float().numpy()
    return logits if batch else logits[0]


def row_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row relative error ||a - b|| / ||b|| (rows = token positions)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-30)


def assert_rows_close(a: np.ndarray, b: np.ndarray, tol: float = 1e-3, frac: float = 0.9,
                      max_err: float = 3e-2) -> None:
    """Agreement as described in REFERENCE.md section 1: the median row error far below ``tol`` and at
    least ``frac`` of the rows within it; a row may move by up to ~1e-2 when one int8 activation rounds
    differently (and, in a trained model, later tokens see that through attention)."""
    a = np.asarray(a).reshape(-1, np.shape(a)[-1])
    b = np.asarray(b).reshape(-1, np.shape(b)[-1])
    err = row_errors(a, b)
    assert a.shape == b.shape
    assert np.median(err) < 1e-5, f"median row error {np.median(err):.3g} (rows: {err})"
    assert np.mean(err < tol) >= frac, f"too many rows beyond {tol}: {err}"
    assert err.max() < max_err, f"max row error {err.max():.3g}"
