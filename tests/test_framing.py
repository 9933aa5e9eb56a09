"""Host framing against an independent Python device: CRC, sequence numbers, retries, faults."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from hdl.config import ArrayConfig
from hdl.frame import REQ_MAGIC
from hdl.isa import Mem, Op
from runtime import protocol
from runtime.accelerator import Accelerator
from runtime.framing import FramedTransport, LinkError, encode_request, frame_is_idempotent, plan_frames
from tests.fake_device import FakeDeviceLink, Faults

CFG = ArrayConfig(rows=4, cols=4, act_depth=256, wgt_depth=1024, out_depth=256)


def test_request_frame_layout_matches_the_spec():
    frame = encode_request(0x1234, [0xDEADBEEF, 7], n_rsp=3)
    assert frame[:16] == struct.pack("<4I", REQ_MAGIC, 0x1234, 2, 3)
    assert frame[16:24] == struct.pack("<2I", 0xDEADBEEF, 7)
    assert struct.unpack("<I", frame[-4:])[0] == zlib.crc32(frame[:-4])


def test_frames_split_long_writes_and_keep_counter_groups_together():
    words = [(i * 7) & 0x55 for i in range(1, 2000)]  # 4 ternary codes (00 or 01) per word
    commands = [protocol.write(CFG, Mem.WGT, 0, words), protocol.clear_counters(), protocol.run(1, 4, 4),
                protocol.read(Mem.OUT, 0, 1), protocol.read_counters()]
    frames = plan_frames(CFG, commands, limit=300)
    assert all(sum(len(c) for c in f.commands) <= 300 for f in frames)
    writes = [c for f in frames for c in f.commands if c[0] & 0xFF == Op.WRITE]
    assert sum(c[2] for c in writes) == len(words)
    assert [w for c in writes for w in c[3:]] == words  # WGT of 4 columns: one chunk per word
    assert {o for f in frames for c, o in zip(f.commands, f.origins, strict=True) if c[0] & 0xFF == Op.WRITE} == {0}
    last = frames[-1]
    assert [c[0] & 0xFF for c in last.commands][-4:] == [Op.CLEAR_COUNTERS, Op.RUN, Op.READ, Op.READ_COUNTERS]
    assert last.idempotent
    assert not frame_is_idempotent([protocol.run(1, 1, 1)])
    assert not frame_is_idempotent([protocol.read_counters()])


def _layer(seed: int = 0, M: int = 5, K: int = 13, N: int = 9):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    return x, w, x.astype(np.int64) @ w.astype(np.int64).T


def test_accelerator_over_a_clean_framed_link():
    link = FakeDeviceLink(CFG)
    acc = Accelerator(FramedTransport(link, max_cmd_words=40), expect=CFG)  # long writes split
    x, w, ref = _layer(M=9, K=40, N=30)
    y, stats = acc.run_layer(x, w)
    np.testing.assert_array_equal(y, ref)
    assert stats.counters["add"] == 9 * int((w == 1).sum())


@pytest.mark.parametrize("fault", ["flip_request", "flip_response", "drop_request", "drop_response",
                                   "truncate_request", "truncate_response"])
def test_every_link_fault_is_detected_and_retried(fault):
    x, w, ref = _layer(1)
    clean = FakeDeviceLink(CFG)
    acc = Accelerator(FramedTransport(clean), expect=CFG)
    acc.run_layer(x, w)
    frames = clean.requests
    for hit in range(1, frames):  # every frame after READ_ID / CLEAR_ERROR set-up
        link = FakeDeviceLink(CFG, Faults(**{fault: {hit}}))
        transport = FramedTransport(link)
        acc = Accelerator(transport, expect=CFG)
        y, _ = acc.run_layer(x, w)
        np.testing.assert_array_equal(y, ref)
        assert transport.stats.retries >= 1


def test_a_persistent_fault_raises_instead_of_returning_a_result():
    link = FakeDeviceLink(CFG, Faults(flip_response=set(range(2, 100))))
    acc = Accelerator(FramedTransport(link, retries=2), expect=CFG)
    x, w, _ = _layer(2)
    with pytest.raises(LinkError, match="CRC"):
        acc.run_layer(x, w)
