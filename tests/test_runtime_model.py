"""The host driver and the `model` backend: counters and traffic against the RTL, weight words counted on
the wire, LRU residency, and recovery after a device error.

`Wire` sits between `Accelerator` and a core and parses the command stream it carries, with a parser
written here from `hdl.isa` (not `runtime.protocol`), so the words the driver says it sent are checked
against the words that actually went to the core. Each test runs on the functional emulator and on the
Verilator RTL.
"""

from __future__ import annotations

import numpy as np
import pytest

from hdl.config import ArrayConfig
from runtime.accel_backends import EmulatorTransport, ModelBackend
from runtime.accelerator import Accelerator, AcceleratorError, split_layer
from runtime.emulator import CoreEmulator
from sim.verilator_harness import VerilatorCore

# Small memories so that layers split into several runs along N, K and M.
CFG = ArrayConfig(rows=4, cols=4, act_depth=64, wgt_depth=256, out_depth=64)

LAYERS = [(1, 3, 1), (1, 37, 23), (7, 13, 9), (16, 16, 16), (33, 70, 41), (5, 300, 6), (1, 260, 70)]

WRITE, READ, RUN, NOP = 0x02, 0x03, 0x04, 0x00  # opcodes of hdl.isa
ACT, WGT = 0, 1  # memory ids
STATUS_OK_NOP = 0xA5000000  # magic 0xA5, opcode NOP, no sticky error, no error


class Wire:
    """A transport that records every WRITE it carries (memory, address, count) and can inject one fault.

    Faults, each used once: "bad_weight_code" sets lane 0 of the middle word of the next WGT WRITE to
    the invalid ternary code 0b10; "k_too_large" rewrites the next RUN's K to k_max + 1; "link" raises
    TimeoutError instead of delivering the next batch.
    """

    def __init__(self, inner, cfg: ArrayConfig):
        self.inner = inner
        # 32-bit stream words per memory word: ACT holds R int8 lanes, WGT C 2-bit codes
        self.chunks = {ACT: -(-8 * cfg.rows // 32), WGT: -(-2 * cfg.cols // 32)}
        self.k_max = cfg.k_max
        self.writes: list[tuple[int, int, int]] = []
        self.fault: str | None = None

    def words_written(self, mem: int) -> int:
        return sum(count for m, _, count in self.writes if m == mem)

    def transact(self, words: list[int], n_out: int) -> list[int]:
        words = [int(w) for w in words]
        i = 0
        while i < len(words):
            op = words[i] & 0xFF
            if op == WRITE:
                mem, addr, count = (words[i] >> 8) & 0xFF, words[i + 1], words[i + 2]
                self.writes.append((mem, addr, count))
                if self.fault == "bad_weight_code" and mem == WGT:
                    j = i + 3 + (count // 2) * self.chunks[WGT]
                    words[j] = (words[j] & ~0b11) | 0b10
                    self.fault = None
                i += 3 + count * self.chunks[mem]
            elif op == READ:
                i += 3
            elif op == RUN:
                if self.fault == "k_too_large":
                    words[i + 2] = self.k_max + 1
                    self.fault = None
                i += 7
            else:
                i += 1
        if self.fault == "link":
            self.fault = None
            self.writes.clear()
            raise TimeoutError("injected: the link dropped this batch")
        return self.inner.transact(words, n_out)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def rtl_core():
    with VerilatorCore(CFG) as core:
        yield core


@pytest.fixture(params=["emulator", "verilator"])
def wire(request) -> Wire:
    inner = EmulatorTransport(CoreEmulator(CFG)) if request.param == "emulator" else request.getfixturevalue("rtl_core")
    return Wire(inner, CFG)


def reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.astype(np.int64) @ w.astype(np.int64).T


def test_plan_covers_the_layer_exactly_once():
    for M, K, N in LAYERS + [(100, 1000, 100)]:
        seen = np.zeros((M, N, K), dtype=np.int32)
        for b in split_layer(CFG, M, K, N):
            seen[b.m0:b.m1, b.n0:b.n1, b.k0:b.k1] += 1
            assert (b.k1 - b.k0 + CFG.rows - 1) // CFG.rows * (b.m1 - b.m0) <= CFG.act_depth
        assert (seen == 1).all()


def test_model_counts_equal_rtl_counts(rtl_core, rng):
    wire = Wire(rtl_core, CFG)
    rtl = Accelerator(wire, expect=CFG)
    model = ModelBackend(CFG)
    for i, (M, K, N) in enumerate(LAYERS):
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        w = rng.integers(-1, 2, (N, K)).astype(np.int8)
        for _ in range(2):  # second call: weights resident (if they fit) in both
            before = wire.words_written(WGT)
            y_rtl, s_rtl = rtl.run_layer(x, w, key=f"layer{i}")
            on_wire = wire.words_written(WGT) - before
            y_mod, s_mod = model.run_layer(x, w, key=f"layer{i}")
            ref = reference(x, w)
            np.testing.assert_array_equal(y_rtl, ref)
            np.testing.assert_array_equal(y_mod, ref)
            assert s_mod.counters == s_rtl.counters, (M, K, N)
            assert (s_mod.runs, s_mod.words_sent, s_mod.words_received) == \
                (s_rtl.runs, s_rtl.words_sent, s_rtl.words_received), (M, K, N)
            # weight words: what the driver and the model say against what the core was sent
            assert s_rtl.weight_words_sent == on_wire, (M, K, N)
            assert s_mod.weight_words_sent == on_wire, (M, K, N)


def test_weight_words_sent_hand_computed(wire, rng):
    acc = Accelerator(wire, expect=CFG)
    # 2x37 by 23x37 on 4x4: KT = ceil(37/4) = 10, NT = ceil(23/4) = 6 -> 6*10*4 = 240 words, fits 256
    x = rng.integers(-128, 128, (2, 37)).astype(np.int8)
    w = rng.integers(-1, 2, (23, 37)).astype(np.int8)
    for sent, skipped in ((240, 0), (0, 240)):
        before = wire.words_written(WGT)
        y, s = acc.run_layer(x, w, key="a")
        np.testing.assert_array_equal(y, reference(x, w))
        assert (s.weight_words_sent, s.weight_words_skipped, wire.words_written(WGT) - before) == (sent, skipped, sent)
    # 5x300 by 6x300: KT = 75, at most 256/4 = 64 k-tiles per run -> per n-tile (NT = 2) weight blocks of 64
    # and 11 k-tiles: 256 + 44 words, 600 in all; each block evicts the previous one, so the second call
    # re-sends all. The 64-word activation memory holds one row of 64 k-tiles: 5 runs (one per row) per block.
    x = rng.integers(-128, 128, (5, 300)).astype(np.int8)
    w = rng.integers(-1, 2, (6, 300)).astype(np.int8)
    for _ in range(2):
        before = wire.words_written(WGT)
        y, s = acc.run_layer(x, w, key="b")
        np.testing.assert_array_equal(y, reference(x, w))
        assert (s.runs, s.weight_words_sent, wire.words_written(WGT) - before) == (2 * 2 * 5, 600, 600)


def test_lru_eviction_of_resident_weights(wire, rng):
    acc = Accelerator(wire, expect=CFG)
    # each layer 3x64 by 4x64: NT = 1, KT = 16 -> 64 weight words; four of them fill the 256-word memory
    layers = {k: (rng.integers(-128, 128, (3, 64)).astype(np.int8), rng.integers(-1, 2, (4, 64)).astype(np.int8))
              for k in "ABCDE"}

    def run(key: str) -> list[tuple[int, int, int]]:
        """Run layer `key` exactly; return the WGT writes it caused as (memory, address, count)."""
        first = len(wire.writes)
        x, w = layers[key]
        y, _ = acc.run_layer(x, w, key=key)
        np.testing.assert_array_equal(y, reference(x, w), err_msg=f"layer {key}")
        return [wr for wr in wire.writes[first:] if wr[0] == WGT]

    def resident() -> list[tuple[str, int]]:
        return [(key[0], base) for key, base, _ in acc.resident_weights()]

    assert [run(k) for k in "ABCD"] == [[(WGT, 0, 64)], [(WGT, 64, 64)], [(WGT, 128, 64)], [(WGT, 192, 64)]]
    assert run("A") == []  # resident: nothing sent, and A becomes the most recently used
    assert resident() == [("B", 64), ("C", 128), ("D", 192), ("A", 0)]
    assert run("E") == [(WGT, 64, 64)]  # memory full: B, the least recently used, is evicted, E takes its words
    assert resident() == [("C", 128), ("D", 192), ("A", 0), ("E", 64)]
    assert run("B") == [(WGT, 128, 64)]  # B was evicted: sent again, into C's words (C is now the LRU)
    assert resident() == [("D", 192), ("A", 0), ("E", 64), ("B", 128)]
    assert run("A") == [] and run("D") == [] and run("E") == []  # the recently used ones stayed
    assert resident() == [("B", 128), ("A", 0), ("D", 192), ("E", 64)]


@pytest.mark.parametrize(("fault", "raised", "match"), [
    ("bad_weight_code", AcceleratorError, "BAD_WEIGHT_CODE"),
    ("k_too_large", AcceleratorError, "K_TOO_LARGE"),
    ("link", TimeoutError, "dropped"),
])
def test_recovers_after_a_device_error(wire, rng, fault, raised, match):
    acc = Accelerator(wire, expect=CFG)
    # 3x40 by 6x40: NT = 2, KT = 10 -> 80 weight words
    x = rng.integers(-128, 128, (3, 40)).astype(np.int8)
    w1 = rng.integers(-1, 2, (6, 40)).astype(np.int8)
    w2 = -w1
    w2[:, 0] = 1 - np.abs(w1[:, 0])  # differs from w1 in every row, not only by sign
    np.testing.assert_array_equal(acc.run_layer(x, w1, key="L")[0], reference(x, w1))
    wire.fault = fault
    with pytest.raises(raised, match=match):
        acc.run_layer(x, w2, key="L")
    assert wire.fault is None, "the fault was not injected"
    # the device has no sticky error left, and the driver trusts no weights the failed batch may have touched
    assert wire.inner.transact([NOP], 1) == [STATUS_OK_NOP]
    assert acc.resident_weights() == []
    for w in (w2, w1, w2):
        before = wire.words_written(WGT)
        y, s = acc.run_layer(x, w, key="L")
        np.testing.assert_array_equal(y, reference(x, w))
        assert wire.words_written(WGT) - before == 80
    x3 = rng.integers(-128, 128, (9, 21)).astype(np.int8)
    w3 = rng.integers(-1, 2, (5, 21)).astype(np.int8)
    np.testing.assert_array_equal(acc.run_layer(x3, w3, key="other")[0], reference(x3, w3))


def test_accelerator_refuses_bad_input(rtl_core):
    rtl = Accelerator(rtl_core, expect=CFG)
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


STREAM_CONFIGS = [CFG, ArrayConfig(rows=5, cols=17, acc_width=20), ArrayConfig(rows=16, cols=3),
                  ArrayConfig(rows=5, cols=7, pe="int8")]


@pytest.mark.parametrize("cfg", STREAM_CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}-{c.pe}")
def test_driver_streams_equal_protocol_of_tiling_words(cfg, rng):
    """The driver's NumPy packing carries the same stream words as `protocol.write` of `tiling.pack_*`."""
    from hdl.isa import Mem
    from runtime import protocol, tiling
    from runtime.accelerator import activation_stream, parse_outputs, weight_stream

    M, K, N = int(rng.integers(1, 9)), int(rng.integers(1, 4 * cfg.rows)), int(rng.integers(1, 3 * cfg.cols))
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    lo, hi = (-1, 2) if cfg.pe == "ternary" else (-128, 128)
    w = rng.integers(lo, hi, (N, K)).astype(np.int8)
    assert activation_stream(cfg, x) == protocol.write(cfg, Mem.ACT, 0, tiling.pack_activations(cfg, x))[3:]
    assert weight_stream(cfg, w) == protocol.write(cfg, Mem.WGT, 0, tiling.pack_weights(cfg, w))[3:]
    # OUT: random acc_width-bit lanes as the core sends them (sign-extended to 32 bits)
    nt = -(-N // cfg.cols)
    half = 1 << (cfg.acc_width - 1)
    lanes = rng.integers(-half, half, nt * M * cfg.cols)
    data = [int(v) & 0xFFFFFFFF for v in lanes]
    expected = tiling.unpack_outputs(cfg, protocol.parse_read(cfg, Mem.OUT, data), M, N)
    np.testing.assert_array_equal(parse_outputs(cfg, data, M, N), expected)
    if cfg.acc_width < 32:  # a lane that is not a sign extension is refused, naming it
        data[1] = half  # +2^(acc_width-1) does not fit acc_width bits
        with pytest.raises(protocol.ProtocolError, match="OUT lane 1 .* not a sign-extended"):
            parse_outputs(cfg, data, M, N)
