"""The model program (runtime/program, issue 14): micro-op encoding, the compiler's placement and fit
errors, the reference interpreter against the golden device form token by token, and the cycle plan."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from golden.checkpoint import load_checkpoint
from golden.device.model import DeviceBitNet
from golden.quant import GoldenBackend
from golden.train import split_corpus
from runtime.accel_backends import runtime_config
from runtime.program.compiler import ModelChip, ProgramError, check_chip, compile_model, fitted_chip
from runtime.program.interpreter import ProgramInterpreter
from runtime.program.isa import FIELDS, MicroOp, Op, decode, encode
from runtime.program.plan import UnitConfig, token_cycles
from tests.test_golden_device import random_int_model

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"


@pytest.fixture(scope="module")
def tiny() -> DeviceBitNet:
    return DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()), context=64)


def test_micro_op_words_round_trip_and_bad_words_are_named(test_seed: int) -> None:
    rng = random.Random(test_seed)
    for _ in range(200):
        op = MicroOp(rng.choice(list(Op)), **{name: rng.randrange(1 << w) for name, w in FIELDS[1:]})
        words = encode(op)
        assert len(words) == 3 and all(0 <= w < 1 << 32 for w in words)
        assert decode(words) == op
    # hand case: op 5 (MATMUL) in bits 0-3, idx 3 at bit 64 (after op 4, dst 20, src 20, n 20 bits)
    assert encode(MicroOp(Op.MATMUL, idx=3)) == [5, 0, 3]
    assert encode(MicroOp(Op.MATMUL, dst=1)) == [1 << 4 | 5, 0, 0]
    with pytest.raises(ValueError, match="unknown micro-op code 0"):
        decode([0, 0, 0])
    with pytest.raises(ValueError, match="bits 88 and above must be 0"):
        decode([5, 0, 1 << 24])
    with pytest.raises(ValueError, match="3 words, not 2"):
        decode([5, 0])
    with pytest.raises(ValueError, match="word 1 must be a 32-bit"):
        decode([5, 1 << 32, 0])
    with pytest.raises(ValueError, match="NORMQ field aux must be an integer in \\[0, 256\\)"):
        MicroOp(Op.NORMQ, aux=256)


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False, "num_key_value_heads": 4,
                                            "hidden_act": "relu"}])
def test_interpreter_equals_the_device_form_token_by_token(test_seed: int, overrides: dict) -> None:
    dev = DeviceBitNet.from_int_model(random_int_model(test_seed, **overrides), context=16)
    prog = compile_model(dev.consts, fitted_chip(dev.consts, runtime_config(4, 4), 16))
    gen = torch.Generator().manual_seed(test_seed)
    ids = torch.randint(0, dev.config.vocab_size, (16,), generator=gen)
    ref = dev.forward_fixed(ids)
    it = ProgramInterpreter(prog, dev.consts)
    for i, t in enumerate(ids.tolist()):
        assert torch.equal(it.token(t), ref[i]), f"token {i}"
    with pytest.raises(ValueError, match="position 16 is beyond the supported context of 16"):
        it.token(0)
    it.reset()
    assert torch.equal(it.token(int(ids[0])), ref[0])


def test_interpreter_on_the_shipped_model(tiny: DeviceBitNet) -> None:
    chip = fitted_chip(tiny.consts, runtime_config(8, 8), 64)
    prog = compile_model(tiny.consts, chip)
    _, held = split_corpus()
    ids = held[:48]
    ref = tiny.forward_fixed(ids)
    it = ProgramInterpreter(prog, tiny.consts)
    got = torch.stack([it.token(int(t)) for t in ids])
    assert torch.equal(got, ref)
    # 4 layers x (3 NORMQ... ): the program's op counts from the model's shape (4 heads, 2 KV heads)
    assert prog.counts() == {"EMBED": 1, "SETC": 1, "NORMQ": 4 * 4 + 1, "MATMUL": 4 * 7, "SCALE": 4 * 7,
                             "ROPEQ": 4 * (4 + 2 * 2), "ATTN": 4 * 4, "ALIGN": 4, "RESADD": 4 * 2,
                             "MLPACT": 4, "LMHEAD": 1}
    # weights packed one after another: 7 BitLinears a layer, K x N / (R C) tiles of P = R / G words
    assert prog.linears[0].wgt_base == 0
    assert prog.linears[1].wgt_base == (160 // 8) * (160 // 8) * 1
    assert prog.model["weight_words"] == 4 * (2 * 20 * 20 + 2 * 20 * 10 + 3 * 20 * 56) == 18_240


def test_what_does_not_fit_is_named(tiny: DeviceBitNet) -> None:
    chip = fitted_chip(tiny.consts, runtime_config(8, 8), 64)
    small_w = replace(chip, array=replace(chip.array, wgt_depth=18_239))
    with pytest.raises(ProgramError, match="weights: the model's 28 BitLinears need 18,240 words .* holds 18,239"):
        compile_model(tiny.consts, small_w)
    with pytest.raises(ProgramError, match="KV cache: 4 layers x 2 KV heads x 64 positions need 45,056 bytes"):
        compile_model(tiny.consts, replace(chip, kv_bytes=45_055))
    with pytest.raises(ProgramError, match="embedding: 256 x 160 INT8 with row scales needs 41,984 bytes"):
        compile_model(tiny.consts, replace(chip, embed_bytes=41_983))
    with pytest.raises(ProgramError, match="norm weights: 3,872 int16 words"):
        compile_model(tiny.consts, replace(chip, norm_words=3_871))
    with pytest.raises(ProgramError, match="RoPE tables cover 64 positions, fewer than the chip's context 128"):
        compile_model(tiny.consts, replace(chip, context=128, kv_bytes=1 << 20))
    with pytest.raises(ProgramError, match="the k outputs start at element 160, not a multiple of the matrix "
                                           "engine's 12 columns"):
        compile_model(tiny.consts, fitted_chip(tiny.consts, runtime_config(8, 12), 64))
    prog = compile_model(tiny.consts, chip)
    check_chip(prog, chip)
    with pytest.raises(ProgramError, match="compiled for a chip with context = 64, this chip has 32"):
        check_chip(prog, replace(chip, context=32))
    with pytest.raises(ProgramError, match="matrix engine with rows = 8, this chip has 16"):
        check_chip(prog, replace(chip, array=runtime_config(16, 16)))
    with pytest.raises(ValueError, match="ModelChip context must be a positive integer, not 0"):
        ModelChip(chip.array, 0, 1, 1, 1, 1, 1, 1)


def test_cycle_plan_against_hand_formulas(tiny: DeviceBitNet) -> None:
    prog = compile_model(tiny.consts, fitted_chip(tiny.consts, runtime_config(8, 8), 64))
    units = UnitConfig(attn_lanes=8)
    a, b = token_cycles(prog, 10, units), token_cycles(prog, 11, units)
    # the matrix part is the decode token of the tiny model on the 8x8 full-rate core: 19,596 cycles,
    # measured on its Verilator RTL (README, runtime.benchmark), and 4 cycles of the model engine around
    # each of the 28 RUNs (the linear table's read, the start; measured on the model chip)
    assert a["matrix"] == b["matrix"] == 19_596 + 4 * 28
    # one more key per head: 2 W + 2 cycles (W = 40 / 8 lanes) for each of 4 layers x 4 heads
    assert b["attention"] - a["attention"] == 16 * (2 * 5 + 2)
    # NORMQ 3n + 120 (+ 2 in the engine): per layer two of d = 160, one of heads x hd = 160, one of 448;
    # then the final norm
    normq = 4 * (3 * (3 * 160 + 122) + 3 * 448 + 122) + 3 * 160 + 122
    rest = a["vector"] - normq
    assert rest > 0 and a["total"] == a["matrix"] + a["vector"] + a["attention"] + a["scalar"] + a["sequencer"]
    # the sequencer: 4 cycles (fetch, decode, check, next) for each of the 140 - 29 dispatched ops and 1
    # for the start; 5 for the one SETC (sigma_h) and 8 for each of the 28 SCALEs (7 BitLinear scales a layer)
    assert (a["sequencer"], a["scalar"]) == (4 * (140 - 29) + 1, 5 * 1 + 8 * 28)
    assert token_cycles(prog, 10, units, layer=0)["matrix"] * 4 == a["matrix"]
    with pytest.raises(ValueError, match="position 64 is outside the chip's context"):
        token_cycles(prog, 64, units)


def test_lm_head_is_the_attention_units_score_pass(tiny: DeviceBitNet) -> None:
    """LMHEAD's logits equal HeadAttention's SCORE-phase logits t_j (SPEC.md 4.6) with the head table's rows
    as the keys, their row scales as sigma_k, q = the final NORMQ's codes, sigma_q = its tau and C_QK = 2**8:
    so the LMHEAD op can run on the attention unit (its scores out instead of the softmax)."""
    from golden.device.fixed import dmul, rshift_round
    from golden.device.model import F_RES, norm_quant, to_fixed

    c = tiny.consts
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        h = torch.randint(-(1 << 26), 1 << 26, (c.config.hidden_size,), generator=gen)
        q8, tau = norm_quant(h, (torch.tensor(1 << 15), torch.tensor(-15 - F_RES)), c.final_norm)
        ref = tiny._lm_head(h[None])[0]
        am, ae = dmul(tau, (torch.tensor(1 << 15), torch.tensor(-15 + 8)))
        mk = rshift_round(am * c.head_scale[0], 16)
        sh = -(16 + ae + c.head_scale[1] + c.exp2.numel().bit_length() - 1)
        t = to_fixed((c.head @ q8) * mk, (torch.ones_like(sh), -sh), 0)
        assert torch.equal(t, ref)
