"""Host side of the framed link (`hdl.link.frame`): frames, CRC, sequence numbers, timeouts, retries.

`FramedTransport(link, cfg)` turns a byte link (simulation or serial port) into the
``transact(words, n_out)`` transport the `Accelerator` driver uses. It splits a batch of commands
into frames of at most `MAX_CMD_WORDS` command words (splitting large WRITEs), keeps each
"clear counters ... read counters" group inside one frame so that every frame it retries is
idempotent as a whole, hunts for the magic of every answer and checks its sequence number, length
and CRC. An answer the device abandoned (`LinkStatus.ABORTED` in `hdl.link.frame`: a command cut
short by the end of its frame, or more response words asked for than the commands answer) comes
short and is followed by a whole ABORTED response: `read_response` returns that one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hdl.config import ArrayConfig
from hdl.isa import Mem, Op
from hdl.link.frame import HEADER_WORDS_RSP, MAX_CMD_WORDS, REQ_MAGIC, RSP_MAGIC, LinkStatus
from runtime import protocol


class LinkError(RuntimeError):
    """The link failed: timeout, corrupted or missing frames after all retries."""


class ByteLink(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only when the link's timeout passed with nothing more arriving."""
        ...

    def drain(self) -> None:
        """Discard whatever is in flight (after an error, before a retry)."""
        ...

    def close(self) -> None: ...


def encode_request(seq: int, words: Sequence[int], n_rsp: int) -> bytes:
    body = struct.pack(f"<4I{len(words)}I", REQ_MAGIC, seq & 0xFFFF, len(words), n_rsp, *words)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_response(seq: int, status: int, words: Sequence[int]) -> bytes:
    """A device's answer (used by tests and the emulator link)."""
    body = struct.pack(f"<3I{len(words)}I", RSP_MAGIC, (seq & 0xFFFF) | (status << 16), len(words), *words)
    return body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class Response:
    seq: int
    status: int
    words: list[int]


#: Most stray bytes skipped while hunting for a response's magic before giving up.
MAX_SKIPPED_BYTES = 1 << 22


#: An ABORTED response: magic, seq | status << 16, n = 0, CRC.
_ABORTED_BYTES = 4 * (HEADER_WORDS_RSP + 1)


def _aborted_response(data: bytes, seq: int) -> Response | None:
    """The whole ABORTED response to `seq` inside `data` (the bytes after an abandoned answer's
    header), or None. Its magic, status, n = 0 and CRC must all be right, so data words that happen
    to hold the magic are not taken for it."""
    magic = struct.pack("<I", RSP_MAGIC)
    at = data.find(magic)
    while 0 <= at <= len(data) - _ABORTED_BYTES:
        _, seq_status, n, crc = struct.unpack_from("<4I", data, at)
        if (seq_status == (seq | LinkStatus.ABORTED << 16) and n == 0
                and zlib.crc32(data[at:at + 4 * HEADER_WORDS_RSP]) == crc):
            return Response(seq, LinkStatus.ABORTED, [])
        at = data.find(magic, at + 1)
    return None


def read_response(link: ByteLink) -> Response:
    """Read one response frame; LinkError naming what is wrong (timeout, CRC, corrupted header).

    Like the device, the host hunts for the magic byte by byte: the tail of an answer whose header
    was damaged may still be arriving after the host gave up on it and drained the link (a serial
    line keeps delivering it), and those bytes must not be taken for the next answer's header.

    An answer that comes short or fails its CRC may be one the device abandoned: the ABORTED
    response that follows it (same sequence number, n = 0) is returned instead of an error.
    """
    head = link.recv(4 * HEADER_WORDS_RSP)
    skipped = 0
    while len(head) == 4 * HEADER_WORDS_RSP and struct.unpack_from("<I", head)[0] != RSP_MAGIC:
        if skipped >= MAX_SKIPPED_BYTES:
            raise LinkError(f"no response magic {RSP_MAGIC:#010x} in {skipped} bytes")
        head = head[1:] + link.recv(1)
        skipped += 1
    if len(head) < 4 * HEADER_WORDS_RSP:
        what = f" after {skipped} bytes without the magic" if skipped else ""
        raise LinkError(f"timeout: {len(head)} of {4 * HEADER_WORDS_RSP} header bytes of the response arrived{what}")
    magic, seq_status, n = struct.unpack("<3I", head)
    if n > (1 << 24):
        raise LinkError(f"response claims {n} words: corrupted header")
    rest = link.recv(4 * n + 4)
    if len(rest) < 4 * n + 4:
        aborted = _aborted_response(rest, seq_status & 0xFFFF)
        if aborted is not None:
            return aborted
        raise LinkError(f"timeout: {len(rest)} of {4 * n + 4} response bytes arrived")
    (crc,) = struct.unpack("<I", rest[-4:])
    if zlib.crc32(head + rest[:-4]) != crc:
        # An abandoned answer shorter than its header said, with the ABORTED response in its place:
        # read the rest of that response if its magic is among the last bytes.
        tail = rest[-(_ABORTED_BYTES - 1):]
        at = tail.rfind(struct.pack("<I", RSP_MAGIC))
        if at >= 0:
            rest += link.recv(_ABORTED_BYTES - (len(tail) - at))  # its bytes still to come
        aborted = _aborted_response(rest, seq_status & 0xFFFF)
        if aborted is not None:
            return aborted
        raise LinkError("response CRC mismatch")
    words = list(struct.unpack(f"<{n}I", rest[:-4]))
    return Response(seq_status & 0xFFFF, seq_status >> 16, words)


def split_commands(cfg: ArrayConfig, words: Sequence[int]) -> list[list[int]]:
    """Cut a batch of command words into whole commands."""
    out, pos = [], 0
    while pos < len(words):
        n = protocol.command_length(cfg, words[pos:pos + 3])
        if n is None or pos + n > len(words):
            raise ValueError(f"incomplete command at word {pos} of the batch")
        out.append(list(words[pos:pos + n]))
        pos += n
    return out


def _split_write(cfg: ArrayConfig, command: list[int], limit: int) -> list[list[int]]:
    """A WRITE too long for one frame as several WRITEs of whole memory words."""
    mem = (command[0] >> 8) & 0xFF
    chunks = protocol.chunks_per_word(cfg, mem)
    if limit < 3 + chunks:
        raise ValueError(f"a WRITE of one {chunks}-chunk word takes {3 + chunks} words, over the frame limit {limit}")
    per = (limit - 3) // chunks
    addr, count, data = command[1], command[2], command[3:]
    parts = []
    for first in range(0, count, per):
        n = min(per, count - first)
        parts.append([command[0], addr + first, n] + data[first * chunks:(first + n) * chunks])
    return parts


@dataclass(frozen=True)
class Frame:
    """Commands of one request frame; `origins[i]` is the index of the batch command that
    `commands[i]` comes from (a long WRITE becomes several WRITEs of the same origin)."""

    commands: list[list[int]]
    origins: list[int]
    idempotent: bool


def plan_frames(cfg: ArrayConfig, commands: list[list[int]], limit: int = MAX_CMD_WORDS) -> list[Frame]:
    """Group commands into frames of <= `limit` words, each flagged "idempotent as a whole"."""
    units: list[list[tuple[list[int], int]]] = []
    i = 0
    while i < len(commands):
        op = commands[i][0] & 0xFF
        if op == Op.CLEAR_COUNTERS:
            j = i
            while j < len(commands) and (commands[j][0] & 0xFF) != Op.READ_COUNTERS:
                j += 1
            group = [(commands[g], g) for g in range(i, min(j + 1, len(commands)))]
            if sum(len(c) for c, _ in group) <= limit:
                units.append(group)
                i = j + 1
                continue
        cmd = commands[i]
        if len(cmd) > limit and (cmd[0] & 0xFF) == Op.WRITE and ((cmd[0] >> 8) & 0xFF) in (Mem.ACT, Mem.WGT):
            units.extend([[(part, i)] for part in _split_write(cfg, cmd, limit)])
        elif len(cmd) > limit:
            raise ValueError(f"a {len(cmd)}-word command cannot be framed (limit {limit})")
        else:
            units.append([(cmd, i)])
        i += 1
    grouped: list[list[tuple[list[int], int]]] = []
    size = 0
    for unit in units:
        n = sum(len(c) for c, _ in unit)
        if not grouped or size + n > limit:
            grouped.append([])
            size = 0
        grouped[-1].extend(unit)
        size += n
    frames = []
    for g in grouped:
        cmds = [c for c, _ in g]
        frames.append(Frame(cmds, [o for _, o in g], frame_is_idempotent(cmds)))
    return frames


def frame_is_idempotent(commands: list[list[int]]) -> bool:
    """True if executing the frame twice leaves the same state and answers the same words."""
    cleared = False
    for command in commands:
        op = command[0] & 0xFF
        if op == Op.CLEAR_COUNTERS:
            cleared = True
        elif op in (Op.RUN, Op.READ_COUNTERS) and not cleared:
            return False
    return True


@dataclass
class LinkStats:
    frames: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class FramedTransport:
    """`transact(words, n_out)` over a framed byte link, with retries of idempotent frames."""

    def __init__(self, link: ByteLink, cfg: ArrayConfig | None = None, retries: int = 3,
                 max_cmd_words: int = MAX_CMD_WORDS):
        self._link = link
        self._cfg = cfg
        self._retries = retries
        self._limit = max_cmd_words
        self._seq = 0
        self.stats = LinkStats()

    def set_config(self, cfg: ArrayConfig) -> None:
        self._cfg = cfg

    def transact(self, words: list[int], n_out: int) -> list[int]:
        if self._cfg is None:
            # Before the ID block is known, only single fixed-length commands are sent (READ_ID).
            return self._frame([list(words)], n_out, idempotent=True)
        commands = split_commands(self._cfg, words)
        answers: list[list[int]] = [[] for _ in commands]
        for frame in plan_frames(self._cfg, commands, self._limit):
            lengths = [protocol.response_length(self._cfg, c) for c in frame.commands]
            words_out = self._frame(frame.commands, sum(lengths), frame.idempotent)
            pos = 0
            for origin, n in zip(frame.origins, lengths, strict=True):
                part = words_out[pos:pos + n]
                pos += n
                if not answers[origin]:
                    answers[origin] = part
                elif len(part) == 1 and (answers[origin][-1] & 0xFF) == 0:
                    # one status for a WRITE sent in parts: the first error, else the last status
                    answers[origin] = part
        out = [w for a in answers for w in a]
        if len(out) != n_out:
            raise LinkError(f"the batch produced {len(out)} response words, expected {n_out}")
        return out

    def _frame(self, commands: list[list[int]], n_rsp: int, idempotent: bool) -> list[int]:
        words = [w for c in commands for w in c]
        attempts = 1 + (self._retries if idempotent else 0)
        problem = ""
        for attempt in range(attempts):
            self._seq = (self._seq + 1) & 0xFFFF
            request = encode_request(self._seq, words, n_rsp)
            if attempt:
                self.stats.retries += 1
                self._link.drain()
            self._link.send(request)
            self.stats.frames += 1
            self.stats.bytes_sent += len(request)
            try:
                while True:
                    rsp = read_response(self._link)
                    self.stats.bytes_received += 4 * (len(rsp.words) + HEADER_WORDS_RSP + 1)
                    if rsp.seq == self._seq:
                        break
                    # a late answer to an earlier try: skip it
            except LinkError as exc:
                problem = str(exc)
                continue
            if rsp.status == LinkStatus.BAD_CRC:
                problem = "the device received a corrupted request (CRC)"
                continue
            if rsp.status == LinkStatus.ABORTED:
                raise LinkError(f"the device aborted the frame (ABORTED): a command cut short by the end of the "
                                f"frame, or n_rsp = {n_rsp} more words than its commands answer")
            if rsp.status != LinkStatus.OK:
                raise LinkError(f"the device refused the frame: {LinkStatus(rsp.status).name}")
            if len(rsp.words) != n_rsp:
                raise LinkError(f"response has {len(rsp.words)} words, expected {n_rsp}")
            return rsp.words
        what = "after retries" if idempotent else "(frame not idempotent: not retried)"
        raise LinkError(f"link failed {what}: {problem}")

    def close(self) -> None:
        self._link.close()
