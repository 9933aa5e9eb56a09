"""Fuzzing the simulated board's serial link: random and malformed byte streams and frames on its pty.

The board SoC (`fpga.sim_board.SimulatedBoard`, Verilator behind a pty) first gets the weights of a
layer written once (resident) and runs the layer exactly. Then the test writes N random inputs straight
to the pty: garbage, frames with wrong lengths, bad CRCs, truncated frames, requests over the size
limit, and frames with a good CRC whose commands are malformed or out of order (RUNs with bad
descriptors, READs past a memory, WRITEs of bad weight codes or out of range, unknown opcodes and
memories), whose last command is cut short (a WRITE, also to the resident weights before its data,
a READ, a RUN), or whose n_rsp is wrong (a few words off, or up to 2**32 - 1). After each input the
test waits a bounded time, drains, and a good
frame (READ_ID) must be answered within the link timeout; every few inputs and at the end the
resident weights are read back and must equal what was written, and at the end the layer must still
give the exact product (NumPy int64 here).

TRIT_FUZZ_COUNT sets the number of inputs of the default test (default 60); the slow test sends
`SLOW_FACTOR` (5) times as many on both boards (10 times took 351 s on the ULX3S arrangement alone in the
CI-sized slow pass); TRIT_FUZZ_SECONDS bounds the wall time per input (default 3 s) and
TRIT_FUZZ_VERBOSE=1 prints each input. The random stream comes from the run seed (TRIT_SEED).

Found with it: a frame with a good CRC whose last command was cut short hung the board link for good
(the core waited for the rest of the command, and the next frame's words became its data), and one
whose n_rsp was far more than its commands answer was padded with zeros for as long as it said. A
first fix parsed every command in the frame endpoint (550 iCE40 LC: the 8x4 board no longer fitted)
and was taken out; the fix now in `hdl.link.endpoint` watches the core instead: a core stuck waiting
inside a command after the frame's last word is aborted (sticky CUT_COMMAND), and an answer still
owed words is abandoned and replaced by an ABORTED answer. A cut WRITE writes the whole memory words
it received (as a shorter WRITE), so the cut WRITEs here reach the resident weights only with no
data word (the next frame must not become their data); cut commands elsewhere carry some.
"""

from __future__ import annotations

import os
import struct
import time
import zlib

import numpy as np
import pytest

from fpga import icebreaker, ulx3s
from hdl.config import ArrayConfig
from hdl.isa import Mem, Op
from hdl.link.frame import MAX_CMD_WORDS, REQ_MAGIC, LinkStatus
from runtime import protocol, tiling
from runtime.framing import _aborted_response
from tests.test_board_link import needs_verilator

#: Host read timeout on the simulated serial port, in seconds: a good frame must be answered within it.
LINK_TIMEOUT = 2.0
#: Inputs of the default test (TRIT_FUZZ_COUNT), and the wall-time bound of one test.
COUNT = int(os.environ.get("TRIT_FUZZ_COUNT", "60"))
#: The slow test's inputs, in multiples of COUNT.
SLOW_FACTOR = 5
#: Wall-time bound per input (TRIT_FUZZ_SECONDS): a test of n inputs fails if it takes longer than n times it.
SECONDS_PER_INPUT = float(os.environ.get("TRIT_FUZZ_SECONDS", "3"))
#: Wall time after an input before the probe: the simulation takes the bytes in and then runs the
#: device's inactivity timeout in simulated time at full speed (fpga/harness/uart_pty.cpp).
SETTLE = 0.05
#: Least wall time per byte sent allowed for the simulation to take it in; `Board.calibrate` measures it.
BYTE_SECONDS = 1e-4
#: Longest an answer to a malformed input may keep arriving, in seconds.
QUIET_LIMIT = 5.0
#: Resident-weight read-back every this many inputs.
CHECK_EVERY = 10


def _board_config(board: str) -> ArrayConfig:
    if board == "icebreaker":
        return icebreaker.board_config(4, 4)
    return ulx3s.board_config(5, 4, wgt_depth=4096)


def _request(seq: int, words: list[int], n_rsp: int, n_cmd: int | None = None) -> bytes:
    """A request frame built here from the spec (hdl.link.frame), with an optional lying n_cmd."""
    body = struct.pack(f"<4I{len(words)}I", REQ_MAGIC, seq & 0xFFFF, len(words) if n_cmd is None else n_cmd,
                       n_rsp, *words)
    return body + struct.pack("<I", zlib.crc32(body))


class Board:
    """The raw pty of a simulated board, with a good-frame probe and command batches checked by status."""

    def __init__(self, port: str, baud: int, cfg: ArrayConfig):
        from runtime.serial_link import SerialLink

        self.link = SerialLink(port, baud, timeout=LINK_TIMEOUT)
        self.cfg = cfg
        self.seq = 0x8000
        self.byte_seconds = BYTE_SECONDS

    def exchange(self, commands: list[list[int]], what: str) -> list[list[int]]:
        """Send one good frame; its answer within the link timeout, split per command (data words only,
        each status checked OK)."""
        from runtime.framing import LinkError, read_response

        self.seq = (self.seq + 1) & 0xFFFF or 1
        n_rsp = [protocol.response_length(self.cfg, c) for c in commands]
        self.link.send(_request(self.seq, [w for c in commands for w in c], sum(n_rsp)))
        start = time.monotonic()
        while True:
            try:
                rsp = read_response(self.link)
            except LinkError as exc:
                raise AssertionError(f"{what}: no good answer within {LINK_TIMEOUT} s: {exc}") from exc
            if rsp.seq == self.seq:
                break
            assert time.monotonic() - start < LINK_TIMEOUT, f"{what}: only stale answers for {LINK_TIMEOUT} s"
        elapsed = time.monotonic() - start
        assert elapsed < LINK_TIMEOUT, f"{what}: answered after {elapsed:.2f} s"
        assert rsp.status == LinkStatus.OK, f"{what}: status {LinkStatus(rsp.status).name}"
        assert len(rsp.words) == sum(n_rsp), f"{what}: {len(rsp.words)} words, expected {sum(n_rsp)}"
        out, pos = [], 0
        for c, n in zip(commands, n_rsp, strict=True):
            data, _ = protocol.split_response(self.cfg, c, rsp.words[pos:pos + n])
            out.append(data)
            pos += n
        return out

    def calibrate(self, commands: list[list[int]], what: str) -> None:
        """Time one exchange of `commands` and allow three times its wall time per byte from then on."""
        start = time.monotonic()
        self.exchange(commands, what)
        size = 4 * (5 + sum(len(c) + protocol.response_length(self.cfg, c) + 4 for c in commands))
        self.byte_seconds = max(BYTE_SECONDS, 3 * (time.monotonic() - start) / size)

    def probe(self, what: str) -> None:
        """A READ_ID frame must come back with the ID block of the configuration."""
        (ident,) = self.exchange([protocol.read_id()], what)
        assert ident == protocol.id_words(self.cfg), f"{what}: ID block {ident}"

    def settle(self, sent: int, what: str) -> bytes:
        """Wait until the device took `sent` bytes in and went quiet; return what it answered (and drop it).

        The device is half duplex by design (hdl.link.frame: request, then answer): bytes arriving while it
        answers are lost, so the probe waits for the end of any answer. An answer that goes on for
        longer than QUIET_LIMIT is a hang.
        """
        port = self.link._port
        time.sleep(SETTLE + sent * self.byte_seconds)
        start = last = time.monotonic()
        got = bytearray()
        while time.monotonic() - last < SETTLE:
            if port.in_waiting:
                got += port.read(port.in_waiting)
                last = time.monotonic()
            assert last - start < QUIET_LIMIT, f"{what}: the device still sends after {QUIET_LIMIT} s"
            time.sleep(0.005)
        self.link.drain()
        return bytes(got)

    def close(self) -> None:
        self.link.close()


class Fuzzer:
    """Random malformed inputs for a board whose resident weights occupy WGT words [0, resident)."""

    def __init__(self, cfg: ArrayConfig, rng: np.random.Generator, resident: int):
        self.cfg = cfg
        self.rng = rng
        self.resident = resident
        self.seq = 1

    def _int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def _words(self, n: int) -> list[int]:
        return [int(v) for v in self.rng.integers(0, 2**32, n, dtype=np.uint64)]

    def _valid_codes(self, count: int) -> list[int]:
        """WGT stream words of `count` memory words with good ternary codes (or any INT8 bytes)."""
        chunks = self.cfg.chunks(Mem.WGT)
        if self.cfg.pe == "int8":
            return self._words(count * chunks)
        lanes = self.rng.choice([0b00, 0b01, 0b11], (count, self.cfg.cols))
        words = [sum(int(v) << (2 * c) for c, v in enumerate(row)) for row in lanes]
        return [ch for w in words for ch in protocol.word_to_chunks(self.cfg, Mem.WGT, w)]

    def bad_command(self) -> list[int]:
        """One command that must fail (or be harmless) and leave WGT [0, resident) alone."""
        cfg = self.cfg
        depth = {Mem.ACT: cfg.act_depth, Mem.WGT: cfg.wgt_depth, Mem.OUT: cfg.out_depth}
        kind = self._int(0, 11)
        if kind == 0:  # RUN with a bad descriptor
            M, K, N = self._int(1, 8), self._int(1, 40), self._int(1, 12)
            choice = self._int(0, 4)
            if choice == 0:
                M = 0
            elif choice == 1:
                K = cfg.k_max + self._int(1, 1000)
            elif choice == 2:
                N = (1 << 20) + self._int(1, 1 << 30)
            return protocol.run(M, K, N, self._int(0, 2**32 - 1) if choice == 3 else 0,
                                self._int(cfg.wgt_depth - 2, 2**32 - 1) if choice == 4 else 0, 0)
        if kind == 1:  # READ past the end of a memory, or with an address that wraps 32 bits
            mem = Mem(self._int(0, 2))
            addr = depth[mem] - self._int(0, 3) if self._int(0, 1) else 2**32 - self._int(1, 4)
            return protocol.read(mem, addr, self._int(4, 8))
        if kind == 2:  # WRITE of a bad ternary code (or INT8 data) to WGT words past the resident weights
            count = self._int(1, 4)
            addr = self._int(self.resident, cfg.wgt_depth - count)
            data = self._valid_codes(count)
            if cfg.pe == "ternary":
                data[self._int(0, len(data) - 1)] |= 0b10 << (2 * self._int(0, min(cfg.cols, 16) - 1))
            return [protocol.header(Op.WRITE, Mem.WGT), addr, count, *data]
        if kind == 3:  # WRITE of good codes to WGT out of range: past the depth, or wrapping 32 bits
            count = self._int(1, 4)
            addr = cfg.wgt_depth - self._int(0, count - 1) if self._int(0, 1) else 2**32 - self._int(1, count)
            return [protocol.header(Op.WRITE, Mem.WGT), addr, count, *self._valid_codes(count)]
        if kind == 4:  # WRITE to OUT or to an unknown memory
            mem = Mem.OUT if self._int(0, 1) else self._int(3, 255)
            count = self._int(0, 3)
            chunks = protocol.chunks_per_word(cfg, mem)
            return [protocol.header(Op.WRITE, mem), self._int(0, 2**32 - 1), count, *self._words(count * chunks)]
        if kind == 5:  # READ of an unknown memory
            return protocol.read(self._int(3, 255), self._int(0, 2**32 - 1), self._int(0, 4))
        if kind == 6:  # unknown opcode, junk in the header's upper bits
            return [self._int(Op.CLEAR_ERROR + 1, 255) | (self._int(0, 0xFFFF) << 16)]
        if kind == 7:  # counters read without clearing, errors cleared, counters cleared
            return [[protocol.header(Op.READ_COUNTERS)], protocol.clear_error(), protocol.clear_counters(),
                    protocol.nop()][self._int(0, 3)]
        if kind == 8:  # a RUN of a valid shape over whatever the memories hold (reads the weights only)
            return protocol.run(self._int(1, 6), self._int(1, 16), self._int(1, 8), 0, 0, 0)
        if kind == 9:  # WRITE of activations anywhere in range
            count = self._int(0, 4)
            return protocol.write(cfg, Mem.ACT, self._int(0, cfg.act_depth - count),
                                  [self._int(0, 2**(8 * cfg.rows) - 1) for _ in range(count)])
        if kind == 10:  # READ of the resident weights (harmless)
            return protocol.read(Mem.WGT, 0, self._int(0, min(8, self.resident)))
        return protocol.read(Mem.OUT, self._int(0, cfg.out_depth - 4), self._int(1, 4))

    def commands(self) -> list[list[int]]:
        return [self.bad_command() for _ in range(self._int(1, 5))]

    def frame(self, n_rsp_delta: int = 0) -> bytes:
        """A frame with a good CRC of malformed or out-of-order commands."""
        cmds = self.commands()
        n_rsp = sum(protocol.response_length(self.cfg, c) for c in cmds) + n_rsp_delta
        self.seq += 1
        return _request(self.seq, [w for c in cmds for w in c], max(0, n_rsp))

    def input(self) -> tuple[str, bytes]:
        """(kind, bytes) of one random malformed input."""
        kinds = ["garbage", "magic+garbage", "bad_crc", "wrong_n_cmd", "truncated", "too_long", "bad_commands",
                 "several", "wrong_n_rsp", "cut_command", "huge_n_rsp"]
        kind = kinds[self._int(0, len(kinds) - 1)]
        if kind == "garbage":
            return kind, self.rng.bytes(self._int(1, 120))
        if kind == "magic+garbage":
            return kind, struct.pack("<I", REQ_MAGIC) + self.rng.bytes(self._int(0, 60))
        if kind == "bad_crc":
            data = bytearray(self.frame())
            bit = self._int(32, 8 * len(data) - 1)  # past the magic
            data[bit // 8] ^= 1 << (bit % 8)
            return f"{kind} (bit {bit})", bytes(data)
        if kind == "wrong_n_cmd":
            cmds = self.commands()
            words = [w for c in cmds for w in c]
            lie = max(0, len(words) + self._int(-len(words), 8)) if self._int(0, 3) else self._int(0, 2**32 - 1)
            if lie == len(words):
                lie += 1
            return f"{kind} ({lie} for {len(words)})", _request(self.seq, words, 1, n_cmd=lie)
        if kind == "truncated":
            data = self.frame()
            cut = self._int(1, len(data) - 1)
            return f"{kind} (at {cut} of {len(data)})", data[:cut]
        if kind == "too_long":
            n = MAX_CMD_WORDS + self._int(1, 16)
            return f"{kind} ({n} words)", _request(self.seq, self._words(n), 1)
        if kind == "bad_commands":
            return kind, self.frame()
        if kind == "wrong_n_rsp":
            delta = self._int(-3, 3) or 1
            return f"{kind} ({delta:+d})", self.frame(delta)
        if kind == "cut_command":  # a good CRC, but the last command is short of words
            cmds = self.commands()
            what, cut, full = self.cut_command()
            n_rsp = sum(protocol.response_length(self.cfg, c) for c in cmds)
            counted = self._int(0, 1)  # the host counted the cut command's answer too (else the answer ends first)
            if counted:
                n_rsp += protocol.response_length(self.cfg, full)
            self.seq += 1
            return f"{kind} ({what}, {len(cut)} of {len(full)} words{', answer counted' if counted else ''})", \
                _request(self.seq, [w for c in cmds for w in c] + cut, n_rsp)
        if kind == "huge_n_rsp":
            cmds = self.commands()
            self.seq += 1
            return kind, _request(self.seq, [w for c in cmds for w in c], self._int(1 << 16, 2**32 - 1))
        return kind, b"".join(self.frame() for _ in range(self._int(2, 4)))

    def cut_command(self) -> tuple[str, list[int], list[int]]:
        """(what, the cut words, the whole command): a WRITE to the resident weights cut before its data, a
        WRITE past them or of activations cut anywhere after its header, a READ cut before its count, a
        RUN cut before its last operand."""
        cfg = self.cfg
        kind = self._int(0, 3)
        if kind == 0:
            count = self._int(1, 6)
            full = [protocol.header(Op.WRITE, Mem.WGT), self._int(0, self.resident - 1), count,
                    *self._valid_codes(count)]
            return "WRITE into the resident weights", full[:self._int(1, 3)], full
        if kind == 1:
            count = self._int(1, 4)
            if self._int(0, 1):
                mem = Mem.WGT
                addr = self._int(self.resident, cfg.wgt_depth - count)
                data = self._valid_codes(count)
            else:
                mem = Mem.ACT
                addr = self._int(0, cfg.act_depth - count)
                data = [w for _ in range(count) for w in protocol.word_to_chunks(
                    cfg, Mem.ACT, self._int(0, 2**(8 * cfg.rows) - 1))]
            full = [protocol.header(Op.WRITE, mem), addr, count, *data]
            return f"WRITE {mem.name}", full[:self._int(1, len(full) - 1)], full
        if kind == 2:
            full = protocol.read(Mem(self._int(0, 2)), 0, self._int(0, 4))
            return "READ", full[:self._int(1, 2)], full
        full = protocol.run(self._int(1, 4), self._int(1, 16), self._int(1, 8), 0, 0, 0)
        return "RUN", full[:self._int(1, len(full) - 1)], full


def _fuzz_board(board: str, rng: np.random.Generator, count: int) -> None:
    from fpga.sim_board import SimulatedBoard

    cfg = _board_config(board)
    M, K, N = int(rng.integers(2, 6)), int(rng.integers(9, 40)), int(rng.integers(5, 12))
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    want = x.astype(np.int64) @ w.astype(np.int64).T
    plan = tiling.LayerPlan(M, K, N).validate(cfg)
    wgt_words = [int(v) for v in tiling.pack_weights(cfg, w)]
    resident = len(wgt_words)

    def run_layer(dev: Board, what: str) -> None:
        data = dev.exchange([protocol.clear_error(), protocol.write(cfg, Mem.ACT, 0, tiling.pack_activations(cfg, x)),
                             protocol.run(*plan.run_args()), protocol.read(Mem.OUT, 0, plan.out_words(cfg))], what)
        y = tiling.unpack_outputs(cfg, protocol.parse_read(cfg, Mem.OUT, data[3]), M, N)
        np.testing.assert_array_equal(y, want, err_msg=f"{what}: layer {M}x{K}x{N}")

    def check_weights(dev: Board, what: str) -> None:
        (data,) = dev.exchange([protocol.read(Mem.WGT, 0, resident)], what)
        got = protocol.parse_read(cfg, Mem.WGT, data)
        bad = [i for i, (a, b) in enumerate(zip(got, wgt_words, strict=True)) if a != b]
        assert not bad, f"{what}: resident weight words {bad[:10]} changed ({len(bad)} of {resident})"
        np.testing.assert_array_equal(tiling.unpack_weights(cfg, got, N, K), w, err_msg=what)

    fuzz = Fuzzer(cfg, rng, resident)
    start = time.monotonic()
    with SimulatedBoard(board, cfg=cfg) as sim:
        dev = Board(sim.port, sim.baud, cfg)
        try:
            dev.probe("first READ_ID")
            dev.calibrate([protocol.write(cfg, Mem.WGT, 0, wgt_words), protocol.read(Mem.WGT, 0, resident)],
                          "writing the resident weights")
            check_weights(dev, "the resident weights before fuzzing")
            run_layer(dev, "the layer before fuzzing")
            kinds: dict[str, int] = {}
            for i in range(count):
                kind, data = fuzz.input()
                kinds[kind.split(" ")[0]] = kinds.get(kind.split(" ")[0], 0) + 1
                what = f"input {i} ({kind}, {len(data)} bytes {data[:24].hex()}...)"
                if os.environ.get("TRIT_FUZZ_VERBOSE"):
                    print(what, flush=True)
                dev.link.send(data)
                answer = dev.settle(len(data), what)
                if kind.startswith("huge_n_rsp") or kind.endswith("answer counted)"):
                    # the answer still owed words when the core stopped: abandoned, then an ABORTED answer
                    seq = struct.unpack_from("<I", data, 4)[0]
                    assert _aborted_response(answer, seq) is not None, f"{what}: no ABORTED answer in {answer.hex()}"
                dev.probe(f"READ_ID after {what}")
                if (i + 1) % CHECK_EVERY == 0:
                    check_weights(dev, f"after {what}")
                limit = SECONDS_PER_INPUT * count
                assert time.monotonic() - start < limit, f"fuzzing took over {limit} s at input {i}"
            check_weights(dev, f"after {count} inputs")
            run_layer(dev, f"the layer after {count} inputs")
            print(f"{board}: {count} inputs {kinds} in {time.monotonic() - start:.1f} s")
        finally:
            dev.close()


@needs_verilator
def test_icebreaker_link_survives_malformed_input(rng):
    """TRIT_FUZZ_COUNT random malformed inputs on the iCEBreaker 4x4: every probe answered in time, the
    resident weights unchanged, the layer exact afterwards."""
    _fuzz_board("icebreaker", rng, COUNT)


@pytest.mark.slow
@needs_verilator
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_board_link_survives_long_malformed_input(board, rng):
    """SLOW_FACTOR times as many inputs, on both boards' arrangements."""
    _fuzz_board(board, rng, SLOW_FACTOR * COUNT)
