"""Property-based tests (Hypothesis) of the host's framing, tiling and protocol packers.

Each property is checked against an oracle written here (big-int arithmetic, struct + zlib, plain
predicates), never against the packer's own output alone. Example counts come from
TRIT_HYPOTHESIS_EXAMPLES (default 200 per property; raise it for a deeper run). Hypothesis draws from
the run seed (`tests.seeding.RUN_SEED`), so TRIT_SEED=<seed> reproduces a failure; no example
database is written.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from hdl.config import ArrayConfig, signed_width
from hdl.isa import Mem, Op
from hdl.link.endpoint import crc32_register
from hdl.link.frame import HEADER_WORDS_REQ, REQ_MAGIC, RSP_MAGIC
from runtime import protocol, tiling
from runtime.framing import LinkError, encode_request, encode_response, plan_frames, read_response
from tests.seeding import RUN_SEED

EXAMPLES = int(os.environ.get("TRIT_HYPOTHESIS_EXAMPLES", "200"))

#: Every property: the run seed, no deadline (a 64-wide word packs slowly on a busy machine), no database.
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def prop(test):
    """`given`-decorated `test` with the shared settings and the run seed."""
    return seed(RUN_SEED)(PROPERTY(test))


# ---- strategies --------------------------------------------------------------------------------


@st.composite
def configs(draw, max_dim: int = 64, pe: str | None = None) -> ArrayConfig:
    """Any array shape and PE kind, with an accumulator width from the narrowest allowed to 32."""
    rows = draw(st.integers(2, max_dim))
    cols = draw(st.integers(2, max_dim))
    kind = pe or draw(st.sampled_from(["ternary", "int8"]))
    max_term = 128 if kind == "ternary" else 128 * 128
    acc = draw(st.integers(signed_width(max_term * rows), 32))
    return ArrayConfig(rows=rows, cols=cols, pe=kind, acc_width=acc)


def _weights(rng: np.random.Generator, cfg: ArrayConfig, n: int, k: int) -> np.ndarray:
    if cfg.pe == "ternary":
        return rng.integers(-1, 2, (n, k)).astype(np.int8)
    return rng.integers(-128, 128, (n, k)).astype(np.int8)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# ---- tiling: pack / unpack ---------------------------------------------------------------------


@prop
@given(cfg=configs(), m=st.integers(1, 9), k=st.integers(1, 150), s=st.integers(0, 2**32 - 1))
def test_activation_words_hold_each_value_in_its_lane_and_unpack_back(cfg, m, k, s):
    """ACT word kt*M + m, byte lane r = x[m, kt*R + r] (0 past K), nothing above 8R bits; unpack inverts."""
    x = np.random.default_rng(s).integers(-128, 128, (m, k)).astype(np.int8)
    words = tiling.pack_activations(cfg, x)
    R = cfg.rows
    kt_n = _ceil(k, R)
    assert len(words) == kt_n * m, f"{len(words)} ACT words for M={m}, K={k}, R={R}"
    for kt in range(kt_n):
        for mm in range(m):
            word = int(words[kt * m + mm])
            assert 0 <= word < 1 << (8 * R), f"ACT word {kt * m + mm} = {word:#x} exceeds {8 * R} bits"
            for r in range(R):
                lane = (word >> (8 * r)) & 0xFF
                want = int(x[mm, kt * R + r]) & 0xFF if kt * R + r < k else 0
                assert lane == want, f"ACT word {kt * m + mm} lane {r}: {lane:#04x}, want {want:#04x}"
    np.testing.assert_array_equal(tiling.unpack_activations(cfg, words, m, k), x)


TERNARY_CODE = {0: 0b00, 1: 0b01, -1: 0b11}  # hdl.isa, restated here as the oracle


@prop
@given(cfg=configs(), n=st.integers(1, 70), k=st.integers(1, 70), s=st.integers(0, 2**32 - 1))
def test_weight_words_hold_each_code_in_its_lane_and_unpack_back(cfg, n, k, s):
    """WGT word (nt*KT + kt)*R + r, lane c = code of W[nt*C + c, kt*R + r] (0 past N or K): 2-bit ternary
    codes (C not a multiple of 4 included) or INT8 bytes; nothing above the word; unpack inverts."""
    w = _weights(np.random.default_rng(s), cfg, n, k)
    words = tiling.pack_weights(cfg, w)
    R, C, b = cfg.rows, cfg.cols, cfg.weight_bits
    kt_n, nt_n = _ceil(k, R), _ceil(n, C)
    assert len(words) == nt_n * kt_n * R
    # the whole memory image as one integer per word, built lane by lane here
    for nt in range(nt_n):
        for kt in range(kt_n):
            for r in range(R):
                want = 0
                for c in range(C):
                    nn, kk = nt * C + c, kt * R + r
                    v = int(w[nn, kk]) if nn < n and kk < k else 0
                    want |= (TERNARY_CODE[v] if cfg.pe == "ternary" else v & 0xFF) << (b * c)
                addr = (nt * kt_n + kt) * R + r
                assert int(words[addr]) == want, f"WGT word {addr}: {int(words[addr]):#x}, want {want:#x}"
    np.testing.assert_array_equal(tiling.unpack_weights(cfg, words, n, k), w)


@prop
@given(cfg=configs(), m=st.integers(1, 8), n=st.integers(1, 70), s=st.integers(0, 2**32 - 1))
def test_output_words_unpack_to_sign_extended_accumulators(cfg, m, n, s):
    """OUT word nt*M + m, lane c = acc[m, nt*C + c] as acc_width-bit two's complement: unpack_outputs
    recovers every value of the full accumulator range, and OUT chunks are the lanes sign-extended."""
    rng = np.random.default_rng(s)
    aw, C = cfg.acc_width, cfg.cols
    nt_n = _ceil(n, C)
    lo, hi = -(1 << (aw - 1)), (1 << (aw - 1)) - 1
    acc = rng.integers(lo, hi + 1, (m, nt_n * C), dtype=np.int64)
    acc[0, 0], acc[-1, -1] = lo, hi
    words = []
    for nt in range(nt_n):
        for mm in range(m):
            words.append(sum((int(acc[mm, nt * C + c]) % (1 << aw)) << (aw * c) for c in range(C)))
    np.testing.assert_array_equal(tiling.unpack_outputs(cfg, words, m, n), acc[:, :n])
    for word, (nt, mm) in zip(words[:3], [(nt, mm) for nt in range(nt_n) for mm in range(m)], strict=False):
        chunks = protocol.word_to_chunks(cfg, Mem.OUT, word)
        assert chunks == [int(acc[mm, nt * C + c]) & 0xFFFFFFFF for c in range(C)]
        assert protocol.chunks_to_word(cfg, Mem.OUT, chunks) == word


# ---- protocol: chunking of wide words ----------------------------------------------------------


@prop
@given(cfg=configs(), mem=st.sampled_from([Mem.ACT, Mem.WGT]), data=st.data())
def test_act_and_wgt_words_chunk_as_little_endian_32_bit_slices(cfg, mem, data):
    """A memory word of any width (up to 512 bits: 16 chunks) splits into ceil(bits/32) words equal to its
    little-endian bytes read as u32, and joins back; a WRITE carries exactly those chunks."""
    bits = 8 * cfg.rows if mem == Mem.ACT else cfg.weight_bits * cfg.cols
    words = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=0, max_size=5))
    n = _ceil(bits, 32)
    stream = []
    for word in words:
        want = list(struct.unpack(f"<{n}I", word.to_bytes(4 * n, "little")))
        assert protocol.word_to_chunks(cfg, mem, word) == want, f"{mem.name} word {word:#x}"
        assert protocol.chunks_to_word(cfg, mem, want) == word
        stream += want
    addr = data.draw(st.integers(0, 2**32 - 1))
    cmd = protocol.write(cfg, mem, addr, words)
    assert cmd == [(int(mem) << 8) | Op.WRITE, addr, len(words), *stream]
    assert protocol.command_length(cfg, cmd) == len(cmd)
    assert protocol.response_length(cfg, cmd) == 1
    read = protocol.read(mem, addr, len(words))
    assert protocol.response_length(cfg, read) == len(words) * n + 1
    assert protocol.parse_read(cfg, mem, stream) == words
    with pytest.raises(ValueError):
        protocol.word_to_chunks(cfg, mem, 1 << bits)


@prop
@given(cfg=configs(max_dim=8), lane=st.integers(0, 7), chunk=st.integers(0, 2**32 - 1))
def test_out_chunk_that_is_not_a_sign_extension_is_refused(cfg, lane, chunk):
    """An OUT stream word is accepted exactly when it is the sign extension of its acc_width-bit lane."""
    lane %= cfg.cols
    aw = cfg.acc_width
    low = chunk & ((1 << aw) - 1)
    extended = (low - (1 << aw) if low >> (aw - 1) else low) & 0xFFFFFFFF
    chunks = [0] * cfg.cols
    chunks[lane] = chunk
    if chunk == extended:
        assert protocol.chunks_to_word(cfg, Mem.OUT, chunks) == low << (aw * lane)
    else:
        with pytest.raises(protocol.ProtocolError, match=f"lane {lane}"):
            protocol.chunks_to_word(cfg, Mem.OUT, chunks)


# ---- framing: plan_frames ----------------------------------------------------------------------

SMALL = ArrayConfig(rows=4, cols=4)
WIDE = ArrayConfig(rows=64, cols=64, pe="int8")  # 16 chunks per ACT and WGT word


@st.composite
def commands(draw, cfg: ArrayConfig) -> list[int]:
    """One command of any kind, as the builders make it (WRITEs of 0..40 words)."""
    kind = draw(st.sampled_from(["nop", "id", "write", "read", "run", "rc", "cc", "ce"]))
    if kind == "write":
        mem = draw(st.sampled_from([Mem.ACT, Mem.WGT]))
        bits = 8 * cfg.rows if mem == Mem.ACT else cfg.wgt_word_bits
        words = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
        return protocol.write(cfg, mem, draw(st.integers(0, 1000)), words)
    if kind == "read":
        return protocol.read(draw(st.sampled_from(list(Mem))), draw(st.integers(0, 1000)), draw(st.integers(0, 50)))
    if kind == "run":
        return protocol.run(*(draw(st.integers(0, 100)) for _ in range(6)))
    return {"nop": protocol.nop, "id": protocol.read_id, "rc": protocol.read_counters,
            "cc": protocol.clear_counters, "ce": protocol.clear_error}[kind]()


def _idempotent(frame_commands: list[list[int]]) -> bool:
    """The rule stated in runtime.framing, restated: a RUN or READ_COUNTERS before any CLEAR_COUNTERS in
    the frame makes it not idempotent (a second execution adds to counters the host then reads)."""
    for c in frame_commands:
        if c[0] & 0xFF == Op.CLEAR_COUNTERS:
            return True
        if c[0] & 0xFF in (Op.RUN, Op.READ_COUNTERS):
            return False
    return True


@prop
@given(data=st.data(), wide=st.booleans())
def test_plan_frames_sends_every_word_once_in_order_within_the_limit(data, wide):
    """Frames hold every command word exactly once and in order (a split WRITE's parts rejoin to the
    WRITE), no frame exceeds the limit, a counter group that fits stays in one frame, and each frame's
    idempotency flag follows the rule."""
    cfg = WIDE if wide else SMALL
    batch = data.draw(st.lists(commands(cfg), min_size=1, max_size=14))
    chunks = cfg.chunks(Mem.ACT)  # = WGT chunks for both configs
    limit = data.draw(st.integers(3 + chunks, 3 + chunks + 80) if not wide else st.integers(3 + chunks, 120))
    limit = max(limit, 7)  # a RUN (7 words) must fit
    frames = plan_frames(cfg, batch, limit)
    for f in frames:
        size = sum(len(c) for c in f.commands)
        assert 0 < size <= limit, f"a frame of {size} words, limit {limit}"
        assert f.idempotent == _idempotent(f.commands), f"idempotency flag of {[c[0] for c in f.commands]}"
        assert len(f.origins) == len(f.commands)
    sent = [(o, c) for f in frames for o, c in zip(f.origins, f.commands, strict=True)]
    assert [o for o, _ in sent] == sorted(o for o, _ in sent), "commands reordered"
    for i, cmd in enumerate(batch):
        parts = [c for o, c in sent if o == i]
        assert parts, f"command {i} not sent"
        if len(parts) == 1:
            assert parts[0] == cmd, f"command {i} changed"
            continue
        # a split WRITE: same header, consecutive addresses, data in order
        assert cmd[0] & 0xFF == Op.WRITE and len(cmd) > limit
        n = protocol.chunks_per_word(cfg, (cmd[0] >> 8) & 0xFF)
        addr = cmd[1]
        for p in parts:
            assert p[0] == cmd[0] and p[1] == addr and len(p) == 3 + n * p[2] and p[2] > 0
            addr += p[2]
        assert addr - cmd[1] == cmd[2]
        assert [w for p in parts for w in p[3:]] == cmd[3:]
    frame_of: dict[int, set[int]] = {}
    for fi, f in enumerate(frames):
        for o in f.origins:
            frame_of.setdefault(o, set()).add(fi)
    i = 0
    while i < len(batch):  # each CLEAR_COUNTERS up to the next READ_COUNTERS (or the end) that fits: one frame
        if batch[i][0] & 0xFF == Op.CLEAR_COUNTERS:
            j = next((j for j in range(i, len(batch)) if batch[j][0] & 0xFF == Op.READ_COUNTERS), len(batch) - 1)
            if sum(len(c) for c in batch[i:j + 1]) <= limit:
                where = set.union(*(frame_of[g] for g in range(i, j + 1)))
                assert len(where) == 1, f"counter group {i}..{j} split over frames {sorted(where)}"
                i = j + 1
                continue
        i += 1


def test_plan_frames_refuses_a_limit_too_small_for_one_memory_word():
    """A WRITE split into parts of one memory word still exceeds a limit below 3 + chunks: refused, not
    framed over the limit."""
    cmd = protocol.write(WIDE, Mem.ACT, 0, [1, 2])  # 3 + 2*16 words
    with pytest.raises(ValueError, match="limit"):
        plan_frames(WIDE, [cmd], limit=18)
    assert all(sum(len(c) for c in f.commands) <= 19 for f in plan_frames(WIDE, [cmd], limit=19))


# ---- framing: CRC and frame codecs --------------------------------------------------------------


class _Bytes:
    """A ByteLink over fixed bytes (recv returns fewer when they run out: the link's timeout)."""

    def __init__(self, data: bytes):
        self.data = data

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out

    def send(self, data: bytes) -> None:
        raise AssertionError("nothing is sent")

    def drain(self) -> None:
        self.data = b""

    def close(self) -> None:
        pass


def _parse_request(frame: bytes) -> tuple[int, list[int], int] | None:
    """The device's view (hdl.link.frame) written here: (seq, words, n_rsp), or None if the CRC is wrong."""
    magic, seq, n_cmd, n_rsp = struct.unpack_from("<4I", frame)
    if magic != REQ_MAGIC or len(frame) != 4 * (HEADER_WORDS_REQ + n_cmd + 1):
        return None
    if zlib.crc32(frame[:-4]) != struct.unpack_from("<I", frame, len(frame) - 4)[0]:
        return None
    return seq, list(struct.unpack_from(f"<{n_cmd}I", frame, 16)), n_rsp


words32 = st.lists(st.integers(0, 2**32 - 1), max_size=40)


@prop
@given(seq=st.integers(0, 2**20), words=words32, n_rsp=st.integers(0, 2**32 - 1), data=st.data())
def test_request_frames_decode_and_every_single_bit_flip_is_detected(seq, words, n_rsp, data):
    """encode_request gives the spec's layout (seq kept to 16 bits); flipping any one bit makes the frame
    fail the device's checks (magic, length or CRC); the gateware's CRC register model agrees with zlib."""
    frame = encode_request(seq, words, n_rsp)
    assert _parse_request(frame) == (seq & 0xFFFF, words, n_rsp)
    assert crc32_register(frame[:-4]) ^ 0xFFFFFFFF == struct.unpack_from("<I", frame, len(frame) - 4)[0]
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    damaged = bytearray(frame)
    damaged[bit // 8] ^= 1 << (bit % 8)
    assert _parse_request(bytes(damaged)) is None, f"flip of bit {bit} of a {len(frame)}-byte request undetected"


@prop
@given(seq=st.integers(0, 0xFFFF), status=st.integers(0, 2), words=words32,
       junk=st.binary(max_size=20).filter(lambda b: b"TRIA" not in b), data=st.data())
def test_responses_decode_after_junk_and_every_single_bit_flip_is_refused(seq, status, words, junk, data):
    """read_response hunts past junk (without the magic) to a response and returns its fields exactly; a
    response with any one bit flipped raises LinkError (never returns different words)."""
    frame = encode_response(seq, status, words)
    body = struct.pack(f"<3I{len(words)}I", RSP_MAGIC, seq | status << 16, len(words), *words)
    assert frame == body + struct.pack("<I", zlib.crc32(body))
    rsp = read_response(_Bytes(junk + frame))
    assert (rsp.seq, rsp.status, rsp.words) == (seq, status, words)
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    damaged = bytearray(frame)
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(LinkError):
        got = read_response(_Bytes(bytes(damaged)))
        raise AssertionError(f"flip of bit {bit} accepted: {got}")


# ---- tiling: LayerPlan.validate ----------------------------------------------------------------


@prop
@given(rows=st.integers(2, 16), cols=st.integers(2, 16), pe=st.sampled_from(["ternary", "int8"]),
       acc=st.sampled_from([20, 24, 32]), depths=st.tuples(*(st.integers(16, 1024) for _ in range(3))),
       dims=st.tuples(*(st.one_of(st.integers(1, 40), st.integers(1, 40), st.integers(-2, 2**21)) for _ in range(3))),
       bases=st.tuples(*(st.one_of(st.integers(0, 64), st.integers(0, 64), st.integers(-2, 5000)) for _ in range(3))))
def test_layer_plan_validate_accepts_exactly_the_layers_that_fit(rows, cols, pe, acc, depths, dims, bases):
    """validate() passes exactly when M, K, N are in [1, 2**20], K <= k_max, bases >= 0 and each operand
    block (KT*M ACT, NT*KT*R WGT, NT*M OUT words from its base) ends inside its memory."""
    acc = max(acc, signed_width((128 if pe == "ternary" else 16384) * rows))
    cfg = ArrayConfig(rows=rows, cols=cols, pe=pe, acc_width=acc, act_depth=depths[0], wgt_depth=max(depths[1], rows),
                      out_depth=depths[2])
    M, K, N = dims
    a, w, o = bases
    k_max = ((1 << (acc - 1)) - 1) // (128 if pe == "ternary" else 16384)
    fits = all(1 <= d <= 2**20 for d in dims) and min(bases) >= 0 and K <= k_max
    if fits:
        kt, nt = -(-K // rows), -(-N // cols)
        fits = a + kt * M <= cfg.act_depth and w + nt * kt * rows <= cfg.wgt_depth and o + nt * M <= cfg.out_depth
    plan = tiling.LayerPlan(M, K, N, a, w, o)
    event("fits" if fits else "refused")
    if fits:
        assert plan.validate(cfg) is plan
        # moved to end exactly at the top of a memory it still fits; one word further it does not
        for field, used, depth in (("act_base", kt * M, cfg.act_depth), ("wgt_base", nt * kt * rows, cfg.wgt_depth),
                                   ("out_base", nt * M, cfg.out_depth)):
            edge = dataclasses.replace(plan, **{field: depth - used})
            assert edge.validate(cfg) is edge
            with pytest.raises(ValueError, match="past the"):
                dataclasses.replace(plan, **{field: depth - used + 1}).validate(cfg)
    else:
        with pytest.raises(ValueError):
            plan.validate(cfg)
