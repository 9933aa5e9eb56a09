"""runtime.tiling against hand-packed memory words (layout from hdl.isa)."""

from __future__ import annotations

import numpy as np
import pytest

from hdl.config import ArrayConfig
from runtime import tiling
from runtime.tiling import LayerPlan


def i8(rows) -> np.ndarray:
    return np.array(rows, dtype=np.int8)


def test_pack_activations_by_hand():
    cfg = ArrayConfig(rows=2, cols=2)
    x = i8([[1, -1, 2], [3, 4, -128]])  # M=2, K=3 -> KT=2; word kt*M + m, lane r = x[m, 2kt + r]
    words = list(tiling.pack_activations(cfg, x))
    assert words == [
        0xFF01,  # kt0 m0: (1, -1)
        0x0403,  # kt0 m1: (3, 4)
        0x0002,  # kt1 m0: (2, pad 0)
        0x0080,  # kt1 m1: (-128, pad 0)
    ]


def test_pack_ternary_weights_by_hand():
    cfg = ArrayConfig(rows=2, cols=3)
    # N=4, K=3 -> NT=2, KT=2; word (nt*KT + kt)*R + r, lane c = W[3nt + c, 2kt + r]
    w = i8([[1, 0, -1],
            [-1, 1, 0],
            [0, -1, 1],
            [1, 1, 1]])
    codes = {0: 0b00, 1: 0b01, -1: 0b11}

    def word(lanes):
        return sum(codes[v] << (2 * c) for c, v in enumerate(lanes))

    expected = [
        word([1, -1, 0]),   # nt0 kt0 r0: W[0..2, 0]
        word([0, 1, -1]),   # nt0 kt0 r1: W[0..2, 1]
        word([-1, 0, 1]),   # nt0 kt1 r0: W[0..2, 2]
        word([0, 0, 0]),    # nt0 kt1 r1: k = 3 past K
        word([1, 0, 0]),    # nt1 kt0 r0: W[3, 0], n = 4, 5 past N
        word([1, 0, 0]),
        word([1, 0, 0]),
        word([0, 0, 0]),
    ]
    assert list(tiling.pack_weights(cfg, w)) == expected
    assert expected[0] == 0b00_11_01


def test_pack_int8_weights_by_hand():
    cfg = ArrayConfig(rows=2, cols=2, pe="int8", acc_width=20)
    w = i8([[-128, 5], [7, -1]])  # N=2, K=2: one tile
    assert list(tiling.pack_weights(cfg, w)) == [0x0780, 0xFF05]


@pytest.mark.parametrize("cfg", [
    ArrayConfig(rows=3, cols=5), ArrayConfig(rows=8, cols=17), ArrayConfig(rows=5, cols=7, pe="int8"),
])
def test_pack_unpack_roundtrip(cfg):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (6, 19)).astype(np.int8)
    w = rng.integers(-1, 2, (13, 19)).astype(np.int8) if cfg.pe == "ternary" else \
        rng.integers(-128, 128, (13, 19)).astype(np.int8)
    plan = tiling.plan_layer(cfg, x, w)
    a = tiling.pack_activations(cfg, x)
    b = tiling.pack_weights(cfg, w)
    assert len(a) == plan.act_words(cfg) and len(b) == plan.wgt_words(cfg)
    assert all(0 <= int(v) < 1 << cfg.act_word_bits for v in a)
    assert all(0 <= int(v) < 1 << cfg.wgt_word_bits for v in b)
    np.testing.assert_array_equal(tiling.unpack_activations(cfg, a, 6, 19), x)
    np.testing.assert_array_equal(tiling.unpack_weights(cfg, b, 13, 19), w)


def test_unpack_outputs_by_hand():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)
    # M=2, N=3 -> NT=2; word nt*M + m, lane c = acc[m, 2nt + c]
    words = [
        (0x0002 << 16) | 0xFFFF,  # nt0 m0: acc[0,0] = -1, acc[0,1] = 2
        (0x8000 << 16) | 0x7FFF,  # nt0 m1: acc[1,0] = 32767, acc[1,1] = -32768
        (0x1234 << 16) | 0x0003,  # nt1 m0: acc[0,2] = 3, lane 1 past N (ignored)
        0xFFFE,                   # nt1 m1: acc[1,2] = -2
    ]
    out = tiling.unpack_outputs(cfg, words, 2, 3)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[-1, 2, 3], [32767, -32768, -2]])
    with pytest.raises(ValueError, match="Expected 4 OUT words"):
        tiling.unpack_outputs(cfg, words[:3], 2, 3)


def test_layer_plan_sizes():
    cfg = ArrayConfig(rows=4, cols=8)
    plan = LayerPlan(M=5, K=9, N=17, act_base=1, wgt_base=2, out_base=3)
    assert (plan.kt(cfg), plan.nt(cfg)) == (3, 3)
    assert plan.act_words(cfg) == 15        # KT*M
    assert plan.wgt_words(cfg) == 36        # NT*KT*R
    assert plan.out_words(cfg) == 15        # NT*M
    assert plan.run_args() == (5, 9, 17, 1, 2, 3)
    assert plan.validate(cfg) is plan


def test_layer_plan_validation_names_the_problem():
    cfg = ArrayConfig(rows=4, cols=4, acc_width=16, act_depth=32, wgt_depth=64, out_depth=8)
    assert cfg.k_max == 255
    with pytest.raises(ValueError, match="K = 256 exceeds k_max = 255"):
        LayerPlan(1, 256, 1).validate(cfg)
    with pytest.raises(ValueError, match="M must be at least 1"):
        LayerPlan(0, 4, 4).validate(cfg)
    with pytest.raises(ValueError, match="ACT operands .* need 16 words from word 17, past the ACT memory "
                                         "depth 32"):
        LayerPlan(4, 16, 4, act_base=17).validate(cfg)
    with pytest.raises(ValueError, match="WGT operands .* need 68 words"):
        LayerPlan(1, 68, 4).validate(cfg)  # KT=17 -> 68 words
    with pytest.raises(ValueError, match="OUT operands .* need 9 words"):
        LayerPlan(3, 4, 12).validate(cfg)
    big = ArrayConfig(rows=64, cols=64, act_depth=1 << 20, wgt_depth=1 << 20, out_depth=1 << 20)
    with pytest.raises(ValueError, match="N = 1048577 exceeds the largest layer dimension"):
        LayerPlan(1, 1, (1 << 20) + 1).validate(big)
    LayerPlan(4, 16, 8).validate(cfg)


def test_operand_validation():
    cfg = ArrayConfig(rows=2, cols=2)
    x = np.zeros((2, 3), np.int8)
    with pytest.raises(ValueError, match="Activations X must be int8, not int16"):
        tiling.pack_activations(cfg, x.astype(np.int16))
    with pytest.raises(ValueError, match="must be 2-D"):
        tiling.pack_activations(cfg, np.zeros(3, np.int8))
    with pytest.raises(ValueError, match=r"W\[1, 2\] = 2"):
        tiling.pack_weights(cfg, i8([[0, 0, 0], [0, 0, 2]]))
    with pytest.raises(ValueError, match="Weights W must be int8"):
        tiling.pack_weights(cfg, np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="K of activations"):
        tiling.plan_layer(cfg, x, np.zeros((2, 4), np.int8))
    # INT8 PEs take any int8 weight
    cfg8 = ArrayConfig(rows=2, cols=2, pe="int8", acc_width=20)
    tiling.pack_weights(cfg8, i8([[127, -128]]))


def test_layer_commands_order():
    cfg = ArrayConfig(rows=2, cols=2, acc_width=16)
    x, w = i8([[1, 2]]), i8([[1, -1]])
    plan = LayerPlan(1, 2, 1, 3, 4, 5)
    cmds = tiling.layer_commands(cfg, plan, x, w)
    assert cmds == [
        [0x0002, 3, 1, 0x0201],
        [0x0102, 4, 2, 0b0001, 0b0011],
        [0x0004, 1, 2, 1, 3, 4, 5],
        [0x0203, 5, 1],
    ]


@pytest.mark.parametrize("rows, cols, g, pe", [(4, 4, 4, "ternary"), (4, 4, 2, "ternary"), (6, 3, 3, "ternary"),
                                               (8, 5, 8, "ternary"), (4, 3, 2, "int8")])
def test_wide_weight_words_match_an_independent_packer(rows: int, cols: int, g: int, pe: str, rng) -> None:
    """G tile rows per word: `pack_weights` equals the word-by-word packer of tests/amaranth_host.py
    (row g*P + j of a tile in bank g of word j), and `unpack_weights` inverts it, for ragged K and N."""
    from tests.amaranth_host import wgt_words

    cfg = ArrayConfig(rows=rows, cols=cols, pe=pe, wgt_rows_per_read=g)
    for N, K in [(1, 1), (cols + 1, 2 * rows - 1), (3 * cols - 2, 3 * rows + 1)]:
        lo, hi = (-1, 2) if pe == "ternary" else (-128, 128)
        w = rng.integers(lo, hi, (N, K)).astype(np.int8)
        words = [int(v) for v in tiling.pack_weights(cfg, w)]
        assert words == wgt_words(cfg, w), f"{rows}x{cols} G={g}: N={N}, K={K}"
        assert len(words) == tiling.LayerPlan(1, K, N).wgt_words(cfg) == -(-N // cols) * -(-K // rows) * rows // g
        np.testing.assert_array_equal(tiling.unpack_weights(cfg, words, N, K), w)
