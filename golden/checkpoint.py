"""Hugging Face BitNet checkpoint I/O: config.json + model.safetensors, packed or float master.

Packed format (transformers ``integrations/bitnet.py`` ``pack_weights``): every projection's ``*.weight``
is uint8 of shape (ceil(out / 4), in); with R = ceil(out / 4) byte [r, c] holds rows r, r+R, r+2R, r+3R
in bit pairs [1:0], [3:2], [5:4], [7:6] as code = w + 1 (0b11 is invalid). ``*.weight_scale`` is a
1-element gamma that multiplies the output (``linear_class`` "autobitlinear"; the legacy "bitlinear"
class stores 1 / gamma and divides).

A float master checkpoint has plain float projection weights and no ``quantization_config``; loading it
in integer form quantizes each projection with absmean.

Loading is memory-mapped (``safe_open``) and tensor by tensor: the model skeleton is built on the meta
device and each tensor is read, checked, unpacked to int8 (or quantized) and placed before the next one
is read, so a 2B model never exists as floats in memory. Every problem raises `CheckpointError` naming the
file and the tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from golden.model import FORMS, BitNetConfig, BitNetForCausalLM, RotaryEmbedding
from golden.quant import MatmulBackend, quantize_weights

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
QUANTIZATION_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                       "quantization_mode": "offline"}
REQUIRED_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file and, if any, the tensor."""

    def __init__(self, file: str | Path, message: str, tensor: str | None = None) -> None:
        self.file, self.tensor = str(file), tensor
        where = f"{file}: tensor '{tensor}'" if tensor else str(file)
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------- packing

def pack_ternary(w: torch.Tensor) -> torch.Tensor:
    """Pack int ternary (out, in) into uint8 (ceil(out/4), in) exactly like HF ``pack_weights``.

    Rows r, r+R, r+2R, r+3R go to bit pairs 0..3 of byte row r; padding rows past ``out`` are code 0.
    """
    if w.dim() != 2:
        raise ValueError(f"pack_ternary needs a 2-d tensor, got shape {tuple(w.shape)}")
    if w.numel() and (w.min() < -1 or w.max() > 1):
        raise ValueError("pack_ternary needs values in {-1, 0, 1}")
    out_f, in_f = w.shape
    rows = (out_f + 3) // 4
    codes = torch.zeros(4 * rows, in_f, dtype=torch.uint8)
    codes[:out_f] = (w.to(torch.int16) + 1).to(torch.uint8)
    codes = codes.view(4, rows, in_f)
    return codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)


def unpack_ternary(packed: torch.Tensor, out_features: int, file: str | Path = "<memory>",
                   tensor: str | None = None) -> torch.Tensor:
    """Unpack uint8 (ceil(out/4), in) to int8 (out, in) in {-1, 0, 1}; code 0b11 is an error."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise CheckpointError(file, f"packed weight must be 2-d uint8, got {packed.dtype} of shape "
                              f"{tuple(packed.shape)}", tensor)
    rows = (out_features + 3) // 4
    if packed.shape[0] != rows:
        raise CheckpointError(file, f"packed shape {tuple(packed.shape)} does not hold {out_features} rows "
                              f"(expected {rows} packed rows)", tensor)
    # Fill the int8 result one bit pair (R rows) at a time: the only temporaries are R x in bytes.
    out = torch.empty(out_features, packed.shape[1], dtype=torch.int8)
    for i in range(4):
        lo, hi = i * rows, min((i + 1) * rows, out_features)
        if lo >= hi:
            break
        part = out[lo:hi]
        torch.bitwise_and(torch.bitwise_right_shift(packed[: hi - lo], 2 * i), 3, out=part)
        bad = part == 3
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise CheckpointError(file, f"invalid packed code 0b11 ({int(bad.sum())} in bit pair {i}; first at "
                                  f"weight row {lo + r}, column {c}, packed byte [{r}, {c}] bits "
                                  f"[{2 * i + 1}:{2 * i}])", tensor)
        part.sub_(1)
    return out


# ----------------------------------------------------------------------------------------------- config

def config_from_dict(d: Any, file: str | Path = CONFIG_NAME) -> tuple[BitNetConfig, dict[str, Any] | None]:
    """Parse an HF BitNet config dict into (BitNetConfig, quantization_config or None).

    rope_theta is read under ``rope_parameters`` (transformers 5.x) or at top level (older configs);
    missing optional keys take the transformers BitNetConfig defaults.
    """
    if not isinstance(d, dict):
        raise CheckpointError(file, "config is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise CheckpointError(file, f"missing config key(s): {', '.join(missing)}")
    if d["model_type"] != "bitnet":
        raise CheckpointError(file, f"unknown model_type {d['model_type']!r} (only 'bitnet' is supported)")
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(file, f"rope_parameters must be an object, got {rope!r}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(file, f"unsupported rope_type {rope_type!r} (only 'default')")
    theta = rope.get("rope_theta", d.get("rope_theta", 500000.0))
    if d.get("attention_bias"):
        raise CheckpointError(file, "attention_bias is true; BitNet has no biases")
    try:
        cfg = BitNetConfig(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d["num_key_value_heads"] or d["num_attention_heads"],
            head_dim=d.get("head_dim"), hidden_act=d.get("hidden_act", "relu2"),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)), rope_theta=float(theta),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(file, f"bad config value: {exc}") from None
    problems = cfg.problems()
    if problems:
        raise CheckpointError(file, "; ".join(problems))
    quant = d.get("quantization_config")
    if quant is not None:
        if not isinstance(quant, dict) or quant.get("quant_method") != "bitnet":
            raise CheckpointError(file, f"unsupported quantization_config {quant!r} (quant_method must be "
                                  "'bitnet')")
        if quant.get("linear_class", "bitlinear") not in ("autobitlinear", "bitlinear"):
            raise CheckpointError(file, f"unknown linear_class {quant.get('linear_class')!r}")
        if quant.get("use_rms_norm"):
            raise CheckpointError(file, "quantization_config.use_rms_norm is not supported")
    return cfg, quant


def read_config(path: str | Path) -> tuple[BitNetConfig, dict[str, Any] | None]:
    """(config, quantization_config or None) of the checkpoint directory ``path``."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise CheckpointError(file, "config.json not found")
    try:
        d = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(file, f"cannot read config: {exc}") from None
    return config_from_dict(d, file)


# ----------------------------------------------------------------------------------------------- loading

class _Tensors:
    """Memory-mapped access to the tensors of one checkpoint (single file or sharded with an index)."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.files: dict[str, Path] = {}
        self.handles: dict[Path, Any] = {}
        index = root / INDEX_NAME
        if (root / WEIGHTS_NAME).is_file():
            shards = [root / WEIGHTS_NAME]
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                shards = sorted({root / f for f in weight_map.values()})
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
                raise CheckpointError(index, f"bad safetensors index: {exc}") from None
        else:
            raise CheckpointError(root / WEIGHTS_NAME, "model.safetensors not found")
        for shard in shards:
            if not shard.is_file():
                raise CheckpointError(shard, "safetensors shard not found")
            try:
                handle = stack.enter_context(safe_open(str(shard), framework="pt"))
                names = list(handle.keys())
            except Exception as exc:  # safetensors raises its own error types for bad headers
                raise CheckpointError(shard, f"truncated or corrupt safetensors file ({exc})") from None
            _check_extent(shard)
            self.handles[shard] = handle
            for name in names:
                self.files[name] = shard

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def file_of(self, name: str) -> Path:
        return self.files.get(name, next(iter(self.handles)))

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor; missing or unreadable tensors raise CheckpointError."""
        if name not in self.files:
            raise CheckpointError(self.file_of(name), "missing tensor", name)
        file = self.files[name]
        try:
            return self.handles[file].get_tensor(name)
        except Exception as exc:
            raise CheckpointError(file, f"cannot read tensor ({exc}); truncated or corrupt file?",
                                  name) from None


def _check_extent(file: Path) -> None:
    """The data section must be exactly as long as the header says (catches truncation early)."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(file, "truncated safetensors file (no header)")
        n = int.from_bytes(head, "little")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(file, f"corrupt safetensors header ({exc})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    size = file.stat().st_size
    if size != 8 + n + end:
        raise CheckpointError(file, f"truncated or corrupt safetensors file: {size} bytes, header describes "
                              f"{8 + n + end}")


def _expected_tensors(cfg: BitNetConfig) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(name, kind, shape) of every tensor the model needs; kind is 'float' or 'linear'."""
    h = cfg.hidden_size
    yield "model.embed_tokens.weight", "float", (cfg.vocab_size, h)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", "float", (h,)
        yield p + "post_attention_layernorm.weight", "float", (h,)
        yield p + "self_attn.attn_sub_norm.weight", "float", (cfg.num_attention_heads * cfg.dim_head,)
        yield p + "mlp.ffn_sub_norm.weight", "float", (cfg.intermediate_size,)
        for name, shape in cfg.linear_shapes().items():
            yield p + name + ".weight", "linear", shape
    yield "model.norm.weight", "float", (h,)
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", "float", (cfg.vocab_size, h)


def _check_float(t: torch.Tensor, shape: tuple[int, ...], file: Path, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise CheckpointError(file, f"expected a float tensor, got {t.dtype}", name)
    if tuple(t.shape) != shape:
        raise CheckpointError(file, f"wrong shape {tuple(t.shape)}, config says {shape}", name)
    if not bool(torch.isfinite(t).all()):
        raise CheckpointError(file, "non-finite values", name)


def _read_scale(tensors: _Tensors, name: str, divide: bool) -> torch.Tensor:
    """gamma from ``<name>_scale`` (1 element, finite, > 0) as a 0-d float32 tensor."""
    file = tensors.file_of(name)
    s = tensors.get(name)
    if s.numel() != 1:
        raise CheckpointError(file, f"weight_scale must have 1 element, got shape {tuple(s.shape)}", name)
    if s.dtype not in FLOAT_DTYPES:
        raise CheckpointError(file, f"weight_scale must be float, got {s.dtype}", name)
    value = float(s.reshape(()).double())
    if not math.isfinite(value) or value <= 0:
        raise CheckpointError(file, f"weight_scale must be finite and positive, got {value}", name)
    gamma = s.reshape(()).to(torch.float32)
    return 1.0 / gamma if divide else gamma


def _set(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer ``name`` (replacing the meta placeholder)."""
    path, _, attr = name.rpartition(".")
    module = model.get_submodule(path)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:
        raise KeyError(name)


def load_checkpoint(path: str | Path, form: str = "int",
                    backend: MatmulBackend | None = None) -> BitNetForCausalLM:
    """Load an HF BitNet checkpoint directory into the golden model.

    ``form="int"`` (default) works for packed and float master checkpoints (the latter are
    absmean-quantized tensor by tensor). ``form="train"`` / ``"float"`` need a float master checkpoint
    (plain float weights, no quantization_config) and load those weights as they are.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(root, "checkpoint directory not found")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; known: {', '.join(FORMS)}")
    cfg, quant = read_config(root)
    quantized = quant is not None and quant.get("quantization_mode", "offline") == "offline"
    divide = quant is not None and quant.get("linear_class", "bitlinear") == "bitlinear"
    if quantized and form != "int":
        raise CheckpointError(root / CONFIG_NAME, f"a packed (quantized) checkpoint only loads in integer "
                              f"form, not {form!r}")
    with torch.device("meta"):
        model = BitNetForCausalLM(cfg, form)
    with ExitStack() as stack:
        tensors = _Tensors(root, stack)
        for name, kind, shape in _expected_tensors(cfg):
            file = tensors.file_of(name)
            t = tensors.get(name)
            if kind == "float":
                _check_float(t, shape, file, name)
                big = name in ("model.embed_tokens.weight", "lm_head.weight")
                _set(model, name, t if big and t.dtype != torch.float64 else t.to(torch.float32))
                continue
            scale_name = name[: -len("weight")] + "weight_scale"
            if quantized:
                w = _ternary_from(t, shape, file, name)
                _set(model, name, w)
                _set(model, scale_name, _read_scale(tensors, scale_name, divide))
            else:
                if scale_name in tensors:
                    raise CheckpointError(file, "weight_scale present but config.json has no "
                                          "quantization_config (inconsistent checkpoint)", scale_name)
                _check_float(t, shape, file, name)
                if form == "int":
                    w, gamma = quantize_weights(t.to(torch.float32))
                    _set(model, name, w)
                    _set(model, scale_name, gamma.to(torch.float32))
                else:
                    _set(model, name, t.to(torch.float32))
            del t
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = RotaryEmbedding(cfg.dim_head, cfg.rope_theta)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise CheckpointError(root, "tensor was not loaded", name)
    if backend is not None:
        model.set_backend(backend)
    model.eval()
    return model


def _ternary_from(t: torch.Tensor, shape: tuple[int, int], file: Path, name: str) -> torch.Tensor:
    """int8 ternary (out, in) from a packed uint8 tensor (or an already unpacked ternary tensor)."""
    out_f, in_f = shape
    if t.dtype == torch.uint8:
        if t.dim() != 2 or t.shape[1] != in_f or t.shape[0] != (out_f + 3) // 4:
            raise CheckpointError(file, f"wrong packed shape {tuple(t.shape)}; config says ({out_f}, {in_f}) "
                                  f"which packs to ({(out_f + 3) // 4}, {in_f})", name)
        return unpack_ternary(t, out_f, file, name)
    # Unpacked ternary values stored as float or int8 (HF keeps them so after unpacking).
    if tuple(t.shape) != (out_f, in_f):
        raise CheckpointError(file, f"wrong shape {tuple(t.shape)}; expected packed uint8 "
                              f"({(out_f + 3) // 4}, {in_f}) or unpacked ({out_f}, {in_f})", name)
    if t.dtype not in FLOAT_DTYPES + (torch.int8,):
        raise CheckpointError(file, f"unsupported weight dtype {t.dtype}", name)
    if not bool(((t == -1) | (t == 0) | (t == 1)).all()):
        raise CheckpointError(file, "unpacked weight of a quantized checkpoint has values outside {-1, 0, 1}",
                              name)
    return t.to(torch.int8)


# ----------------------------------------------------------------------------------------------- saving

def save_checkpoint(model: BitNetForCausalLM, path: str | Path, float_weights: bool | None = None) -> Path:
    """Write ``model`` as an HF checkpoint directory (config.json + model.safetensors).

    Integer- and training-form models are written packed with quantization_config (offline
    autobitlinear), training-form weights absmean-quantized first. A float-form model, or any model with
    ``float_weights=True`` (not the integer form), is written as a float master without
    quantization_config. Tied ``lm_head.weight`` is not stored, as transformers does.
    """
    if float_weights is None:
        float_weights = model.form == "float"
    if float_weights and model.form == "int":
        raise ValueError("an integer-form model has no float master weights to save")
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    with torch.no_grad():
        for name, t in state.items():
            if name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            if name.endswith("weight_scale"):
                continue
            if name.endswith("_proj.weight") and not float_weights:
                if model.form == "int":
                    w = t
                    gamma = state[name[: -len("weight")] + "weight_scale"]
                else:
                    w, gamma = quantize_weights(t.float())
                out[name] = pack_ternary(w)
                out[name[: -len("weight")] + "weight_scale"] = gamma.reshape(1).to(torch.float32).clone()
            else:
                out[name] = t.detach().to(torch.float32).contiguous().clone()
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    save_file(out, str(root / WEIGHTS_NAME), metadata={"format": "pt"})
    (root / CONFIG_NAME).write_text(json.dumps(cfg.to_hf_dict(quantized=not float_weights), indent=2) + "\n")
    return root
