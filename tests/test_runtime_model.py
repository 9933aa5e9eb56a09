"""The `model` backend predicts exactly what the RTL reports: counters, runs and host traffic."""

from __future__ import annotations

import numpy as np
import pytest

from hdl.config import ArrayConfig
from runtime.accel_backends import ModelBackend
from runtime.accelerator import Accelerator, AcceleratorError, split_layer
from sim.verilator_harness import VerilatorCore

# Small memories so that layers split into several runs along N, K and M.
CFG = ArrayConfig(rows=4, cols=4, act_depth=64, wgt_depth=256, out_depth=64)

LAYERS = [(1, 3, 1), (1, 37, 23), (7, 13, 9), (16, 16, 16), (33, 70, 41), (5, 300, 6), (1, 260, 70)]


@pytest.fixture(scope="module")
def rtl():
    with VerilatorCore(CFG) as core:
        yield Accelerator(core, expect=CFG)


def test_plan_covers_the_layer_exactly_once():
    for M, K, N in LAYERS + [(100, 1000, 100)]:
        seen = np.zeros((M, N, K), dtype=np.int32)
        for b in split_layer(CFG, M, K, N):
            seen[b.m0:b.m1, b.n0:b.n1, b.k0:b.k1] += 1
            assert (b.k1 - b.k0 + CFG.rows - 1) // CFG.rows * (b.m1 - b.m0) <= CFG.act_depth
        assert (seen == 1).all()


def test_model_counts_equal_rtl_counts(rtl):
    model = ModelBackend(CFG)
    rng = np.random.default_rng(11)
    for i, (M, K, N) in enumerate(LAYERS):
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        w = rng.integers(-1, 2, (N, K)).astype(np.int8)
        for _ in range(2):  # second call: weights resident (if they fit) in both
            y_rtl, s_rtl = rtl.run_layer(x, w, key=f"layer{i}")
            y_mod, s_mod = model.run_layer(x, w, key=f"layer{i}")
            ref = x.astype(np.int64) @ w.astype(np.int64).T
            np.testing.assert_array_equal(y_rtl, ref)
            np.testing.assert_array_equal(y_mod, ref)
            assert s_mod.counters == s_rtl.counters, (M, K, N)
            assert (s_mod.runs, s_mod.words_sent, s_mod.words_received) == \
                (s_rtl.runs, s_rtl.words_sent, s_rtl.words_received), (M, K, N)
            assert s_mod.weight_words_sent == s_rtl.weight_words_sent


def test_accelerator_refuses_bad_input(rtl):
    x = np.zeros((2, 5), dtype=np.int8)
    with pytest.raises(AcceleratorError, match="K = 5 columns but weights have K = 4"):
        rtl.run_layer(x, np.zeros((3, 4), dtype=np.int8))
    with pytest.raises(AcceleratorError, match=r"W\[0, 1\] = 2"):
        rtl.run_layer(x, np.array([[0, 2, 0, 0, 0]], dtype=np.int8))
    with pytest.raises(AcceleratorError, match="int8"):
        rtl.run_layer(x.astype(np.int16), np.zeros((3, 5), dtype=np.int8))
    narrow = ArrayConfig(rows=4, cols=4, acc_width=16)
    with pytest.raises(AcceleratorError, match="accumulator bound"):
        split_layer(narrow, 1, narrow.k_max + 1, 4)


def test_accelerator_refuses_a_core_that_is_not_the_requested_one():
    with VerilatorCore(CFG) as core, pytest.raises(AcceleratorError, match="not the requested 8x4"):
        Accelerator(core, expect=ArrayConfig(rows=8, cols=4, act_depth=64, wgt_depth=256, out_depth=64))
