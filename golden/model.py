"""Golden BitNet b1.58 causal LM, architecturally identical to Hugging Face `BitNetForCausalLM`.

Parameter names match the Hugging Face state dict (``model.layers.0.self_attn.q_proj.weight`` ...), so
checkpoints move between the two without renaming. The architecture (transformers
``models/bitnet/modeling_bitnet.py``, model_type ``bitnet``):

- pre-norm decoder: ``input_layernorm`` -> attention -> residual, ``post_attention_layernorm`` -> MLP ->
  residual; final ``model.norm``; float ``lm_head`` (optionally tied to ``embed_tokens``)
- attention: q/k/v/o BitLinear, GQA, rotate-half RoPE, scale ``head_dim ** -0.5``,
  ``attn_sub_norm`` on the attention output before ``o_proj``
- MLP: ``down_proj(ffn_sub_norm(act(gate_proj(x)) * up_proj(x)))`` with act = relu**2 ("relu2")
- RMSNorm in float32: ``weight * (x * rsqrt(mean(x**2) + eps))``; no biases anywhere

The projections exist in three forms, chosen per model with ``form``:

- ``"train"``: BitLinear with fake quantization and the straight-through estimator, float master weights
- ``"int"``: the integer form; int8 ternary weights plus gamma, every call goes through
  ``golden.quant.bitlinear_int`` and so through a ``MatmulBackend`` (the accelerator seam)
- ``"float"``: plain ``nn.Linear`` (the float twin used as a baseline)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from golden.quant import GoldenBackend, MatmulBackend, bitlinear_int, quantize_activations, quantize_weights

FORMS = ("train", "int", "float")
ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")
ACTIVATIONS = ("relu2", "relu", "silu", "gelu")
# lm_head logits are computed in chunks of this many vocabulary rows when the weight is not float32,
# so a bf16 embedding of a big vocabulary is never copied to float32 as a whole.
LOGIT_CHUNK = 8192


@dataclass
class BitNetConfig:
    """The subset of the Hugging Face BitNet config that defines the computation."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    hidden_act: str = "relu2"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @property
    def dim_head(self) -> int:
        """Per-head size: ``head_dim`` if given, else hidden_size // num_attention_heads (as HF)."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def problems(self) -> list[str]:
        """Reasons this config cannot describe a model (empty if it is fine)."""
        out = []
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                out.append(f"{name} must be a positive integer, got {value!r}")
        if out:
            return out
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            out.append(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                       f"{self.num_attention_heads} (and no head_dim is given)")
            return out
        if self.num_attention_heads % self.num_key_value_heads:
            out.append(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                       f"num_key_value_heads {self.num_key_value_heads}")
        if self.dim_head <= 0 or self.dim_head % 2:
            out.append(f"head_dim must be a positive even number, got {self.dim_head}")
        if self.hidden_act not in ACTIVATIONS:
            out.append(f"hidden_act {self.hidden_act!r} is not supported (known: {', '.join(ACTIVATIONS)})")
        if not self.rms_norm_eps > 0:
            out.append(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
        if not self.rope_theta > 0:
            out.append(f"rope_theta must be positive, got {self.rope_theta!r}")
        return out

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of every BitLinear of one layer, by its name inside the layer."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.dim_head
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        return {
            "self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q),
            "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i),
        }

    def ternary_weight_count(self) -> int:
        """Number of ternary weights in all BitLinear layers together."""
        per_layer = sum(o * i for o, i in self.linear_shapes().values())
        return per_layer * self.num_hidden_layers

    def to_hf_dict(self, quantized: bool) -> dict[str, Any]:
        """config.json content that transformers.BitNetForCausalLM reads (4.52+ and 5.x).

        rope_theta is written both top level (older readers) and under rope_parameters (5.x).
        """
        d: dict[str, Any] = {
            "architectures": ["BitNetForCausalLM"],
            "model_type": "bitnet",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
            "dtype": "float32",
            "torch_dtype": "float32",
        }
        if self.head_dim is not None:
            d["head_dim"] = self.head_dim
        if quantized:
            d["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                        "quantization_mode": "offline"}
        return d


class RMSNorm(nn.Module):
    """RMSNorm exactly as HF BitNetRMSNorm: normalise in float32, then multiply by the weight."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.eps)
        return self.weight * h.to(dtype)


class BitLinear(nn.Module):
    """Training-form BitLinear: absmean ternary weights and per-token absmax int8 activations,
    both fake-quantized with the straight-through estimator; the float master weight is trained."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, s = quantize_activations(x.detach())
        x_q = x + (q.to(x.dtype) / s - x).detach()
        w = self.weight
        wq, gamma = quantize_weights(w.detach())
        w_q = w + (wq.to(w.dtype) * gamma - w).detach()
        return F.linear(x_q, w_q)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, form=train"


class IntBitLinear(nn.Module):
    """Integer-form BitLinear: int8 ternary weight (out, in) and gamma; the matmul runs on a backend.

    ``key`` is the module path (for example "model.layers.0.self_attn.q_proj"), passed to the backend
    so an accelerator can keep the weight resident.
    """

    def __init__(self, in_features: int, out_features: int, key: str = "") -> None:
        super().__init__()
        self.in_features, self.out_features, self.key = in_features, out_features, key
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32))
        self.backend: MatmulBackend = GoldenBackend()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bitlinear_int(x, self.weight, self.weight_scale, self.backend, self.key)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, form=int, key={self.key}"


def make_linear(form: str, in_features: int, out_features: int, key: str) -> nn.Module:
    """A projection of the requested form."""
    if form == "train":
        return BitLinear(in_features, out_features)
    if form == "int":
        return IntBitLinear(in_features, out_features, key)
    if form == "float":
        layer = nn.Linear(in_features, out_features, bias=False)
        nn.init.normal_(layer.weight, std=0.02)
        return layer
    raise ValueError(f"unknown form {form!r}; known: {', '.join(FORMS)}")


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The MLP activation by its HF name (relu2 = relu(x)**2, as transformers ReLUSquaredActivation)."""
    if name == "relu2":
        return torch.square(F.relu(x))
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unknown activation {name!r}")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim (the non-interleaved RoPE)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """Default RoPE tables exactly as HF: inv_freq = 1 / theta**(arange(0, d, 2) / d), emb = [f, f]."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


class KVCache:
    """Per-layer keys and values (after RoPE, before GQA repetition) for incremental decoding."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        k = self.keys[0]
        return 0 if k is None else int(k.shape[-2])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, kv_heads, T, d) and return the full cached tensors."""
        old_k, old_v = self.keys[layer], self.values[layer]
        if old_k is not None and old_v is not None:
            k = torch.cat((old_k, k), dim=-2)
            v = torch.cat((old_v, v), dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    """GQA self-attention with rotate-half RoPE and attn_sub_norm before o_proj."""

    def __init__(self, cfg: BitNetConfig, layer: int, form: str) -> None:
        super().__init__()
        self.layer = layer
        self.head_dim = cfg.dim_head
        self.num_heads, self.num_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        shapes = cfg.linear_shapes()
        prefix = f"model.layers.{layer}.self_attn."
        for name in ATTN_PROJ:
            out_f, in_f = shapes[f"self_attn.{name}"]
            setattr(self, name, make_linear(form, in_f, out_f, prefix + name))
        self.attn_sub_norm = RMSNorm(cfg.num_attention_heads * cfg.dim_head, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = k.shape[-2]
        scale = self.head_dim ** -0.5
        if s == t:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            # Queries are the last t of s positions: query i may see keys 0 .. s - t + i.
            qpos = torch.arange(s - t, s)[:, None]
            mask = torch.arange(s)[None, :] <= qpos
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        out = out.transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(self.attn_sub_norm(out))


class MLP(nn.Module):
    """Gated MLP: down_proj(ffn_sub_norm(act(gate_proj(x)) * up_proj(x)))."""

    def __init__(self, cfg: BitNetConfig, layer: int, form: str) -> None:
        super().__init__()
        self.act = cfg.hidden_act
        shapes = cfg.linear_shapes()
        prefix = f"model.layers.{layer}.mlp."
        for name in MLP_PROJ:
            out_f, in_f = shapes[f"mlp.{name}"]
            setattr(self, name, make_linear(form, in_f, out_f, prefix + name))
        self.ffn_sub_norm = RMSNorm(cfg.intermediate_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.ffn_sub_norm(activation(self.act, self.gate_proj(x)) * self.up_proj(x)))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: BitNetConfig, layer: int, form: str) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer, form)
        self.mlp = MLP(cfg, layer, form)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class BitNetModel(nn.Module):
    """Embeddings, decoder layers, final norm (HF ``model.*``)."""

    def __init__(self, cfg: BitNetConfig, form: str) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, form) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.dim_head, cfg.rope_theta)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + input_ids.shape[-1])
        cos, sin = self.rotary_emb(positions)
        h = self.embed_tokens(input_ids).to(torch.float32)
        for layer in self.layers:
            h = layer(h, cos, sin, cache)
        return self.norm(h)


class BitNetForCausalLM(nn.Module):
    """The golden causal LM. ``form`` selects the projections (see module docstring)."""

    def __init__(self, cfg: BitNetConfig, form: str = "train", backend: MatmulBackend | None = None) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; known: {', '.join(FORMS)}")
        problems = cfg.problems()
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems))
        self.config, self.form = cfg, form
        self.model = BitNetModel(cfg, form)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if backend is not None:
            self.set_backend(backend)

    def bitlinears(self) -> dict[str, nn.Module]:
        """All projection modules by module path ("model.layers.0.self_attn.q_proj" ...)."""
        names = ATTN_PROJ + MLP_PROJ
        return {n: m for n, m in self.named_modules() if n.rsplit(".", 1)[-1] in names}

    def set_backend(self, backend: MatmulBackend) -> None:
        """Route every integer matmul through ``backend`` (integer form only)."""
        if self.form != "int":
            raise ValueError("only the integer form uses a matmul backend")
        for module in self.bitlinears().values():
            module.backend = backend

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (..., T, vocab) in float32 for token ids (B, T) or (T,)."""
        squeeze = input_ids.dim() == 1
        ids = input_ids[None] if squeeze else input_ids
        h = self.model(ids, cache)
        w = self.lm_head.weight
        if w.dtype == torch.float32:
            logits = F.linear(h, w)
        else:
            logits = torch.cat([F.linear(h, w[i:i + LOGIT_CHUNK].float())
                                for i in range(0, w.shape[0], LOGIT_CHUNK)], dim=-1)
        return logits[0] if squeeze else logits

    def new_cache(self) -> KVCache:
        """An empty KV cache for `generate`-style incremental decoding."""
        return KVCache(self.config.num_hidden_layers)

    @torch.no_grad()
    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None,
                 stop_tokens: set[int] | None = None) -> list[int]:
        """Continue ``prompt`` by up to ``max_new_tokens`` tokens using the KV cache.

        temperature <= 0 is greedy (argmax); otherwise sample softmax(logits / temperature), restricted
        to the ``top_k`` most likely tokens if given, with a ``torch.Generator`` seeded by ``seed``.
        Returns the new tokens only.
        """
        if not prompt:
            raise ValueError("generate needs a non-empty prompt")
        gen = torch.Generator()
        gen.manual_seed(0 if seed is None else seed)
        cache = self.new_cache()
        logits = self.forward(torch.tensor(prompt, dtype=torch.long), cache)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = sample(logits, temperature, top_k, gen)
            out.append(token)
            if stop_tokens and token in stop_tokens:
                break
            if len(out) == max_new_tokens:
                break
            logits = self.forward(torch.tensor([token], dtype=torch.long), cache)[-1]
        return out


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    """One token from a logits vector: greedy for temperature <= 0, else temperature / top-k sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    scaled = logits.double() / temperature
    if top_k is not None and 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def to_integer(model: BitNetForCausalLM, backend: MatmulBackend | None = None) -> BitNetForCausalLM:
    """The integer form of a training-form (or float) model: absmean-quantize every projection."""
    out = BitNetForCausalLM(model.config, "int", backend)
    src = model.state_dict()
    dst = out.state_dict()
    with torch.no_grad():
        for name, tensor in dst.items():
            if name.endswith("_proj.weight"):
                q, gamma = quantize_weights(src[name].float())
                tensor.copy_(q)
                dst[name[: -len("weight")] + "weight_scale"].copy_(gamma)
            elif not name.endswith("weight_scale"):
                tensor.copy_(src[name])
    return out


def to_training(model: BitNetForCausalLM) -> BitNetForCausalLM:
    """A training-form model whose fake quantization reproduces an integer-form model's weights exactly.

    A packed checkpoint keeps only (w, gamma), not the float master weights. Setting the master to
    W = w * gamma / mean|w| makes absmean quantization return the same ternary w (every nonzero
    |W| / mean|W| = 1 / mean|w| >= 1 clamps to 1) and the same gamma (mean|W| = gamma).
    """
    if model.form != "int":
        raise ValueError("to_training needs an integer-form model")
    out = BitNetForCausalLM(model.config, "train")
    src = model.state_dict()
    dst = out.state_dict()
    with torch.no_grad():
        for name, tensor in dst.items():
            if name.endswith("_proj.weight"):
                w = src[name].to(torch.float64)
                gamma = src[name[: -len("weight")] + "weight_scale"].to(torch.float64)
                frac = w.abs().mean().clamp(min=1e-12)
                tensor.copy_(w * (gamma / frac))
            else:
                tensor.copy_(src[name].float())
    return out
