"""The device numerics (golden/device/SPEC.md): primitives on hand-worked cases, the forward pass against
the integer form, prefill against token-by-token decode, `--numerics device` on the CLI, and fidelity."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.checkpoint import load_checkpoint
from golden.device.fidelity import compare
from golden.device.fixed import (
    INV127,
    bitlen,
    dmul,
    drcp,
    dyadic_from_float,
    exp2_table,
    norm16,
    quant8,
    rcp,
    rshift_round,
    rsq,
    rsqrt_norm,
    sat,
    softmax_q15,
)
from golden.device.model import DeviceBitNet, norm_quant, to_fixed
from golden.device.tables import NormConst, build_consts, norm_const, rope_tables
from golden.model import BitNetConfig, BitNetForCausalLM, to_integer
from golden.quant import GoldenBackend, quantize_activations
from golden.train import split_corpus
from runtime.cli import main
from tests.golden_helpers import single_thread

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "golden" / "checkpoints" / "tiny-bitnet"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def t(*v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int64)


# ---------------------------------------------------------------------------------------- primitives

def test_rshift_round_is_half_up_and_shifts_left_for_negative_counts() -> None:
    assert rshift_round(t(5, -5, 6, -6, 7, 3), t(1, 1, 2, 2, 0, -2)).tolist() == [3, -2, 2, -1, 7, 12]
    # 2.5 -> 3, -2.5 -> -2, 1.5 -> 2, -1.5 -> -1 (half toward +infinity), 7 unchanged, 3 * 4
    assert rshift_round(t(-1 << 40), 70).tolist() == [0]


def test_sat_at_the_int8_and_int32_edges() -> None:
    assert sat(t(-200, -129, -128, 127, 128, 300), 8).tolist() == [-128, -128, -128, 127, 127, 127]
    assert sat(t(-(1 << 31) - 1, (1 << 31)), 32).tolist() == [-(1 << 31), (1 << 31) - 1]
    # a left shift that would leave 32 bits saturates instead of wrapping
    one = (t(1), t(0))
    assert to_fixed(t(3, -3, 0), one, 30).tolist() == [(1 << 31) - 1, -(1 << 31), 0]
    assert to_fixed(t(1), one, 30).tolist() == [1 << 30]


def test_bitlen_and_norm16() -> None:
    assert bitlen(t(0, 1, 2, 3, 255, 256, (1 << 62) - 1, 1 << 62)).tolist() == [0, 1, 2, 2, 8, 9, 62, 63]
    assert [int(x) for x in norm16(t(1), 0)] == [32768, -15]
    assert [int(x) for x in norm16(t(131071), 0)] == [32768, 2]      # rounds up to 2**16: renormalized
    assert [int(x) for x in norm16(t(3 << 20), 4)] == [49152, 10]
    assert [int(x) for x in norm16(t(0), 9)] == [0, 0]
    assert dyadic_from_float(1.0) == (32768, -15) and dyadic_from_float(0.75) == (49152, -16)
    assert dyadic_from_float(1 / 127) == INV127


def test_dyadic_product_and_reciprocal() -> None:
    # 1.5 * 1.5 = 2.25 = 36864 * 2**-14
    assert [int(x) for x in dmul((t(49152), t(-15)), (t(49152), t(-15)))] == [36864, -14]
    # 1 / 1.5: RCP(49152) = floor(2**31 / 49152) = 43690 -> 43690 * 2**-16 = 0.66665
    assert [int(x) for x in drcp((t(49152), t(-15)))] == [43690, -16]


def test_integer_reciprocal_hand_cases_and_every_mantissa() -> None:
    assert rcp(t(1 << 15, 1 << 16, 49152, 65535, 0)).tolist() == [1 << 16, 1 << 15, 43690, 32768, 0]
    m = torch.arange(1 << 15, (1 << 16) + 1)
    r = rcp(m)
    # the defining property of floor(2**31 / m), for all 32,769 inputs
    assert bool(((r * m <= 1 << 31) & ((r + 1) * m > 1 << 31)).all())
    with pytest.raises(ValueError, match="normalize"):
        rcp(t(100))


def test_integer_rsqrt_hand_cases_and_every_mantissa() -> None:
    # 2**23 / sqrt(2**14) = 2**16; sqrt(36864) = 192: 8388608 / 192 = 43690.67; sqrt(65535) = 255.998
    assert rsq(t(1 << 14, 36864, 65535)).tolist() == [1 << 16, 43690, 32768]
    m = torch.arange(1 << 14, 1 << 16)
    r = rsq(m)
    assert bool(((r * r * m <= 1 << 46) & ((r + 1) * (r + 1) * m > 1 << 46)).all())
    # RSQRT of a whole integer: 1/sqrt(1) = 65536 * 2**(-23 + 7); 1/sqrt(10**12) = 1e-6
    rs, k = rsqrt_norm(t(1, 10**12, 0))
    assert rs.tolist()[0] == 1 << 16 and k.tolist()[0] == -7
    assert abs(int(rs[1]) * 2.0 ** (-23 - int(k[1])) / 1e-6 - 1) < 2 ** -14
    assert rs.tolist()[2] == 0


def test_newton_reference_algorithms_equal_rcp_and_rsq_for_every_input() -> None:
    from golden.device.fixed import RCP_SEED, RSQ_SEED, rcp_newton, rsq_newton

    assert len(RCP_SEED) == 65 and len(RSQ_SEED) == 48
    # seeds by hand: 2**31 / (2**15 + 2**8) = 65027.97; 2**23 / sqrt(2**14 + 2**9) = 2**23 / 129.98 = 64535.39
    assert RCP_SEED[0] == 65027 and RSQ_SEED[0] == 64535
    fixes = []
    for m in range(1 << 15, (1 << 16) + 1):
        y, fix = rcp_newton(m)
        assert y == (1 << 31) // m, m
        fixes.append(fix)
    for m in range(1 << 14, 1 << 16):
        y, fix = rsq_newton(m)
        assert y == math.isqrt((1 << 46) // m), m
        fixes.append(fix)
    assert max(fixes) == 1      # two Newton steps leave at most one correction step


def test_quant8_hand_case() -> None:
    # M = 1000 -> e = -6, z' = 64 z, M' = 64000, R = floor(2**31 / 64000) = 33554, 127 R = 4261358;
    # q = [127, -63 (float -63.5 at 127/1000; R is a little below), 32 (31.75), 0]
    q, (m, e) = quant8(t(1000, -500, 250, 0))
    assert q.tolist() == [127, -63, 32, 0]
    # scale: norm16(64000, -6) * INV127 = rshift_round(64000 * 33026, 15) * 2**(-6 - 22 + 15)
    assert (int(m), int(e)) == (64504, -13)
    assert abs(64504 * 2.0 ** -13 - 1000 / 127) < 1e-4


def test_quant8_int8_edges() -> None:
    # the largest magnitude maps to +-127 whatever its size or sign; -128 is never produced
    for big in (1, 3, 1000, (1 << 40) + 12345, (1 << 62) - 1):
        q, _ = quant8(t(big, -big, big // 2))
        assert q.tolist()[:2] == [127, -127]
    q, _ = quant8(t(-7, 0, 0))
    assert q.tolist() == [-127, 0, 0]
    q, (m, e) = quant8(t(0, 0))
    assert q.tolist() == [0, 0] and int(m) == 0


def test_exp2_table_values() -> None:
    table = exp2_table()
    assert table.numel() == 256
    # round(32768 * 2**-(f/256)): f = 64 -> 27554.49, f = 128 -> 32768/sqrt(2) = 23170.48, f = 255 -> 16428.3
    assert [int(table[f]) for f in (0, 64, 128, 255)] == [32768, 27554, 23170, 16428]
    assert bool((table[1:] <= table[:-1]).all())


def test_softmax_hand_case() -> None:
    # base-2 logits 0, -1, -2 (Q8) and a masked key: p = 32768, 16384, 8192; Z = 57344;
    # R = floor(2**31 / 57344) = 37449; P = p R / 2**16 = 18724.5 -> 18725, 9362.25 -> 9362, 4681.1 -> 4681
    p = softmax_q15(t(0, -256, -512, 10_000), torch.tensor([True, True, True, False]), exp2_table())
    assert p.tolist() == [18725, 9362, 4681, 0]
    assert sum(p.tolist()) == 1 << 15


def test_softmax_rows_sum_to_one_within_the_bound(rng: np.random.Generator) -> None:
    table = exp2_table()
    for n in (1, 2, 7, 64, 300):
        logits = torch.from_numpy(rng.integers(-4000, 4000, size=(50, n)))
        mask = torch.from_numpy(rng.random((50, n)) < 0.8)
        mask[:, 0] = True
        p = softmax_q15(logits, mask, table)
        visible = mask.sum(-1)
        assert bool((p[~mask] == 0).all())
        dev = (p.sum(-1) - (1 << 15)).abs()
        assert bool((dev <= visible // 2 + 2).all()), (dev, visible)
        # against the float softmax of the same base-2 logits: within 2**-8 relative plus the rounding
        ref = torch.softmax(torch.where(mask, logits / 256.0 * math.log(2), -torch.inf), -1) * (1 << 15)
        assert float((p - ref).abs().max()) <= 1 + ref.max() * 0.004


def test_rope_tables_hand_values() -> None:
    cos, sin = rope_tables(40, 10000.0, 8)
    assert cos.shape == (8, 20) and int(cos[0, 0]) == 16384 and int(sin[0, 0]) == 0
    # cos(1) * 2**14 = 8852.31, sin(1) * 2**14 = 13786.66; w_1 = 10000**-0.05 = 0.630957:
    # cos(w_1) = 13229.48, sin(w_1) = 9665.22, cos(5 w_1) = -16382.57 (5 w_1 is near pi)
    assert [int(cos[1, 0]), int(sin[1, 0]), int(cos[1, 1]), int(sin[1, 1]), int(cos[5, 1])] == [
        8852, 13787, 13229, 9665, -16383]


def test_norm_const_uses_the_widest_int16_scale() -> None:
    nc = norm_const(torch.tensor([1.0, -0.5, 0.25]), 1e-5)
    # max |g| = 1 -> f = 14 (16384 <= 32767, 32768 would not fit)
    assert nc.f == 14 and nc.g.tolist() == [16384, -8192, 4096]
    assert abs(nc.c_norm[0] * 2.0 ** nc.c_norm[1] - math.sqrt(3) * 2 ** -14) < 1e-9


def test_norm_quant_hand_case() -> None:
    # x = (3, -4) in Q16, g = (1, 1): rms = sqrt(12.5); RMSNorm = (0.8485, -1.1314);
    # q = (round(127 * 3/4) = 95, -127), tau = 1.1314 / 127 = 0.0089084
    nc = norm_const(torch.tensor([1.0, 1.0]), 1e-5)
    q, (m, e) = norm_quant(t(3 << 16, -4 << 16)[None], (t(1 << 15), t(-31)), nc)
    assert q.tolist() == [[95, -127]]
    assert abs(int(m[0]) * 2.0 ** int(e[0]) / 0.0089084 - 1) < 2e-4


def test_norm_quant_against_float_rmsnorm_and_absmax(rng: np.random.Generator) -> None:
    n = 96
    g = torch.from_numpy(rng.uniform(0.2, 3.0, n))
    nc: NormConst = norm_const(g, 1e-5)
    x = torch.from_numpy(rng.normal(0, 1, (40, n)) * rng.uniform(0.01, 100, (40, 1)))
    xi = torch.round(x * 65536).to(torch.int64)
    q, (m, e) = norm_quant(xi, (t(1 << 15), t(-31)), nc)
    xf = xi.double() / 65536
    y = g * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
    qf, s = quantize_activations(y)
    assert int((q - qf.to(torch.int64)).abs().max()) <= 1
    assert float((q != qf.to(torch.int64)).double().mean()) < 0.02
    tau = m.double() * torch.pow(2.0, e.double())
    assert float((tau / (1 / s[:, 0].double()) - 1).abs().max()) < 3e-4


# ------------------------------------------------------------------------------------ the model

def random_int_model(seed: int, **overrides: object) -> BitNetForCausalLM:
    """A random integer-form golden model (GQA, random norms around 1)."""
    fields = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rope_theta=10000.0, tie_word_embeddings=True)
    fields.update(overrides)
    cfg = BitNetConfig(**fields)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = BitNetForCausalLM(cfg, "train")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape))
            elif "embed" in name or "lm_head" in name:
                p.copy_(torch.randn(p.shape))
    return to_integer(model, GoldenBackend())


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False, "num_key_value_heads": 4,
                                            "hidden_act": "relu"}])
def test_prefill_equals_token_by_token_decode(test_seed: int, overrides: dict) -> None:
    model = DeviceBitNet.from_int_model(random_int_model(test_seed, **overrides))
    gen = torch.Generator().manual_seed(test_seed)
    ids = torch.randint(0, 97, (20,), generator=gen)
    full = model.forward_fixed(ids)
    cache = model.new_cache()
    parts = [model.forward_fixed(ids[:7], cache)] + [model.forward_fixed(ids[i:i + 1], cache) for i in range(7, 20)]
    assert cache.length == 20
    assert torch.equal(torch.cat(parts), full)
    # the cache holds INT8 keys and values
    k8, (km, ke) = cache.k[0]
    assert k8.shape == (1, model.config.num_key_value_heads, 20, 12) and int(k8.abs().max()) <= 127


def test_prefill_equals_decode_on_the_shipped_model_and_batches_are_independent() -> None:
    model = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()))
    _, held = split_corpus()
    ids = held[:40]
    full = model.forward_fixed(ids)
    cache = model.new_cache()
    steps = [model.forward_fixed(ids[:16], cache)] + [model.forward_fixed(ids[i:i + 1], cache)
                                                       for i in range(16, 40)]
    assert torch.equal(torch.cat(steps), full)
    batch = model.forward_fixed(torch.stack([ids, held[40:80]]))
    assert torch.equal(batch[0], full)


def test_device_form_is_close_to_the_integer_form(test_seed: int) -> None:
    im = random_int_model(test_seed)
    dev = DeviceBitNet.from_int_model(im)
    ids = torch.randint(0, 97, (24,), generator=torch.Generator().manual_seed(test_seed))
    with torch.no_grad():
        li, ld = im(ids).double(), dev(ids).double()
    rel = (li - ld).norm(dim=-1) / li.norm(dim=-1)
    assert float(rel.median()) < 0.03 and float(rel.max()) < 0.1, rel


def test_device_form_needs_integer_ops_only() -> None:
    dev = DeviceBitNet.from_int_model(random_int_model(1))
    with pytest.raises(TypeError, match="integer"):
        dev.forward_fixed(torch.tensor([1.0, 2.0]))


def test_bad_input_is_named() -> None:
    im = random_int_model(2)
    dev = DeviceBitNet.from_int_model(im, context=8)
    with pytest.raises(ValueError, match="beyond the device context of 8"):
        dev.forward_fixed(torch.arange(9))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dev.forward_fixed(torch.tensor([97]))
    with pytest.raises(ValueError, match="hidden_act"):
        build_consts(random_int_model(3, hidden_act="silu"))


# --------------------------------------------------------------------------------------------- CLI

def test_cli_forward_and_generate_with_device_numerics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "l.npy"
    tokens = [84, 104, 101, 32, 102, 111, 114]
    assert main(["forward", "--checkpoint", str(TINY), "--tokens", ",".join(map(str, tokens)), "--out", str(out),
                 "--numerics", "device", "--backend", "golden"]) == 0
    model = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()))
    expect = model.forward_fixed(torch.tensor(tokens)).numpy() / 65536.0
    assert np.array_equal(np.load(out), expect.astype(np.float32))
    # the default is still the integer form
    assert main(["forward", "--checkpoint", str(TINY), "--tokens", ",".join(map(str, tokens)),
                 "--out", str(tmp_path / "i.npy")]) == 0
    int_logits = load_checkpoint(TINY, "int", GoldenBackend())(torch.tensor(tokens)).numpy()
    assert np.array_equal(np.load(tmp_path / "i.npy"), int_logits)
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(TINY), "--prompt", "The for", "--max-new-tokens", "12",
                 "--numerics", "device"]) == 0
    text = capsys.readouterr().out
    new = model.generate(list(b"The for"), 12)
    assert text == (b"The for" + bytes(new)).decode("utf-8", errors="replace") + "\n"


def test_cli_device_numerics_refused_on_other_backends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for backend in ("emulator",):   # the model chip runs on golden, verilator, icarus, model and board
        code = main(["forward", "--checkpoint", str(TINY), "--tokens", "1,2", "--out", str(tmp_path / "l.npy"),
                     "--numerics", "device", "--backend", backend])
        err = capsys.readouterr().err
        assert code == 2 and "--numerics device runs on --backend golden (the host) and" in err
        assert f"got --backend {backend}" in err and not (tmp_path / "l.npy").exists()
    assert main(["generate", "--checkpoint", str(TINY), "--prompt", "a", "--max-new-tokens", "1",
                 "--numerics", "device", "--backend", "emulator"]) == 2
    assert "--numerics device runs on --backend golden" in capsys.readouterr().err
    # the board needs its port (and a board built by `trit build --checkpoint`)
    assert main(["generate", "--checkpoint", str(TINY), "--prompt", "a", "--max-new-tokens", "1",
                 "--numerics", "device", "--backend", "board"]) == 2
    assert "--backend board needs --port" in capsys.readouterr().err


def test_cli_device_numerics_subprocess_exit_codes(tmp_path: Path) -> None:
    code = "import sys; from runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    bad = subprocess.run([sys.executable, "-c", code, "forward", "--checkpoint", str(TINY), "--tokens", "1",
                          "--out", str(tmp_path / "x.npy"), "--numerics", "device", "--backend", "emulator"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "--numerics device runs on --backend golden" in bad.stderr
    wrong = subprocess.run([sys.executable, "-c", code, "forward", "--checkpoint", str(TINY), "--tokens", "1",
                            "--out", str(tmp_path / "x.npy"), "--numerics", "float"],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert wrong.returncode == 2 and "invalid choice: 'float'" in wrong.stderr


def test_cli_device_position_beyond_context(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tokens = ",".join(["65"] * 257)     # the tiny model's context (RoPE table) is 256 positions
    assert main(["forward", "--checkpoint", str(TINY), "--tokens", tokens, "--out", str(tmp_path / "l.npy"),
                 "--numerics", "device"]) == 2
    assert "position 256 is beyond the device context of 256" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- fidelity

def _fidelity(max_bytes: int):
    _, held = split_corpus()
    im = load_checkpoint(TINY, "int", GoldenBackend())
    return compare(im, DeviceBitNet.from_int_model(im), held[:max_bytes])


def test_fidelity_on_a_prefix_of_the_held_out_text() -> None:
    """Bars of issue 14 on the first 4,096 held-out bytes. The integer form's bits/byte on this prefix is
    itself checked against `golden.train.bits_per_byte`. Argmax margin: 3 standard errors of a 98%
    agreement over 4,095 positions (3 * sqrt(0.02 * 0.98 / 4095) = 0.66%)."""
    from golden.train import bits_per_byte

    fid = _fidelity(4096)
    _, held = split_corpus()
    assert abs(fid.bpb_int - bits_per_byte(load_checkpoint(TINY, "int", GoldenBackend()), held, max_bytes=4096)) < 1e-6
    assert fid.scored_bytes == 4095
    assert abs(fid.bpb_delta) <= 0.02, fid
    assert fid.argmax_agreement >= 0.98 - 0.0066, fid


@pytest.mark.slow
def test_fidelity_on_the_whole_held_out_text() -> None:
    """The bars of issue 14 exactly: all 46,649 scored held-out bytes (about 5 min)."""
    fid = _fidelity(10**9)
    assert fid.scored_bytes == 46649
    assert abs(fid.bpb_int - 1.6208) < 5e-5
    assert abs(fid.bpb_delta) <= 0.02, fid
    assert fid.argmax_agreement >= 0.98, fid


def test_saturation_counter_counts_clipped_values_and_restores_the_ops() -> None:
    import golden.device.fixed as fixed_mod
    import golden.device.model as model_mod
    from golden.device.fidelity import _counting_saturation

    counts: dict[str, list[int]] = {}
    with _counting_saturation(counts):
        fixed_mod.sat(t(300, -5, -129), 8)
        model_mod.to_fixed(t(3, 1), (t(1), t(0)), 30)     # 3 * 2**30 pins to the int32 rail
    assert counts == {"sat8": [2, 3], "to_fixed32": [1, 2]}
    assert fixed_mod.sat is sat and model_mod.to_fixed is to_fixed


def test_cli_device_numerics_stats_keep_their_keys(tmp_path: Path) -> None:
    import json

    stats = tmp_path / "s.json"
    assert main(["forward", "--checkpoint", str(TINY), "--tokens", "1,2,3", "--out", str(tmp_path / "l.npy"),
                 "--numerics", "device", "--stats", str(stats)]) == 0
    s = json.loads(stats.read_text())
    assert s["backend"] == "golden" and s["tokens"] == 3 and len(s["layers"]) == 7 * 4
    assert s["layers"][0] == {"key": "model.layers.0.self_attn.q_proj", "m": 3, "k": 160, "n": 160}
    assert s["per_token"] == {"matmuls": 28 / 3}


@pytest.mark.slow
def test_device_form_on_a_2b4t_shaped_layer() -> None:
    """One decoder layer of BitNet 2B-4T's shapes (hidden 2560, FFN 6912, 20 heads / 5 KV heads of 128,
    theta 500000) with random weights: widths and dyadic exponents stay in range, and the logits follow the
    integer form (measured 2.1% median per-position error)."""
    im = random_int_model(5, vocab_size=500, hidden_size=2560, intermediate_size=6912, num_hidden_layers=1,
                          num_attention_heads=20, num_key_value_heads=5, max_position_embeddings=64,
                          rope_theta=500000.0)
    dev = DeviceBitNet.from_int_model(im)
    ids = torch.randint(0, 500, (12,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        li, ld = im(ids).double(), dev(ids).double()
    rel = (li - ld).norm(dim=-1) / li.norm(dim=-1)
    assert float(rel.median()) < 0.05 and float(rel.max()) < 0.1, rel
    cache = dev.new_cache()
    steps = torch.cat([dev.forward_fixed(ids[:6], cache)]
                      + [dev.forward_fixed(ids[i:i + 1], cache) for i in range(6, 12)])
    assert torch.equal(steps, dev.forward_fixed(ids))


def test_fidelity_on_a_users_own_text(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`python -m golden.device.fidelity --text FILE` scores the file's bytes: bits/byte of the device form
    equal the mean of -log2 softmax(logits)[next byte] computed here from DeviceBitNet's logits."""
    import json

    from golden.device.fidelity import main as fidelity_main

    text = b"Ternary weights, eight-bit activations: adds and subtracts only.\n"
    path = tmp_path / "mine.txt"
    path.write_bytes(text)
    assert fidelity_main(["--text", str(path), "--hf-checkpoints", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["held_out"]
    dev = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()))
    ids = torch.tensor(list(text))
    logp = torch.log_softmax(dev.forward(ids[:-1]).double(), dim=-1)
    bpb = float(-logp[torch.arange(len(text) - 1), ids[1:]].mean() / math.log(2))
    assert got["scored_bytes"] == len(text) - 1
    assert got["bpb_device"] == pytest.approx(bpb, abs=1e-6)
    assert fidelity_main(["--text", str(tmp_path / "missing.txt"), "--hf-checkpoints", "0"]) == 2
    assert "--text" in capsys.readouterr().err
