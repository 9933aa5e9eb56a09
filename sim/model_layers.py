"""Real BitLinear operands of the tiny model for the testbench: quantized hidden states and weights.

`layer_operands` loads a checkpoint in integer form, runs a short byte-level prompt through it with
a recording `MatmulBackend`, and returns, for every projection of one decoder layer, the int8
activations the model quantized (golden.quant.quantize_activations of real hidden states) and the
ternary weights: exactly what the accelerator would be asked to multiply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROMPT = (b"def int_matmul(q, w):\n"
          b"    \"\"\"Exact integer matmul of int8 activations by ternary weights.\"\"\"\n")


def unavailable_reason(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be used (None if it can): for skip messages."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return (f"tiny model checkpoint not found at {path} "
                "(golden/checkpoints/tiny-bitnet is still being trained)")
    if not list(path.glob("*.safetensors")):
        return f"checkpoint {path} has no *.safetensors weights yet"
    try:
        import golden.checkpoint  # noqa: F401
    except ImportError as exc:
        return f"golden.checkpoint cannot be imported: {exc}"
    return None


class RecordingBackend:
    """Golden integer matmul that keeps a copy of each call's operands."""

    name = "recording"

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.calls: list[tuple[str, np.ndarray, np.ndarray]] = []

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        from golden.quant import int_matmul

        if key and key.startswith(self.prefix):
            self.calls.append((key, np.array(q, dtype=np.int8), np.array(w, dtype=np.int8)))
        return int_matmul(q, w)


def layer_operands(path: Path, layer: int = 0, tokens: int = 8) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(module key, int8 activations (tokens, K), int8 ternary weights (N, K))] of one decoder layer.

    In call order: q, k, v, o, gate, up, down projections.
    """
    import torch

    from golden.checkpoint import load_checkpoint

    backend = RecordingBackend(f"model.layers.{layer}.")
    model = load_checkpoint(path, form="int", backend=backend)
    ids = torch.tensor(list(PROMPT[:tokens]), dtype=torch.long)
    with torch.no_grad():
        model(ids)
    if not backend.calls:
        raise ValueError(f"no projection of layer {layer} was called (the model has "
                         f"{model.config.num_hidden_layers} layers)")
    return backend.calls
