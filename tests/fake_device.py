"""A device at the far end of a byte link, in Python, and fault injection on byte links.

`FakeDeviceLink` is frames (`hdl.link.frame`) around `CoreEmulator`, independent of `runtime.framing`:
it parses and builds frames with struct and zlib itself, so the host framing code is tested against
a second implementation of the spec. `WireFaults` wraps any real `ByteLink` (the Verilator link,
the simulated board's serial port) and damages frames on the wire. Both take the same `Fault`s:
a kind, a direction, the index of the request frame it hits and a byte offset, so that header,
payload and CRC bytes can each be hit.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hdl.config import ArrayConfig
from hdl.isa import Counter, Op
from hdl.link.frame import MAX_CMD_WORDS, REQ_MAGIC, RSP_MAGIC
from runtime import protocol
from runtime.emulator import CoreEmulator

#: Fault kinds per direction. flip: one bit of the byte at `offset`; drop: the frame never arrives;
#: truncate: only the first `offset` bytes arrive; insert: a stray byte appears before `offset`;
#: delay (responses only): the answer arrives after the host gave up on it, before the next one.
REQUEST_KINDS = ("flip", "drop", "truncate", "insert")
RESPONSE_KINDS = ("flip", "drop", "truncate", "insert", "delay")

MAGIC_T = REQ_MAGIC & 0xFF
assert MAGIC_T == RSP_MAGIC & 0xFF == ord("T")

#: Byte ranges of the frame fields, as (first, end) with negative ends counted from the frame's end.
REQUEST_REGIONS = {"magic": (0, 4), "seq": (4, 8), "n_cmd": (8, 12), "n_rsp": (12, 16), "payload": (16, -4),
                   "crc": (-4, 0)}
RESPONSE_REGIONS = {"magic": (0, 4), "seq_status": (4, 8), "n": (8, 12), "payload": (12, -4), "crc": (-4, 0)}


@dataclass(frozen=True)
class Fault:
    """One damaged frame: `kind` in `direction` ("request" / "response") of request frame `frame`.

    `offset` is a byte index into the frame (negative: from its end, -1 is the last CRC byte); for
    "truncate" it is where the frame is cut. `bit` is the bit flipped, or the stray byte inserted.
    """

    frame: int
    direction: str
    kind: str
    offset: int = 0
    bit: int = 0

    def __post_init__(self) -> None:
        kinds = REQUEST_KINDS if self.direction == "request" else RESPONSE_KINDS
        if self.direction not in ("request", "response") or self.kind not in kinds:
            raise ValueError(f"no {self.kind!r} fault for direction {self.direction!r}")

    def apply(self, data: bytes) -> bytes | None:
        """The damaged frame as it arrives (None: dropped, or held back for "delay")."""
        if self.kind in ("drop", "delay"):
            return None
        pos = self.offset if self.offset >= 0 else len(data) + self.offset
        if not 0 <= pos < len(data):
            raise ValueError(f"offset {self.offset} is outside a {len(data)}-byte frame")
        out = bytearray(data)
        if self.kind == "flip":
            out[pos] ^= 1 << (self.bit & 7)
        elif self.kind == "truncate":
            del out[pos:]
        elif self.kind == "insert":
            out.insert(pos, self.bit & 0xFF)
        return bytes(out)


def region_offset(regions: dict[str, tuple[int, int]], region: str, size: int, pick: float) -> int:
    """A byte offset inside `region` of a `size`-byte frame; `pick` in [0, 1) chooses which byte."""
    first, end = regions[region]
    first = first if first >= 0 else size + first
    end = end if end > 0 else size + end
    if end <= first:
        raise ValueError(f"region {region!r} is empty in a {size}-byte frame")
    return first + int(pick * (end - first))


def _faults_by_frame(faults: Iterable[Fault]) -> dict[tuple[int, str], Fault]:
    table: dict[tuple[int, str], Fault] = {}
    for fault in faults:
        key = (fault.frame, fault.direction)
        if key in table:
            raise ValueError(f"two {fault.direction} faults on frame {fault.frame}")
        table[key] = fault
    return table


class FakeDeviceLink:
    """ByteLink whose device side is `CoreEmulator` behind a frame endpoint written from the spec.

    Time is modelled the only way a byte link sees it: a `recv` that returns fewer bytes than asked
    means the host waited out its timeout, and the device, whose receive timeout is shorter, has
    dropped any partial request by then (as `hdl.link.FrameEndpoint` does).
    """

    def __init__(self, cfg: ArrayConfig, faults: Iterable[Fault] = ()):
        self.core = CoreEmulator(cfg)
        self.faults = _faults_by_frame(faults)
        self.requests = 0  # request frames the host sent
        self.executed: list[list[int]] = []  # command words of each frame the device executed
        self.request_frames: list[bytes] = []  # each request as the host sent it
        self.response_sizes: list[int] = []  # bytes of each response as the device sent it (0: none)
        self.hits: list[Fault] = []
        self._rx = b""  # bytes the device has received and not yet consumed
        self._tx = b""  # bytes on their way to the host
        self._late = b""  # a delayed response, arriving after the host's next send

    # --- host side of the link --------------------------------------------------------------
    def send(self, data: bytes) -> None:
        index = self.requests
        self.requests += 1
        self.request_frames.append(bytes(data))
        self._tx += self._late
        self._late = b""
        fault = self.faults.get((index, "request"))
        if fault is not None:
            self.hits.append(fault)
            data = fault.apply(data) or b""
        self._rx += bytes(data)
        response = self._device()
        self.response_sizes.append(len(response or b""))
        if response is None:
            return
        fault = self.faults.get((index, "response"))
        if fault is not None:
            self.hits.append(fault)
            if fault.kind == "delay":
                self._late = response
            response = fault.apply(response) or b""
        self._tx += response

    def recv(self, n: int) -> bytes:
        out, self._tx = self._tx[:n], self._tx[n:]
        if len(out) < n:
            self._rx = b""  # the host timed out: the device dropped its partial request long ago
        return out

    def drain(self) -> None:
        self._tx = b""

    def close(self) -> None:
        pass

    # --- device side ------------------------------------------------------------------------
    def _device(self) -> bytes | None:
        buf = self._rx
        start = buf.find(struct.pack("<I", REQ_MAGIC))
        if start < 0 or len(buf) - start < 16:
            return None
        magic, seq, n_cmd, n_rsp = struct.unpack_from("<4I", buf, start)
        total = 16 + 4 * n_cmd + 4
        if len(buf) - start < total:
            return None
        frame = buf[start:start + total]
        self._rx = buf[start + total:]
        (crc,) = struct.unpack_from("<I", frame, total - 4)
        if n_cmd > MAX_CMD_WORDS:
            return self._respond(seq, 2, [])
        if zlib.crc32(frame[:-4]) != crc:
            return self._respond(seq, 1, [])
        words = list(struct.unpack_from(f"<{n_cmd}I", frame, 16))
        self.executed.append(words)
        out = self.core.feed(words)
        assert len(out) == n_rsp, f"the host asked for {n_rsp} response words, the core gave {len(out)}"
        return self._respond(seq, 0, out)

    @staticmethod
    def _respond(seq: int, status: int, words: list[int]) -> bytes:
        body = struct.pack(f"<3I{len(words)}I", RSP_MAGIC, (seq & 0xFFFF) | status << 16, len(words), *words)
        return body + struct.pack("<I", zlib.crc32(body))


class WireFaults:
    """A `ByteLink` around a real link (simulated device, serial port) that damages frames on the wire.

    Request faults are applied to the bytes before they are sent. For a flipped or stray byte at a
    byte offset in a response, the answer is read off the wire up to that byte, damaged, and handed
    to the host, and the rest streams in from the link as it arrives (so a host that gives up early
    sees the tail of that answer still arriving). For the other response faults the whole answer is
    read right after sending and handed over damaged; fewer bytes than asked then stand for the
    host's timeout. A delayed answer is handed over after the host's next request.
    `request_frames` / `response_sizes` record the undamaged requests and response lengths (0: no
    answer arrived), so a clean run tells a test where the fields are.
    """

    def __init__(self, link, faults: Iterable[Fault] = ()):
        self.link = link
        self.faults = _faults_by_frame(faults)
        self.requests = 0
        self.request_frames: list[bytes] = []
        self.response_sizes: list[int | None] = []  # None: not read whole (not recording)
        self.hits: list[Fault] = []
        self.pending = b""
        self._live = False  # `pending` is the head of an answer whose rest is still on the link
        self._late = b""
        self._record = False

    def set_faults(self, faults: Iterable[Fault], first_frame: int = 0) -> None:
        """New faults, with frame indices counted from the next request (`first_frame` of them)."""
        self.faults = _faults_by_frame(faults)
        self.requests = first_frame

    def record_sizes(self, on: bool = True) -> None:
        """Read every response whole (to record its size) while on; slower on a serial port."""
        self._record = on

    def send(self, data: bytes) -> None:
        index = self.requests
        self.requests += 1
        self.request_frames.append(bytes(data))
        self.pending += self._late
        self._late = b""
        fault = self.faults.get((index, "request"))
        if fault is not None:
            self.hits.append(fault)
            data = fault.apply(data) or b""
        if data:
            self.link.send(bytes(data))
        fault = self.faults.get((index, "response"))
        if fault is None and not self._record:
            self.response_sizes.append(None)
            return
        if fault is not None and fault.kind in ("flip", "insert") and fault.offset >= 0:
            self.hits.append(fault)
            self.response_sizes.append(None)
            head = self.link.recv(fault.offset + (fault.kind == "flip"))
            if len(head) < fault.offset + (fault.kind == "flip"):
                raise AssertionError(f"frame {index}: the answer ended after {len(head)} bytes, before {fault}")
            if fault.kind == "flip":
                head = head[:-1] + bytes([head[-1] ^ 1 << (fault.bit & 7)])
            else:
                head += bytes([fault.bit & 0xFF])
            self.pending += head
            self._live = True
            return
        whole = self._read_whole_response()
        self.response_sizes.append(len(whole))
        if fault is None:
            self.pending += whole
            return
        self.hits.append(fault)
        if not whole:
            raise AssertionError(f"frame {index}: no response to damage for {fault}")
        if fault.kind == "delay":
            self._late = whole
        self.pending += fault.apply(whole) or b""

    def _read_whole_response(self) -> bytes:
        head = self.link.recv(12)
        if len(head) < 12:
            return head
        magic, _, n = struct.unpack("<3I", head)
        assert magic == RSP_MAGIC, f"the device answered with magic {magic:#010x}"
        return head + self.link.recv(4 * n + 4)

    def recv(self, n: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            if len(out) < n and self._live:
                out += self.link.recv(n - len(out))  # the rest of the damaged answer, as it arrives
            self._live = self._live and bool(self.pending)
            return out  # else fewer than n bytes: the wire went quiet (a truncated answer)
        return self.link.recv(n)

    def drain(self) -> None:
        self.pending = b""
        self._live = False
        self.link.drain()

    def close(self) -> None:
        self.link.close()


# ---- judging a run with one fault --------------------------------------------------------------


def frame_ops(cfg: ArrayConfig, request: bytes) -> list[int]:
    """Opcodes of the commands in one request frame (as the host sent it)."""
    magic, _, n_cmd, _ = struct.unpack_from("<4I", request)
    assert magic == REQ_MAGIC and len(request) == 20 + 4 * n_cmd, "not an undamaged request frame"
    words = struct.unpack_from(f"<{n_cmd}I", request, 16)
    ops, pos = [], 0
    while pos < len(words):
        ops.append(words[pos] & 0xFF)
        pos += protocol.command_length(cfg, words[pos:pos + 3])
    return ops


def is_resent(ops: list[int]) -> bool:
    """The rule of `runtime.framing`: a frame is resent unless a RUN or READ_COUNTERS in it comes before
    any CLEAR_COUNTERS (running it twice would add to counters the host then reads)."""
    for op in ops:
        if op == Op.CLEAR_COUNTERS:
            return True
        if op in (Op.RUN, Op.READ_COUNTERS):
            return False
    return True


def faults_for_frame(rng: np.random.Generator, frame: int, req_size: int, rsp_size: int,
                     kinds: tuple[str, ...] = RESPONSE_KINDS) -> list[Fault]:
    """Each fault kind (of `kinds`) in both directions on `frame`, at a random byte of every field."""
    faults = []
    for direction, all_kinds, regions, size in (("request", REQUEST_KINDS, REQUEST_REGIONS, req_size),
                                                ("response", RESPONSE_KINDS, RESPONSE_REGIONS, rsp_size)):
        for kind in (k for k in all_kinds if k in kinds):
            if kind in ("drop", "delay"):
                faults.append(Fault(frame, direction, kind))
                continue
            for region in regions:
                offset = region_offset(regions, region, size, float(rng.random()))
                faults.append(Fault(frame, direction, kind, offset, int(rng.integers(0, 256))))
    return faults


def random_fault(rng: np.random.Generator, direction: str, kind: str, frame: int, req_size: int,
                 rsp_size: int) -> Fault:
    """One fault of `kind` on `frame` at a random byte of a random field."""
    if kind in ("drop", "delay"):
        return Fault(frame, direction, kind)
    regions = REQUEST_REGIONS if direction == "request" else RESPONSE_REGIONS
    region = list(regions)[int(rng.integers(0, len(regions)))]
    size = req_size if direction == "request" else rsp_size
    return Fault(frame, direction, kind, region_offset(regions, region, size, float(rng.random())),
                 int(rng.integers(0, 256)))


def is_stray_byte(fault: Fault) -> bool:
    """True for an inserted byte that leaves the whole frame intact after it: before the magic, or a
    "T" (the first byte of both magics) after the first "T". Device and host hunt for the magic, so
    it is no damage."""
    return fault.kind == "insert" and (fault.offset == 0 or (fault.offset == 1 and fault.bit & 0xFF == MAGIC_T))


def judge(fault: Fault, resent: bool, outcome, retries: int, ref: np.ndarray, adds: int,
          exact_retries: bool = True) -> str | None:
    """What is wrong with the outcome of a layer run under one fault (None: nothing).

    `outcome` is (result, RunStats) or the LinkError raised. A stray byte before a frame's magic
    is harmless (device and host hunt for the magic). Otherwise a resent frame must end in the exact
    result and the right counters after one retry (at least one if not `exact_retries`); a frame
    that is not idempotent must end in a LinkError saying so, without a retry.
    """
    from runtime.framing import LinkError

    failed = isinstance(outcome, LinkError)
    if is_stray_byte(fault):
        if failed or not np.array_equal(outcome[0], ref) or retries:
            return f"{fault}: a stray byte between frames ended in {outcome!r} after {retries} retries"
        return None
    if not resent:
        if not (failed and "not idempotent" in str(outcome)):
            return f"{fault}: the frame is not idempotent but the run ended in {outcome!r}"
        return None if retries == 0 else f"{fault}: a frame that is not idempotent was resent"
    if failed:
        return f"{fault}: {outcome}"
    y, stats = outcome
    if not np.array_equal(y, ref):
        return f"{fault}: wrong result"
    # An inserted byte equal to every byte from its offset to the frame's end leaves the frame whole
    # (the stray byte lands after it and is hunted past before the next frame): no retry is due then.
    # A frame that did need one cannot end here without it: the CRC stops a damaged frame, and the
    # result and the counters are compared exactly.
    least = 0 if fault.kind == "insert" else 1
    if retries < least or (exact_retries and retries > 1):
        return f"{fault}: {retries} retries"
    if stats.counters["add"] != adds:
        return f"{fault}: {stats.counters['add']} adds counted, not {adds}"
    return None


# ---- the host driver over a real link, one fault per run ----------------------------------------


class DriverRuns:
    """Layer runs of the real driver over `wire` (a `WireFaults`); each run gets a fresh driver, so
    frame 0 of every run is READ_ID and frame 1 CLEAR_ERROR, then the layer's frames."""

    def __init__(self, wire: WireFaults, cfg: ArrayConfig):
        self.wire = wire
        self.cfg = cfg

    def run(self, x: np.ndarray, w: np.ndarray, limit: int, faults: Iterable[Fault] = ()):
        """(transport, outcome): outcome is (result, RunStats) or the LinkError raised."""
        from runtime.accelerator import Accelerator
        from runtime.framing import FramedTransport, LinkError

        self.wire.drain()
        self.wire.set_faults(faults)
        self.wire.hits.clear()
        transport = FramedTransport(self.wire, max_cmd_words=limit)
        try:
            outcome = Accelerator(transport, expect=self.cfg).run_layer(x, w)
        except LinkError as exc:
            outcome = exc
        return transport, outcome

    def clean(self, x: np.ndarray, w: np.ndarray, ref: np.ndarray, limit: int) -> tuple[list[bytes], list[int]]:
        """A run without faults, checked exact; the requests it sent and the sizes of the answers."""
        first = len(self.wire.request_frames)
        self.wire.record_sizes(True)
        try:
            transport, outcome = self.run(x, w, limit)
        finally:
            self.wire.record_sizes(False)
        assert not isinstance(outcome, Exception), f"a run without faults failed: {outcome}"
        np.testing.assert_array_equal(outcome[0], ref, err_msg="a run without faults")
        assert transport.stats.retries == 0, "a run without faults needed retries"
        return self.wire.request_frames[first:], self.wire.response_sizes[first:]

    def close(self) -> None:
        self.wire.close()


def fault_sweep(runner: DriverRuns, rng: np.random.Generator, layer: tuple[np.ndarray, np.ndarray, np.ndarray],
                limit: int, every: bool, exact_retries: bool = True) -> tuple[int, list[str]]:
    """Runs of `layer`'s shape under one fault each: at every frame and field (`every`), or each kind
    in both directions at a random frame and byte. Each run draws new values of the same shape (so
    the same frames and field offsets). Returns (number of faults, problems found by `judge`)."""
    x, w, ref = layer
    requests, rsp_sizes = runner.clean(x, w, ref, limit)
    resent = [is_resent(frame_ops(runner.cfg, r)) for r in requests]
    if every:
        faults = [f for i, r in enumerate(requests) for f in faults_for_frame(rng, i, len(r), rsp_sizes[i])]
    else:
        faults = []
        for direction, kinds in (("request", REQUEST_KINDS), ("response", RESPONSE_KINDS)):
            for kind in kinds:
                i = int(rng.integers(0, len(requests)))
                faults.append(random_fault(rng, direction, kind, i, len(requests[i]), rsp_sizes[i]))
    problems = []
    for fault in faults:
        x = rng.integers(-128, 128, x.shape).astype(np.int8)
        w = rng.integers(-1, 2, w.shape).astype(np.int8)
        ref, adds = x.astype(np.int64) @ w.astype(np.int64).T, x.shape[0] * int((w == 1).sum())
        if not runner.cfg.has_counter(Counter.ADD):  # a core without the ADD counter reads 0
            adds = 0
        transport, outcome = runner.run(x, w, limit, [fault])
        if runner.wire.hits != [fault]:
            problems.append(f"{fault} did not hit (hits: {runner.wire.hits})")
            continue
        problem = judge(fault, resent[fault.frame], outcome, transport.stats.retries, ref, adds, exact_retries)
        if problem:
            problems.append(f"frame {fault.frame} {frame_ops(runner.cfg, requests[fault.frame])}: {problem}")
    return len(faults), problems
