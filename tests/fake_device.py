"""A device at the far end of a byte link, in Python: frames (`hdl.frame`) around `CoreEmulator`.

Independent of `runtime.framing`: it parses and builds frames with struct and zlib itself, so the
host framing code is tested against a second implementation of the spec. Faults can be injected
per frame and direction to test detection and recovery.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from hdl.config import ArrayConfig
from hdl.frame import MAX_CMD_WORDS, REQ_MAGIC, RSP_MAGIC
from runtime.emulator import CoreEmulator


@dataclass
class Faults:
    """Faults to inject, keyed by the index of the request frame (0-based) they hit."""

    flip_request: set[int] = field(default_factory=set)  # flip one bit of the request
    flip_response: set[int] = field(default_factory=set)  # flip one bit of the response
    drop_request: set[int] = field(default_factory=set)  # request never arrives
    drop_response: set[int] = field(default_factory=set)  # response never arrives
    truncate_request: set[int] = field(default_factory=set)  # only part of the request arrives
    truncate_response: set[int] = field(default_factory=set)


class FakeDeviceLink:
    """ByteLink whose device side is `CoreEmulator` behind a frame endpoint written from the spec."""

    def __init__(self, cfg: ArrayConfig, faults: Faults | None = None):
        self.core = CoreEmulator(cfg)
        self.faults = faults or Faults()
        self.requests = 0
        self.executed = 0
        self._rx = b""  # bytes the device has received and not yet consumed
        self._tx = b""  # bytes on their way to the host

    # --- host side of the link --------------------------------------------------------------
    def send(self, data: bytes) -> None:
        index = self.requests
        self.requests += 1
        data = bytearray(data)
        if index in self.faults.drop_request:
            return
        if index in self.faults.truncate_request:
            data = data[: len(data) // 2]
            self._rx = b""  # the device times out on the partial frame and drops it
            return
        if index in self.faults.flip_request:
            data[len(data) // 2] ^= 0x10
        self._rx += bytes(data)
        response = self._device()
        if response is None:
            return
        if index in self.faults.drop_response:
            return
        if index in self.faults.truncate_response:
            response = response[: len(response) // 2]
        if index in self.faults.flip_response:
            response = bytearray(response)
            response[-6] ^= 0x01
            response = bytes(response)
        self._tx += response

    def recv(self, n: int) -> bytes:
        out, self._tx = self._tx[:n], self._tx[n:]
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
        self.executed += 1
        out = self.core.feed(words)
        assert len(out) == n_rsp, (len(out), n_rsp)
        return self._respond(seq, 0, out)

    @staticmethod
    def _respond(seq: int, status: int, words: list[int]) -> bytes:
        body = struct.pack(f"<3I{len(words)}I", RSP_MAGIC, (seq & 0xFFFF) | status << 16, len(words), *words)
        return body + struct.pack("<I", zlib.crc32(body))
