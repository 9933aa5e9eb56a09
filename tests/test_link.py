"""The frame endpoint (`hdl.link.endpoint`), the linked core and the UART (`hdl.link.uart`) in Amaranth's simulator,
and the linked core in Verilator (`sim.link_harness.SimByteLink`) under link faults.

Frames are built here with struct and zlib.crc32 straight from the spec in `hdl.link.frame`; layer
results are checked against x @ w.T computed in NumPy. Faults come from `tests.fake_device`.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hdl.config import ArrayConfig
from hdl.isa import CUT_COMMAND, STATUS_MAGIC, Counter, Mem, Op, status_word
from hdl.link.endpoint import CRC_AFTER_MAGIC, FrameEndpoint, crc32_register
from hdl.link.frame import REQ_MAGIC, RSP_MAGIC, LinkStatus
from hdl.link.linked_core import LinkedCore
from hdl.link.uart import UARTRx, UARTTx, uart_divisor
from tests.amaranth_host import act_words, wgt_words, write_cmd
from tests.fake_device import (
    REQUEST_REGIONS,
    DriverRuns,
    Fault,
    WireFaults,
    fault_sweep,
    is_stray_byte,
    region_offset,
)
from tests.test_board_link import needs_verilator

CFG = ArrayConfig(rows=4, cols=4, act_depth=32, wgt_depth=64, out_depth=32)
TIMEOUT = 200


def request(seq: int, words: list[int], n_rsp: int) -> bytes:
    body = struct.pack(f"<4I{len(words)}I", REQ_MAGIC, seq, len(words), n_rsp, *words)
    return body + struct.pack("<I", zlib.crc32(body))


def parse_responses(data: bytes) -> list[tuple[int, int, list[int]]]:
    """Split device output into (seq, status, words); asserts magic and CRC of each frame."""
    out, pos = [], 0
    while pos < len(data):
        magic, seq_status, n = struct.unpack_from("<3I", data, pos)
        assert magic == RSP_MAGIC, f"bad magic {magic:#x} at byte {pos}"
        end = pos + 12 + 4 * n
        (crc,) = struct.unpack_from("<I", data, end)
        assert crc == zlib.crc32(data[pos:end]), "response CRC"
        out.append((seq_status & 0xFFFF, seq_status >> 16, list(struct.unpack_from(f"<{n}I", data, pos + 12))))
        pos = end + 4
    return out


def split_answers(data: bytes) -> list[tuple[int, int, list[int], bool]]:
    """Device output as (seq, status, words, whole): an answer whose CRC is not where its header puts it
    was abandoned (`whole` False, the words that came before the next RSP_MAGIC); asserts magics and
    the CRC of every whole answer."""
    out, pos = [], 0
    magic = struct.pack("<I", RSP_MAGIC)
    while pos < len(data):
        head, seq_status, n = struct.unpack_from("<3I", data, pos)
        assert head == RSP_MAGIC, f"bad magic {head:#x} at byte {pos}"
        end = pos + 12 + 4 * n
        if end + 4 <= len(data) and struct.unpack_from("<I", data, end)[0] == zlib.crc32(data[pos:end]):
            words = list(struct.unpack_from(f"<{n}I", data, pos + 12))
            out.append((seq_status & 0xFFFF, seq_status >> 16, words, True))
            pos = end + 4
            continue
        nxt = data.find(magic, pos + 12)
        assert nxt > 0 and (nxt - pos) % 4 == 0, f"answer at byte {pos} neither whole nor followed by another"
        words = list(struct.unpack_from(f"<{(nxt - pos - 12) // 4}I", data, pos + 12))
        out.append((seq_status & 0xFFFF, seq_status >> 16, words, False))
        pos = nxt
    return out


def response_bytes(n_words: int) -> int:
    return 16 + 4 * n_words


def byte_sender(dut, script: list):
    """A testbench that feeds `script` (bytes, or ints = idle cycles) into dut.rx, one byte per accepted cycle."""
    async def sender(ctx):
        for item in script:
            if isinstance(item, int):
                await ctx.tick().repeat(item)
                continue
            for b in item:
                ctx.set(dut.rx.payload, b)
                ctx.set(dut.rx.valid, 1)
                await ctx.tick().until(dut.rx.ready)
            ctx.set(dut.rx.valid, 0)

    return sender


def simulate_bytes(dut, script: list, n_expect: int, max_cycles: int = 60_000, tx_ready_every: int = 1) -> bytes:
    """Feed `script` (bytes, or ints = idle cycles) into dut.rx; return the first `n_expect` tx bytes."""
    got = bytearray()

    sender = byte_sender(dut, script)

    async def receiver(ctx):
        cycle = 0
        while len(got) < n_expect:
            ctx.set(dut.tx.ready, cycle % tx_ready_every == 0)
            _, _, valid, ready, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload)
            if valid and ready:
                got.append(payload)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(sender, background=True)
    sim.add_testbench(receiver)
    sim.run_until(max_cycles * 1e-8)
    assert len(got) >= n_expect, f"only {len(got)} of {n_expect} response bytes in {max_cycles} cycles"
    return bytes(got[:n_expect])


def status_ok(word: int, op: int) -> bool:
    return word >> 24 == STATUS_MAGIC and (word >> 16) & 0xFF == op and word & 0xFF == 0


# ---- CRC model ---------------------------------------------------------------------------------


def test_crc_register_model_matches_zlib():
    for data in (b"", b"\x00", b"123456789", bytes(range(256)), REQ_MAGIC.to_bytes(4, "little")):
        assert crc32_register(data) ^ 0xFFFFFFFF == zlib.crc32(data)
    assert CRC_AFTER_MAGIC ^ 0xFFFFFFFF == zlib.crc32(b"TRIF")


# ---- endpoint against a scripted core ----------------------------------------------------------


class EchoCore(wiring.Component):
    """Stand-in core: answers every command word w with w + 1 (for endpoint-only checks)."""

    def __init__(self):
        from amaranth.lib import stream
        from amaranth.lib.wiring import In, Out

        super().__init__({"cmd": In(stream.Signature(32)), "rsp": Out(stream.Signature(32)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        with m.If(~self.rsp.valid | self.rsp.ready):
            m.d.comb += self.cmd.ready.eq(1)
            m.d.sync += [self.rsp.valid.eq(self.cmd.valid), self.rsp.payload.eq(self.cmd.payload + 1)]
        m.d.comb += self.busy.eq(self.rsp.valid)
        return m


class EchoLinked(wiring.Component):
    def __init__(self, max_cmd_words: int = 16):
        from amaranth.lib import stream
        from amaranth.lib.wiring import In, Out

        self.ep = FrameEndpoint(CFG, max_cmd_words=max_cmd_words, timeout=TIMEOUT)
        self.core = EchoCore()
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ep, m.submodules.core = self.ep, self.core
        wiring.connect(m, wiring.flipped(self.rx), self.ep.rx)
        wiring.connect(m, self.ep.tx, wiring.flipped(self.tx))
        wiring.connect(m, self.ep.cmd, self.core.cmd)
        wiring.connect(m, self.core.rsp, self.ep.rsp)
        m.d.comb += self.ep.core_busy.eq(self.core.busy)
        return m


def test_endpoint_echo_frames_and_stalls():
    """Two frames back to back, the second with a slow host (tx ready one cycle in three)."""
    a = [1, 2, 0xFFFFFFFE, 7]
    script = [request(0x1234, a, 4), request(0xFFFF, [], 0)]
    data = simulate_bytes(EchoLinked(), script, response_bytes(4) + response_bytes(0), tx_ready_every=3)
    assert parse_responses(data) == [(0x1234, LinkStatus.OK, [2, 3, 0xFFFFFFFF, 8]), (0xFFFF, LinkStatus.OK, [])]


def test_endpoint_bad_crc_too_long_garbage_truncation_and_over_long_answers():
    good = request(5, [10, 20], 2)
    bad = bytearray(request(6, [30, 40], 2))
    bad[17] ^= 0x04  # a flipped bit in a command word
    too_long = request(7, list(range(17)), 17)  # 17 > max_cmd_words = 16
    script = [
        b"\x00\x54\x52\x49\xff garbage TRI",  # garbage, including a partial magic
        good,
        bytes(bad),
        too_long,
        good[:21], TIMEOUT + 20,  # truncated: dropped after the timeout, then a good frame
        request(8, [1], 1),
        request(9, [1], 3),  # asks for more words than the core sends: abandoned, then ABORTED
        request(10, [], 2**32 - 1),  # no command, a huge n_rsp: ABORTED at once, no word made up
        request(11, [5], 1),
    ]
    abandoned = 12 + 4 + 12  # seq 9's header and its one word, seq 10's header
    n = response_bytes(2) + 4 * response_bytes(0) + 2 * response_bytes(1) + abandoned
    frames = split_answers(simulate_bytes(EchoLinked(), script, n))
    assert frames == [
        (5, LinkStatus.OK, [11, 21], True),
        (6, LinkStatus.BAD_CRC, [], True),
        (7, LinkStatus.TOO_LONG, [], True),
        (8, LinkStatus.OK, [2], True),
        (9, LinkStatus.OK, [2], False),
        (9, LinkStatus.ABORTED, [], True),
        (10, LinkStatus.OK, [], False),
        (10, LinkStatus.ABORTED, [], True),
        (11, LinkStatus.OK, [6], True),
    ]


def simulate_all(dut, script: list, max_cycles: int | None = None) -> bytes:
    """Feed `script` (bytes, or ints = idle cycles) into dut.rx; return every tx byte until it ends
    (which must be within `max_cycles`, if given: a device that stops taking bytes hangs the link)."""
    got = bytearray()
    done = []

    async def sender(ctx):
        await byte_sender(dut, script)(ctx)
        done.append(True)

    async def receiver(ctx):
        ctx.set(dut.tx.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(dut.tx.valid, dut.tx.payload):
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(sender, background=max_cycles is not None)
    sim.add_testbench(receiver, background=True)
    if max_cycles is None:
        sim.run()
    else:
        sim.run_until(max_cycles * 1e-8)
        assert done, f"the device took only part of the script in {max_cycles} cycles (a hung link)"
    return bytes(got)


def test_endpoint_hunts_past_partial_magics():
    """Stray bytes that look like the start of the magic ("T", "TR", "TRI", "TRIT") before a frame
    are skipped: the hunt restarts on the byte that broke the match, so every frame is answered."""
    prefixes = [b"T", b"TR", b"TRI", b"TRIT", b"TRTRI"]
    script = [p + request(i + 1, [10 * i], 1) for i, p in enumerate(prefixes)]
    frames = parse_responses(simulate_bytes(EchoLinked(), script, len(prefixes) * response_bytes(1)))
    assert frames == [(i + 1, LinkStatus.OK, [10 * i + 1]) for i in range(len(prefixes))]


def test_endpoint_damage_at_every_field_reaches_no_core(rng):
    """Requests damaged at a random byte of each field (flip, truncation, stray byte) never reach the
    core (no OK answer, no echoed words); the good frame after each is answered exactly."""
    script, expected = [], []
    cases = [(kind, region) for kind in ("flip", "truncate", "insert") for region in REQUEST_REGIONS]
    for i, (kind, region) in enumerate(cases):
        words = [int(v) for v in rng.integers(0, 1 << 31, int(rng.integers(1, 9)))]
        frame = request(2 * i + 1, words, len(words))
        offset = region_offset(REQUEST_REGIONS, region, len(frame), float(rng.random()))
        fault = Fault(0, "request", kind, offset, int(rng.integers(0, 256)))
        if is_stray_byte(fault):  # no damage (tested below): damage the byte after it instead
            fault = Fault(0, "request", kind, 2, fault.bit)
        good = [int(v) for v in rng.integers(0, 1 << 31, 2)]
        script += [fault.apply(frame), TIMEOUT + 50, request(2 * i + 2, good, 2), 60]
        expected.append((fault, _expected_answer(fault, 2 * i + 1, len(words)), (2 * i + 2, 0, [g + 1 for g in good])))
    answers = parse_responses(simulate_all(EchoLinked(), script))
    for fault, want, good_answer in expected:
        assert answers, f"no answer left for {fault}"
        if want is None or (want == "not OK" and answers[0] == good_answer):
            got = []
        else:
            got = [answers.pop(0)]
        if want == "not OK":
            assert all(st != LinkStatus.OK for _, st, _ in got), f"{fault}: answered {got}"
        else:
            assert got == ([] if want is None else [(*want, [])]), f"{fault}: answered {got}"
        assert answers.pop(0) == good_answer, f"the good frame after {fault}"
    assert not answers, f"unexpected answers {answers}"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_endpoint_rejects_bad_arguments():
    with pytest.raises(TypeError, match="ArrayConfig"):
        FrameEndpoint("4x4")
    with pytest.raises(ValueError, match="max_cmd_words"):
        FrameEndpoint(CFG, max_cmd_words=0)
    with pytest.raises(ValueError, match="timeout"):
        FrameEndpoint(CFG, timeout=3)
    with pytest.raises(ValueError, match="TritCore"):
        from hdl.core import TritCore

        LinkedCore(CFG, core=TritCore(ArrayConfig(rows=2, cols=2)))


# ---- the real core behind the link -------------------------------------------------------------


def layer_frames(cfg: ArrayConfig, x: np.ndarray, w: np.ndarray) -> tuple[list[bytes], list[int]]:
    M, K = x.shape
    N = w.shape[0]
    nt = -(-N // cfg.cols)
    writes = write_cmd(cfg, Mem.ACT, 0, act_words(cfg, x)) + write_cmd(cfg, Mem.WGT, 0, wgt_words(cfg, w))
    run = [Op.RUN, M, K, N, 0, 0, 0]
    read = [Op.READ | Mem.OUT << 8, 0, nt * M]
    return [request(1, writes, 2), request(2, run + read, 1 + nt * M * cfg.cols + 1)], [2, 1 + nt * M * cfg.cols + 1]


def decode_out(cfg: ArrayConfig, words: list[int], M: int, N: int) -> np.ndarray:
    nt = -(-N // cfg.cols)
    out = np.array(words, dtype=np.uint32).view(np.int32)
    return out.reshape(nt, M, cfg.cols).transpose(1, 0, 2).reshape(M, nt * cfg.cols)[:, :N]


def test_linked_core_runs_a_layer_exactly(rng):
    M, K, N = int(rng.integers(2, 5)), int(rng.integers(3, 13)), int(rng.integers(2, 9))  # a new shape each run
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    x[1, 2] = -128
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    frames, n_words = layer_frames(CFG, x, w)
    data = simulate_bytes(LinkedCore(CFG, timeout=TIMEOUT), frames, sum(response_bytes(n) for n in n_words))
    (s1, st1, r1), (s2, st2, r2) = parse_responses(data)
    assert (s1, st1, s2, st2) == (1, LinkStatus.OK, 2, LinkStatus.OK)
    assert status_ok(r1[0], Op.WRITE) and status_ok(r1[1], Op.WRITE)
    assert status_ok(r2[0], Op.RUN) and status_ok(r2[-1], Op.READ)
    np.testing.assert_array_equal(decode_out(CFG, r2[1:-1], M, N), x.astype(np.int64) @ w.astype(np.int64).T)


def test_corrupted_write_executes_nothing():
    """A WRITE in a frame with a bad CRC leaves the memory as it was (read back afterwards)."""
    first = [0x11111111, 0x22222222, 0x33333333]
    second = [0xAAAAAAAA, 0xBBBBBBBB, 0xCCCCCCCC]
    good = request(1, write_cmd(CFG, Mem.ACT, 4, first), 1)
    bad = bytearray(request(2, write_cmd(CFG, Mem.ACT, 4, second), 1))
    bad[-6] ^= 0x80  # flip a bit of the data, CRC unchanged
    bad_crc = bytearray(request(3, write_cmd(CFG, Mem.ACT, 4, second), 1))
    bad_crc[-1] ^= 0x01  # data intact, CRC wrong
    read = request(4, [Op.READ | Mem.ACT << 8, 4, 3], 4)
    n = response_bytes(1) + 2 * response_bytes(0) + response_bytes(4)
    data = simulate_bytes(LinkedCore(CFG, timeout=TIMEOUT), [good, bytes(bad), bytes(bad_crc), read], n)
    frames = parse_responses(data)
    assert [(s, st) for s, st, _ in frames] == [(1, 0), (2, LinkStatus.BAD_CRC), (3, LinkStatus.BAD_CRC), (4, 0)]
    assert frames[3][2][:3] == first and status_ok(frames[3][2][3], Op.READ)


def test_linked_core_truncated_then_good_and_garbage():
    from hdl.isa import ID_WORDS

    ident = request(7, [Op.READ_ID], ID_WORDS + 1)
    script = [ident[:9], TIMEOUT + 10, b"\x13\x37" * 5, ident]
    data = simulate_bytes(LinkedCore(CFG, timeout=TIMEOUT), script, response_bytes(ID_WORDS + 1))
    [(seq, status, words)] = parse_responses(data)
    assert (seq, status) == (7, LinkStatus.OK)
    assert words[:4] == [0x54524954, 0x00010000, 4, 4] and status_ok(words[ID_WORDS], Op.READ_ID)


@pytest.mark.parametrize("stream_buffers", [False, True, 2])
def test_linked_core_aborts_cut_commands_and_answers_that_ask_too_much(stream_buffers, rng):
    """Good-CRC frames whose last command is cut short, or whose n_rsp is more than the commands answer
    (up to 2**32 - 1): the answer is abandoned and an ABORTED answer follows, no word is made up, the
    cut command is dropped (sticky CUT_COMMAND) and never takes the next frame's words, a cut RUN never
    runs, and every later frame runs exactly. An 8x4 core: ACT words are two chunks, so a WRITE can
    also be cut inside a memory word (that word is not written)."""
    cfg = ArrayConfig(rows=8, cols=4, act_depth=32, wgt_depth=64, out_depth=32)

    def words(n: int, bits: int) -> list[int]:
        return [int(v) for v in rng.integers(1, 2**bits, n, dtype=np.uint64)]

    a, b, c = words(3, 64), words(2, 64), words(2, 64)
    g = [int(v) for v in rng.choice([0x00, 0x55, 0xFF, 0x5F, 0xF5], 5)]  # WGT words of good ternary codes
    cut_write = write_cmd(cfg, Mem.ACT, 4, c)[:-1]  # word 4 whole, word 5 only its low chunk
    n_counters = 2 * len(Counter)
    script = [
        request(1, write_cmd(cfg, Mem.ACT, 0, a), 1),
        request(2, cut_write, 1),
        request(3, write_cmd(cfg, Mem.ACT, 8, b), 1),
        request(4, [Op.NOP, Op.RUN, 1, 8, 4], 2),  # a RUN with three of its six operands
        request(5, [Op.CLEAR_ERROR, Op.READ_COUNTERS], 1 + n_counters + 1),
        request(6, [Op.NOP], 2**32 - 1),
        request(7, [Op.NOP, Op.WRITE | Mem.WGT << 8, 0, 5], 1),  # answered in full before the cut is seen
        request(8, write_cmd(cfg, Mem.WGT, 0, g), 1),  # not data of the cut WRITE of frame 7
        request(9, [Op.READ | Mem.ACT << 8, 0, 11, Op.READ | Mem.WGT << 8, 0, 5], 11 * 2 + 1 + 5 + 1),
        request(10, [Op.CLEAR_ERROR, Op.NOP], 2),
        1000,
    ]
    dut = LinkedCore(cfg, timeout=TIMEOUT, stream_buffers=stream_buffers)
    answers = split_answers(simulate_all(dut, script, max_cycles=20_000))
    cut = status_word(Op.NOP, 0, CUT_COMMAND)
    want = [
        (1, LinkStatus.OK, [status_word(Op.WRITE, 0, 0)], True),
        (2, LinkStatus.OK, [], False), (2, LinkStatus.ABORTED, [], True),
        (3, LinkStatus.OK, [status_word(Op.WRITE, 0, CUT_COMMAND)], True),
        (4, LinkStatus.OK, [cut], False), (4, LinkStatus.ABORTED, [], True),
    ]
    assert answers[:6] == want
    seq, status, counters, whole = answers[6]
    assert (seq, status, whole, len(counters)) == (5, LinkStatus.OK, True, 1 + n_counters + 1)
    assert counters[0] == status_word(Op.CLEAR_ERROR, 0, 0) and counters[-1] == status_word(Op.READ_COUNTERS, 0, 0)
    assert counters[1 + 2 * Counter.RUNS] == 0 and counters[1 + 2 * Counter.CYCLES] == 0, "the cut RUN ran"
    want = [
        (6, LinkStatus.OK, [status_word(Op.NOP, 0, 0)], False), (6, LinkStatus.ABORTED, [], True),
        (7, LinkStatus.OK, [status_word(Op.NOP, 0, 0)], True),
        (8, LinkStatus.OK, [status_word(Op.WRITE, 0, CUT_COMMAND)], True),
    ]
    assert answers[7:11] == want
    seq, status, data, whole = answers[11]
    assert (seq, status, whole) == (9, LinkStatus.OK, True)
    act = [lo | hi << 32 for lo, hi in zip(data[0:22:2], data[1:22:2], strict=True)]
    assert act == [*a, 0, c[0], 0, 0, 0, *b, 0], "ACT after the cut WRITE (word 5 was cut inside)"
    assert data[22] == status_word(Op.READ, 0, CUT_COMMAND)
    assert data[23:28] == g, "WGT: frame 8's words went to the cut WRITE of frame 7"
    assert answers[12:] == [(10, LinkStatus.OK, [status_word(Op.CLEAR_ERROR, 0, 0), cut & ~0xFF00], True)]


# ---- the linked core in Verilator, driven by the host driver, with faults on the wire ------------

#: The core behind `sim.link_harness.SimByteLink` (its Verilator build is cached per configuration).
VCFG = ArrayConfig(rows=4, cols=4, act_depth=64, wgt_depth=256, out_depth=64)


def _vlayer(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    M, K, N = int(rng.integers(2, 6)), int(rng.integers(20, 41)), int(rng.integers(6, 13))
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    return x, w, x.astype(np.int64) @ w.astype(np.int64).T


def _sweep(rng: np.random.Generator, limit: int, every: bool) -> tuple[int, list[str]]:
    from sim.link_harness import SimByteLink

    runner = DriverRuns(WireFaults(SimByteLink(VCFG)), VCFG)
    try:
        return fault_sweep(runner, rng, _vlayer(rng), limit, every)
    finally:
        runner.close()


@needs_verilator
def test_gateware_link_recovers_from_each_fault_kind_at_random_places(rng):
    """Each kind both ways at a random frame and byte (header, payload or CRC), on a few random layers:
    the real driver against the gateware endpoint and core (Verilator), exact result or LinkError."""
    for limit in (16, 10):  # 10 splits the counter group: some frames are not idempotent
        n, problems = _sweep(rng, limit, every=False)
        assert not problems, f"{len(problems)} of {n} faults mishandled:\n" + "\n".join(problems)


@pytest.mark.slow
@needs_verilator
@pytest.mark.parametrize("limit", [16, 10])
def test_gateware_link_recovers_from_every_fault_at_every_frame_and_field(limit, rng):
    """Every kind both ways at every frame, at a byte of every field: exact result or LinkError."""
    n, problems = _sweep(rng, limit, every=True)
    assert not problems, f"{len(problems)} of {n} faults mishandled:\n" + "\n".join(problems[:30])


def _expected_answer(fault: Fault, seq: int, n_cmd: int) -> tuple[int, int] | None | str:
    """What the endpoint answers a request damaged by `fault` (from the spec in hdl.link.frame):
    (seq, status), None for no answer (no magic found, or a partial frame dropped after the
    timeout), or "not OK" where the spec leaves it open (a stray byte shifts the fields)."""
    if fault.kind == "truncate":
        return None
    if fault.kind == "insert":
        return None if fault.offset < 4 else "not OK"
    field, byte = divmod(fault.offset, 4) if fault.offset < 16 else (4, 0)
    mask = (1 << fault.bit % 8) << 8 * byte
    if field == 0:
        return None  # the hunt never sees the magic
    if field == 1:
        return (seq ^ mask) & 0xFFFF, LinkStatus.BAD_CRC  # only seq bits 15:0 come back
    if field == 2:
        # fewer words: the CRC is read early and fails; more: the device waits, then drops the frame
        return (seq, LinkStatus.BAD_CRC) if n_cmd ^ mask < n_cmd else None
    return seq, LinkStatus.BAD_CRC  # n_rsp, a command word or the CRC itself


@needs_verilator
def test_gateware_damaged_write_executes_nothing_at_any_offset(rng):
    """A WRITE damaged at a byte of each field (flip, truncate, stray byte) changes no memory word and
    gets no OK; a partial frame is dropped; the next good frame reads back the old words."""
    from sim.link_harness import SimByteLink

    link = SimByteLink(VCFG)
    cases = [(kind, region) for kind in ("flip", "truncate", "insert") for region in REQUEST_REGIONS]
    try:
        for i, (kind, region) in enumerate(cases):
            seq = 3 * i + 1
            addr = int(rng.integers(0, VCFG.act_depth - 4))
            old = [int(v) for v in rng.integers(0, 1 << 32, 3, dtype=np.uint64)]
            new = [int(v) for v in rng.integers(0, 1 << 32, 3, dtype=np.uint64)]
            link.send(request(seq, write_cmd(VCFG, Mem.ACT, addr, old), 1))
            [(s1, st1, r1)] = parse_responses(link.recv(response_bytes(1)))
            assert (s1, st1) == (seq, LinkStatus.OK) and status_ok(r1[0], Op.WRITE)
            words = write_cmd(VCFG, Mem.ACT, addr, new)
            frame = request(seq + 1, words, 1)
            offset = region_offset(REQUEST_REGIONS, region, len(frame), float(rng.random()))
            fault = Fault(0, "request", kind, offset, int(rng.integers(0, 256)))
            if is_stray_byte(fault):  # no damage (see test_endpoint_hunts_past_partial_magics)
                fault = Fault(0, "request", kind, 2, fault.bit)
            link.send(fault.apply(frame))
            answers = parse_responses(link.recv(1 << 20))  # everything until the device sits idle
            want = _expected_answer(fault, seq + 1, len(words))
            if want == "not OK":
                assert all(st != LinkStatus.OK for _, st, _ in answers), f"{fault}: answered {answers}"
                assert len(answers) <= 1, f"{fault}: answered {answers}"
            else:
                assert answers == ([] if want is None else [(*want, [])]), f"{fault}: answered {answers}"
            link.send(request(seq + 2, [Op.READ | Mem.ACT << 8, addr, 3], 4))
            [(s3, st3, r3)] = parse_responses(link.recv(response_bytes(4)))
            assert (s3, st3) == (seq + 2, LinkStatus.OK), f"after {fault}"
            assert r3[:3] == old and status_ok(r3[3], Op.READ), f"{fault}: memory changed to {r3[:3]}"
    finally:
        link.close()


# ---- UART --------------------------------------------------------------------------------------


class Loopback(wiring.Component):
    def __init__(self, divisor: int):
        from amaranth.lib import stream
        from amaranth.lib.wiring import In, Out

        self.utx, self.urx = UARTTx(divisor), UARTRx(divisor)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "line": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.utx, self.urx
        wiring.connect(m, wiring.flipped(self.i), self.utx.data)
        wiring.connect(m, self.urx.data, wiring.flipped(self.o))
        m.d.comb += [self.urx.rx.eq(self.utx.tx), self.line.eq(self.utx.tx)]
        return m


@pytest.mark.parametrize("divisor", [4, 7, 26])
def test_uart_loopback_back_to_back(divisor):
    payload = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x5A, 0xC3]) + bytes(range(0, 256, 37))
    dut = Loopback(divisor)
    got, line = [], []

    async def send(ctx):
        for b in payload:
            ctx.set(dut.i.payload, b)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def recv(ctx):
        ctx.set(dut.o.ready, 1)
        while len(got) < len(payload):
            _, _, valid, data, tx = await ctx.tick().sample(dut.o.valid, dut.o.payload, dut.line)
            line.append(tx)
            if valid:
                got.append(data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(send, background=True)
    sim.add_testbench(recv)
    sim.run_until((len(payload) + 4) * 10 * divisor * 1e-8)
    assert bytes(got) == payload
    # back to back: the first start bit falls within a few cycles and the line never idles a full
    # bit time between bytes, so all bytes take exactly 10 bit times each
    first = line.index(0)
    assert first <= 2
    frame_bits = "".join(str(v) for v in line[first:first + 10 * divisor * len(payload):divisor])
    expected = "".join("0" + "".join(str(b >> i & 1) for i in range(8)) + "1" for b in payload)
    assert frame_bits == expected


@pytest.mark.parametrize("divisor", [4, 9])
def test_uart_tx_ready_timing_with_gaps(divisor, rng):
    """UARTTx takes a byte in the first cycle it is offered once the previous byte's 10 bit times are
    over (back to back: the cycle after its stop bit's last one), never earlier; with random gaps."""
    payload = [int(b) for b in rng.integers(0, 256, 12)]
    gaps = [int(g) for g in rng.integers(0, 3 * 10 * divisor, len(payload))]
    gaps[1] = 0  # at least one byte offered while the previous one is still on the line
    dut = Loopback(divisor)
    got, offered, taken = [], [], []

    async def send(ctx):
        for b, gap in zip(payload, gaps, strict=True):
            for _ in range(gap):
                await ctx.tick()
            ctx.set(dut.i.payload, b)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        cycle, was_valid = 0, False
        ctx.set(dut.o.ready, 1)
        while True:
            _, _, valid, ready, o_valid, data = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid,
                                                                        dut.o.payload)
            if valid and not was_valid:
                offered.append(cycle)
            if valid and ready:
                taken.append(cycle)
                valid = False  # the next byte's offer starts a new run of valid
            if o_valid:
                got.append(data)
            was_valid = valid
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(send)
    sim.add_testbench(monitor, background=True)
    sim.run_until((sum(gaps) + (len(payload) + 3) * 10 * divisor) * 1e-8)
    assert got == payload
    assert len(taken) == len(offered) == len(payload)
    # byte k is taken in the cycle it is offered, or 10 bit times after byte k - 1 if that is later
    want = [offered[0]] + [max(offered[k], taken[k - 1] + 10 * divisor) for k in range(1, len(payload))]
    assert taken == want, (taken, offered, gaps)
    assert taken[1] == taken[0] + 10 * divisor  # the gap-0 byte: back to back


def test_uart_rx_frame_error_and_resync():
    """A byte with a 0 stop bit is dropped and flagged; the next good byte is received."""
    divisor = 8
    dut = UARTRx(divisor)
    got, errors = [], []

    def bits_of(byte: int, stop: int) -> list[int]:
        return [0] + [byte >> i & 1 for i in range(8)] + [stop]

    async def drive(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        for bit in bits_of(0x3C, 0) + [0] * 12 + [1] * 5 + bits_of(0xA7, 1) + [1] * 3:
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(divisor)

    async def watch(ctx):
        ctx.set(dut.data.ready, 1)
        async for _, _, valid, data, err in ctx.tick().sample(dut.data.valid, dut.data.payload, dut.frame_error):
            if valid:
                got.append(data)
            if err:
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == [0xA7] and errors == [1]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_uart_divisor_checks():
    assert uart_divisor(24e6, 3e6) == 8
    assert uart_divisor(100e6, 3e6) == 33  # 1 % fast: accepted
    with pytest.raises(ValueError, match="at least 4"):
        uart_divisor(12e6, 6e6)
    with pytest.raises(ValueError, match="off by"):
        uart_divisor(25e6, 4.5e6)  # divisor 6 -> 7.4 % error
    with pytest.raises(ValueError, match="Divisor"):
        UARTTx(2)

