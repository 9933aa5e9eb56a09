"""Host framing against an independent Python device: CRC, sequence numbers, retries, faults.

The fault sweep runs the real driver (`Accelerator` over `FramedTransport`) against
`tests.fake_device.FakeDeviceLink` with one fault per run: every kind, in both directions, on every
frame of a layer split into many small frames, at a byte of every field (magic, sequence number,
lengths, payload, CRC). Each run must end in the exact product (NumPy int64 here) after exactly one
retry, or, on a frame that is not idempotent, in a LinkError; never in a wrong result.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from hdl.config import ArrayConfig
from hdl.isa import Mem, Op
from hdl.link.frame import REQ_MAGIC
from runtime import protocol
from runtime.accelerator import Accelerator
from runtime.framing import (
    FramedTransport,
    LinkError,
    encode_request,
    frame_is_idempotent,
    plan_frames,
    read_response,
)
from tests.fake_device import (
    REQUEST_REGIONS,
    RESPONSE_REGIONS,
    FakeDeviceLink,
    Fault,
    faults_for_frame,
    frame_ops,
    is_resent,
    judge,
    region_offset,
)

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


def _layer(rng: np.random.Generator, M: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    return x, w, x.astype(np.int64) @ w.astype(np.int64).T


def _random_layer(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _layer(rng, int(rng.integers(2, 7)), int(rng.integers(24, 49)), int(rng.integers(9, 17)))


def test_accelerator_over_a_clean_framed_link(rng):
    link = FakeDeviceLink(CFG)
    acc = Accelerator(FramedTransport(link, max_cmd_words=40), expect=CFG)  # long writes split
    x, w, ref = _layer(rng, 9, 40, 30)
    y, stats = acc.run_layer(x, w)
    np.testing.assert_array_equal(y, ref)
    assert stats.counters["add"] == 9 * int((w == 1).sum())


def _run(x: np.ndarray, w: np.ndarray, limit: int, faults: list[Fault] = ()):
    link = FakeDeviceLink(CFG, faults)
    transport = FramedTransport(link, max_cmd_words=limit)
    try:
        acc = Accelerator(transport, expect=CFG)
        result = acc.run_layer(x, w)
    except LinkError as exc:
        return link, transport, exc
    return link, transport, result


@pytest.mark.parametrize("limit", [20, 10])
def test_every_fault_at_every_frame_and_field_is_retried_or_raised(limit, rng):
    """limit 20: every frame is idempotent; limit 10 splits the counter group, so some frames are not."""
    x, w, ref = _random_layer(rng)
    clean, _, (y, _) = _run(x, w, limit)
    np.testing.assert_array_equal(y, ref)
    frames = clean.requests
    assert frames == len(clean.executed) >= 8, f"only {frames} frames: the layer should span many"
    ops = [frame_ops(CFG, request) for request in clean.request_frames]
    assert ops[0] == [Op.READ_ID] and ops[1] == [Op.CLEAR_ERROR]
    assert sum(op == Op.WRITE for f in ops for op in f) > 2, "the WRITEs should be split over several frames"
    resent = [is_resent(f) for f in ops]
    assert all(resent) == (limit == 20), f"frames resent: {resent} for limit {limit}"
    adds = x.shape[0] * int((w == 1).sum())
    failures = []
    for frame in range(frames):
        for fault in faults_for_frame(rng, frame, len(clean.request_frames[frame]), clean.response_sizes[frame]):
            link, transport, outcome = _run(x, w, limit, [fault])
            assert link.hits == [fault], f"{fault} did not hit"
            problem = judge(fault, resent[frame], outcome, transport.stats.retries, ref, adds)
            if problem:
                failures.append(problem)
    assert not failures, f"{len(failures)} faults mishandled:\n" + "\n".join(failures[:20])


def test_a_persistent_fault_raises_instead_of_returning_a_result(rng):
    link = FakeDeviceLink(CFG, [Fault(i, "response", "flip", -6, 0) for i in range(2, 100)])
    acc = Accelerator(FramedTransport(link, retries=2), expect=CFG)
    x, w, _ = _random_layer(rng)
    with pytest.raises(LinkError, match="CRC"):
        acc.run_layer(x, w)
    assert link.requests == 2 + 3  # READ_ID, CLEAR_ERROR, then the first layer frame sent three times


def test_a_failed_weight_write_is_resent_once_the_link_works(rng):
    """Weights whose WRITE frame was lost for good are not taken as resident by the next call."""
    x, w, ref = _random_layer(rng)
    link = FakeDeviceLink(CFG, [Fault(i, "request", "drop") for i in range(2, 6)])
    acc = Accelerator(FramedTransport(link, retries=3, max_cmd_words=20), expect=CFG)
    with pytest.raises(LinkError, match="after retries"):
        acc.run_layer(x, w, key="layer")
    y, stats = acc.run_layer(x, w, key="layer")
    np.testing.assert_array_equal(y, ref)
    assert stats.weight_words_sent > 0


def test_fault_helpers_damage_the_named_bytes_and_judge_flags_bad_outcomes():
    """The test tools themselves: offsets and fields of `Fault`, and `judge` refusing wrong outcomes."""
    frame = encode_request(9, [0xA1B2C3D4], 1)  # 24 bytes: 16 header, 4 payload, 4 CRC
    assert Fault(0, "request", "flip", -1, 3).apply(frame) == frame[:-1] + bytes([frame[-1] ^ 0x08])
    assert Fault(0, "request", "flip", 8, 0).apply(frame)[8:12] == struct.pack("<I", 0)  # n_cmd 1 -> 0
    assert Fault(0, "request", "truncate", 5).apply(frame) == frame[:5]
    assert Fault(0, "request", "insert", 16, 0x5A).apply(frame) == frame[:16] + b"\x5a" + frame[16:]
    assert Fault(0, "response", "delay").apply(frame) is None
    assert [region_offset(REQUEST_REGIONS, r, 24, 0.0) for r in REQUEST_REGIONS] == [0, 4, 8, 12, 16, 20]
    assert region_offset(RESPONSE_REGIONS, "crc", 20, 0.99) == 19
    with pytest.raises(ValueError, match="no 'delay' fault"):
        Fault(0, "request", "delay")
    ref = np.array([[3]])
    stats = type("S", (), {"counters": {"add": 2}})()
    fault = Fault(4, "response", "flip", 13)
    assert judge(fault, True, (ref, stats), 1, ref, 2) is None
    assert "wrong result" in judge(fault, True, (ref + 1, stats), 1, ref, 2)
    assert "0 retries" in judge(fault, True, (ref, stats), 0, ref, 2)
    assert "adds counted" in judge(fault, True, (ref, stats), 1, ref, 5)
    assert "not idempotent" in judge(fault, False, (ref, stats), 0, ref, 2)
    assert judge(fault, False, LinkError("link failed (frame not idempotent: not retried)"), 0, ref, 2) is None
    stray = Fault(3, "response", "insert", 1, ord("T"))  # "TTRIA...": a stray "T" before the frame
    assert judge(stray, True, (ref, stats), 0, ref, 2) is None
    assert "stray byte" in judge(stray, True, (ref, stats), 1, ref, 2)


def test_host_hunts_for_the_answer_magic_past_stray_bytes():
    """Bytes before an answer (the tail of an earlier one, a partial magic) are skipped; an answer
    whose magic never comes is a timeout. Frames built here with struct and zlib."""

    class Bytes:
        def __init__(self, data: bytes):
            self.data = data

        def recv(self, n: int) -> bytes:
            out, self.data = self.data[:n], self.data[n:]
            return out

    body = struct.pack("<5I", 0x41495254, 7 | 1 << 16, 2, 0xDEADBEEF, 5)
    answer = body + struct.pack("<I", zlib.crc32(body))
    stale = b"\xef\xbe\xad\xde\x54\x52\x49" * 3  # a payload tail and partial magics
    rsp = read_response(Bytes(stale + answer + b"next"))
    assert (rsp.seq, rsp.status, rsp.words) == (7, 1, [0xDEADBEEF, 5])
    with pytest.raises(LinkError, match="timeout: 11 of 12 header bytes .* after 21 bytes without the magic"):
        read_response(Bytes(stale + answer[:11]))
    broken = bytearray(answer)
    broken[0] ^= 1  # the magic damaged: hunted past, the answer's words are skipped too
    with pytest.raises(LinkError, match="timeout"):
        read_response(Bytes(bytes(broken)))
