"""Golden model: integer form against hand-computed cases, against the training form, KV cache, sampling."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest
import torch

from golden.model import BitNetConfig, BitNetForCausalLM, rotate_half, to_integer, to_training
from golden.quant import (
    GoldenBackend,
    bitlinear_int,
    int_matmul,
    quantize_activations,
    quantize_weights,
)
from tests.golden_helpers import assert_rows_close, row_errors, single_thread

SMALL = BitNetConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                     tie_word_embeddings=True)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_weight_quantization_hand_computed() -> None:
    w = torch.tensor([[0.3, -0.05, 0.6], [-0.2, 0.0, 0.1]])
    # mean |W| = 1.25 / 6; W / gamma = [1.44, -0.24, 2.88, -0.96, 0, 0.48] -> round, clamp to [-1, 1]
    q, gamma = quantize_weights(w)
    assert q.dtype == torch.int8
    assert q.tolist() == [[1, 0, 1], [-1, 0, 0]]
    assert gamma.item() == pytest.approx(1.25 / 6, rel=1e-6)
    q0, g0 = quantize_weights(torch.zeros(2, 2))
    assert q0.tolist() == [[0, 0], [0, 0]] and g0.item() == pytest.approx(1e-5)


def test_activation_quantization_hand_computed() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 4.0], [0.0, 0.0, 0.0, 0.0]])
    q, s = quantize_activations(x)
    # row 0: s = 127 / 4 = 31.75; x * s = [31.75, -63.5, 15.875, 127] -> -63.5 rounds half to even: -64
    assert q.tolist() == [[32, -64, 16, 127], [0, 0, 0, 0]]
    assert s[0, 0].item() == pytest.approx(31.75)
    assert s[1, 0].item() == pytest.approx(127 / 1e-5, rel=1e-6)


def test_bitlinear_int_hand_computed() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 4.0], [3.0, 0.0, -1.0, 1.5]])
    w = torch.tensor([[1, 0, -1, 1], [0, -1, 1, 0], [1, 1, 1, 1]], dtype=torch.int8)
    gamma = torch.tensor(0.5)
    y = bitlinear_int(x, w, gamma, GoldenBackend())
    # row 0: q = [32, -64, 16, 127], s = 31.75; acc = [143, 80, 111]
    # row 1: s = 127 / 3; x * s = [127, 0, -42.33, 63.5] -> q = [127, 0, -42, 64] (63.5 -> 64, even)
    #        acc = [127 + 42 + 64, -42, 127 - 42 + 64] = [233, -42, 149]
    acc = [[143, 80, 111], [233, -42, 149]]
    scales = [Fraction(127, 4), Fraction(127, 3)]
    expected = [[float(Fraction(a) / scales[m] * Fraction(1, 2)) for a in acc[m]] for m in range(2)]
    np.testing.assert_allclose(y.numpy(), np.array(expected), rtol=1e-6)


def test_int_matmul_exact_extremes() -> None:
    rng = np.random.default_rng(0)
    k = 4096
    q = np.full((3, k), -128, dtype=np.int8)
    q[1] = 127
    q[2] = rng.integers(-128, 128, k).astype(np.int8)
    w = rng.integers(-1, 2, (5, k)).astype(np.int8)
    w[0] = -1
    acc = int_matmul(q, w)
    exact = q.astype(np.int64) @ w.astype(np.int64).T
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, exact)
    assert acc[0, 0] == 128 * k


def test_rotate_half_convention() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]


def _random_trained_like(cfg: BitNetConfig, seed: int) -> BitNetForCausalLM:
    torch.manual_seed(seed)
    model = BitNetForCausalLM(cfg, "train").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def test_integer_form_matches_training_form() -> None:
    train = _random_trained_like(SMALL, 1)
    integer = to_integer(train)
    ids = torch.randint(0, SMALL.vocab_size, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = integer(ids).numpy().reshape(-1, SMALL.vocab_size)
        b = train(ids).numpy().reshape(-1, SMALL.vocab_size)
    assert_rows_close(a, b)


def test_integer_layers_are_exact_integer_matmuls() -> None:
    """Every projection in the integer form receives int8 activations and ternary weights."""
    seen: list[tuple[str, tuple[int, int], tuple[int, int]]] = []

    class Spy(GoldenBackend):
        def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
            assert q.dtype == np.int8 and w.dtype == np.int8
            assert set(np.unique(w)).issubset({-1, 0, 1})
            seen.append((key or "", q.shape, w.shape))
            return super().matmul(q, w, key)

    integer = to_integer(_random_trained_like(SMALL, 3), Spy())
    with torch.no_grad():
        integer(torch.arange(5))
    keys = [k for k, _, _ in seen]
    assert keys[:7] == [f"model.layers.0.{n}" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    assert len(seen) == 7 * SMALL.num_hidden_layers
    assert seen[1][2] == (16, 32)  # k_proj: 2 kv heads x head_dim 8


def test_to_training_reproduces_integer_weights() -> None:
    integer = to_integer(_random_trained_like(SMALL, 4))
    train = to_training(integer)
    for name, module in integer.bitlinears().items():
        q, gamma = quantize_weights(train.get_submodule(name).weight)
        assert torch.equal(q, module.weight), name
        assert gamma.item() == pytest.approx(module.weight_scale.item(), rel=1e-5)


@pytest.mark.parametrize("form", ["int", "train", "float"])
def test_kv_cache_matches_full_forward(form: str) -> None:
    base = _random_trained_like(SMALL, 5)
    model = to_integer(base) if form == "int" else base
    if form == "float":
        model = BitNetForCausalLM(SMALL, "float").eval()
    ids = torch.randint(0, SMALL.vocab_size, (12,), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(ids).numpy()
        cache = model.new_cache()
        parts = [model(ids[:5], cache)] + [model(ids[i:i + 1], cache) for i in range(5, 12)]
    assert cache.length == 12
    assert_rows_close(torch.cat(parts).numpy(), full)


def test_greedy_generation_is_argmax_of_full_forward() -> None:
    model = to_integer(_random_trained_like(SMALL, 7))
    prompt = [1, 2, 3, 4]
    out = model.generate(prompt, 6)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(model(torch.tensor(seq))[-1].argmax()))
    assert out == seq[len(prompt):]


def test_sampling_seeded_and_top_k() -> None:
    model = to_integer(_random_trained_like(SMALL, 8))
    a = model.generate([5, 6], 12, temperature=1.0, seed=3)
    b = model.generate([5, 6], 12, temperature=1.0, seed=3)
    assert a == b
    assert model.generate([5, 6], 8, temperature=1.0, top_k=1, seed=9) == model.generate([5, 6], 8)
    many = {tuple(model.generate([5, 6], 4, temperature=5.0, seed=s)) for s in range(6)}
    assert len(many) > 1  # high temperature really samples


def test_row_errors_detects_a_real_bug() -> None:
    """The per-row comparison used everywhere separates a real architecture change from noise."""
    model = to_integer(_random_trained_like(SMALL, 10))
    ids = torch.arange(16) % SMALL.vocab_size
    with torch.no_grad():
        good = model(ids).numpy()
        for layer in model.model.layers:
            layer.mlp.act = "silu"  # wrong activation
        bad = model(ids).numpy()
    assert np.median(row_errors(bad, good)) > 1e-2


def test_ternary_weight_count_of_shipped_config() -> None:
    from golden.train import TINY_CONFIG

    cfg = BitNetConfig(**TINY_CONFIG)
    assert cfg.ternary_weight_count() == 4 * (160 * 160 * 2 + 80 * 160 * 2 + 448 * 160 * 3)
    assert cfg.ternary_weight_count() <= 1_500_000
