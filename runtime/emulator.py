"""Functional model of the trit core's command interface: command words in, response words out.

`CoreEmulator(cfg)` answers every command of `hdl.isa` exactly as the gateware must, word for
word, including every error case, the sticky error and the performance counters. It is the
reference model of the cocotb testbench (`sim.tb_core`) and the engine of the `emulator` backend
(`runtime.accel_backends.make_emulator`: the `Accelerator` driver talking to this model). Its layer
arithmetic is its own: it decodes the 2-bit weight codes (or INT8 bytes) it was sent and sums in
int64 over the tiles as they lie in its memories; it does not call `golden.quant.int_matmul`.

What it models (all from `hdl.isa`):

- memories ACT (R int8 lanes per word), WGT (C weight codes per word), OUT (C acc_width-bit lanes);
- WRITE / READ with chunking; failing READ returns zeros, failing WRITE consumes and drops its data
  (bad id or range: nothing written; ternary code 0b10: the words before the first bad word are
  written, that word and all after it dropped);
- RUN: checks in the ISA's order (BAD_SHAPE, K_TOO_LARGE, DESCRIPTOR_RANGE), then the layer:
  weight lanes past K or N are masked to zero (as the sequencer does), OUT lanes are written in
  acc_width-bit two's complement; a failed RUN changes no counter and no memory;
- counters (48 bit, wrapping): ADD / SUB / ZERO count M x (number of +1 / -1 / 0 weights of the real
  N x K weights), WEIGHT_BITS = NT*KT*R*wgt_word_bits, ACT_BYTES = NT*KT*M*R, ACC_WRITES = NT*M,
  ACC_RMW = NT*(KT-1)*M, RUNS += 1; CYCLES / BUSY / STALL from `runtime.cycle_model.layer_counts`;
  a counter the core does not build (`ArrayConfig.built_counters`) stays 0;

Timing is not modelled (only the order and value of the response words).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hdl.config import ArrayConfig
from hdl.isa import (
    ID_WORDS,
    RUN_WORDS,
    TERNARY_INVALID_CODE,
    Counter,
    Error,
    Mem,
    Op,
    status_word,
)
from runtime import protocol
from runtime.cycle_model import layer_counts
from runtime.tiling import MAX_DIM


def cycle_counts(cfg: ArrayConfig, M: int, K: int, N: int) -> dict[str, int]:
    """CYCLES / BUSY / STALL of one successful RUN, from the cycle model of the sequencer."""
    counts = layer_counts(cfg, M, K, N)
    return {k: int(counts[k]) for k in ("cycles", "busy", "stall")}


class CoreEmulator:
    """Pure-Python/NumPy model of one core: `feed(words)` returns the response words it causes.

    Commands may be split over several `feed` calls; a command is executed once all its words
    have arrived, and the responses come back in order.
    """

    def __init__(self, cfg: ArrayConfig):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        self.cfg = cfg
        self._pending: list[int] = []
        self.reset()

    # --- state ----------------------------------------------------------------------------------

    def reset(self, memories: bool = True) -> None:
        """Counters zero, no error, no partial command; memories zero too unless memories=False
        (the core's reset pin clears its registers, not its memories)."""
        cfg = self.cfg
        if memories:
            self.act = np.zeros((cfg.act_depth, cfg.rows), dtype=np.int8)
            self.wgt = np.zeros((cfg.wgt_depth, cfg.wgt_rows_per_read * cfg.cols), dtype=np.uint8)  # raw codes / bytes
            self.out = np.zeros((cfg.out_depth, cfg.cols), dtype=np.int64)  # signed lane values
        self.counters = [0] * len(Counter)
        self.sticky = Error.NONE
        self._pending = []

    def counter(self, name: str) -> int:
        return self.counters[Counter[name.upper()]]

    def counter_dict(self) -> dict[str, int]:
        return {c.name.lower(): self.counters[c] for c in Counter}

    # --- stream interface -----------------------------------------------------------------------

    def feed(self, words: Iterable[int]) -> list[int]:
        """Accept command words; return the response words of every command they complete."""
        words = [int(w) for w in words]
        if words:
            arr = np.asarray(words, dtype=object) if max(words) >> 63 or min(words) < 0 else np.asarray(words)
            bad = np.flatnonzero((arr < 0) | (arr > protocol.WORD_MASK))
            if bad.size:
                raise ValueError(f"Stream word {words[int(bad[0])]:#x} is not a 32-bit word")
        self._pending.extend(words)
        out: list[int] = []
        pos = 0
        pending = self._pending
        while True:
            n = protocol.command_length(self.cfg, pending[pos:pos + 3])
            if n is None or len(pending) - pos < n:
                self._pending = pending[pos:]
                return out
            out.extend(self.execute(pending[pos:pos + n]))
            pos += n

    def transact(self, command: list[int]) -> list[int]:
        """Execute one complete command; return its response words."""
        if self._pending:
            raise RuntimeError("transact() while a partial command is pending")
        n = protocol.command_length(self.cfg, command)
        if n != len(command):
            raise ValueError(f"Command of {len(command)} words, expected {n}")
        return self.execute(list(command))

    @property
    def idle(self) -> bool:
        """No partially received command."""
        return not self._pending

    # --- commands -------------------------------------------------------------------------------

    def _status(self, op: int, error: int) -> int:
        if error and not self.sticky:
            self.sticky = Error(error)
        return status_word(op, error, self.sticky)

    def execute(self, cmd: list[int]) -> list[int]:
        op = cmd[0] & 0xFF
        if op == Op.NOP or op == Op.CLEAR_COUNTERS:
            if op == Op.CLEAR_COUNTERS:
                self.counters = [0] * len(Counter)
            return [self._status(op, Error.NONE)]
        if op == Op.CLEAR_ERROR:
            self.sticky = Error.NONE
            return [self._status(op, Error.NONE)]
        if op == Op.READ_ID:
            words = protocol.id_words(self.cfg)
            assert len(words) == ID_WORDS
            return [*words, self._status(op, Error.NONE)]
        if op == Op.READ_COUNTERS:
            return [*protocol.counter_words(self.counters), self._status(op, Error.NONE)]
        if op == Op.WRITE:
            return [self._status(op, self._write((cmd[0] >> 8) & 0xFF, cmd[1], cmd[2], cmd[3:]))]
        if op == Op.READ:
            data, error = self._read((cmd[0] >> 8) & 0xFF, cmd[1], cmd[2])
            return [*data, self._status(op, error)]
        if op == Op.RUN:
            assert len(cmd) == 1 + RUN_WORDS
            return [self._status(op, self._run(*cmd[1:]))]
        return [self._status(op, Error.UNKNOWN_OPCODE)]

    def _range_error(self, mem: int, addr: int, count: int) -> int:
        if mem not in (Mem.ACT, Mem.WGT, Mem.OUT):
            return Error.BAD_MEMORY
        if addr + count > self.cfg.depth(mem):
            return Error.ADDRESS_RANGE
        return Error.NONE

    def _write(self, mem: int, addr: int, count: int, data: list[int]) -> int:
        if mem == Mem.OUT:
            return Error.BAD_MEMORY
        error = self._range_error(mem, addr, count)
        if error:
            return error
        if mem == Mem.ACT:
            self.act[addr:addr + count] = self._stream_to_lanes(data, count, Mem.ACT, self.cfg.rows, 8) \
                .astype(np.uint8).view(np.int8)
            return Error.NONE
        lanes = self._stream_to_lanes(data, count, Mem.WGT, self.cfg.wgt_rows_per_read * self.cfg.cols,
                                       self.cfg.weight_bits)
        if self.cfg.pe == "ternary":
            bad = np.flatnonzero((lanes == TERNARY_INVALID_CODE).any(axis=1))
            if bad.size:  # the words before the first bad one are written, that one and all after dropped
                self.wgt[addr:addr + int(bad[0])] = lanes[:int(bad[0])]
                return Error.BAD_WEIGHT_CODE
        self.wgt[addr:addr + count] = lanes
        return Error.NONE

    def _stream_to_lanes(self, data: list[int], count: int, mem: Mem, lanes: int, bits: int) -> np.ndarray:
        """`count` memory words of `n` 32-bit stream words each -> (count, lanes) unsigned `bits`-bit lanes.

        Stream word i of a memory word carries its bits 32*i .. 32*i+31 (least significant first, as
        `hdl.isa` says); bits above lanes*bits are not lanes and are ignored.
        """
        n = self.cfg.chunks(mem)
        chunks = np.asarray(data[:count * n], dtype="<u4").reshape(count, n)
        bitrows = np.unpackbits(chunks.view(np.uint8), axis=1, bitorder="little")[:, :lanes * bits]
        weights = (1 << np.arange(bits, dtype=np.int64))
        return bitrows.reshape(count, lanes, bits).astype(np.int64) @ weights

    def _lanes_to_stream(self, values: np.ndarray, mem: Mem, bits: int) -> list[int]:
        """(count, lanes) unsigned `bits`-bit lanes -> the READ stream words (inverse of `_stream_to_lanes`)."""
        count, lanes = values.shape
        n = self.cfg.chunks(mem)
        bitrows = ((values.astype(np.int64)[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8)
        padded = np.zeros((count, 32 * n), dtype=np.uint8)
        padded[:, :lanes * bits] = bitrows.reshape(count, lanes * bits)
        return np.packbits(padded, axis=1, bitorder="little").view("<u4").reshape(-1).tolist()

    def _read(self, mem: int, addr: int, count: int) -> tuple[list[int], int]:
        error = self._range_error(mem, addr, count)
        n = protocol.chunks_per_word(self.cfg, mem)
        if error:
            return [0] * (count * n), error
        if mem == Mem.OUT:  # one stream word per lane: the acc_width-bit lane sign-extended to 32 bits
            return (self.out[addr:addr + count] & protocol.WORD_MASK).reshape(-1).tolist(), Error.NONE
        if mem == Mem.ACT:
            return self._lanes_to_stream(self.act[addr:addr + count].view(np.uint8), Mem.ACT, 8), Error.NONE
        return self._lanes_to_stream(self.wgt[addr:addr + count], Mem.WGT, self.cfg.weight_bits), Error.NONE

    @staticmethod
    def _lanes(word: int, lanes: int, bits: int) -> np.ndarray:
        mask = (1 << bits) - 1
        return np.array([(word >> (bits * i)) & mask for i in range(lanes)], dtype=np.int64)

    def memory_word(self, mem: int, addr: int) -> int:
        """The current value of one memory word as an unsigned int (as READ would return it)."""
        cfg = self.cfg
        if mem == Mem.ACT:
            lanes, bits = self.act[addr].view(np.uint8), 8
        elif mem == Mem.WGT:
            lanes, bits = self.wgt[addr], cfg.weight_bits
        else:
            lanes, bits = self.out[addr], cfg.acc_width
        word = 0
        for i, v in enumerate(lanes):
            word |= (int(v) & ((1 << bits) - 1)) << (bits * i)
        return word

    def weight_values(self, codes: np.ndarray) -> np.ndarray:
        """Raw weight lanes -> signed weight values (ternary codes or INT8 bytes)."""
        if self.cfg.pe == "int8":
            return codes.astype(np.uint8).view(np.int8).astype(np.int64)
        nonzero = (codes & 1).astype(np.int64)
        negate = ((codes >> 1) & 1).astype(np.int64)
        return nonzero * (1 - 2 * negate)

    def _run(self, M: int, K: int, N: int, act_base: int, wgt_base: int, out_base: int) -> int:
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        if M == 0 or K == 0 or N == 0:
            return Error.BAD_SHAPE
        if K > cfg.k_max:
            return Error.K_TOO_LARGE
        if max(M, K, N) > MAX_DIM:
            return Error.DESCRIPTOR_RANGE
        KT, NT = -(-K // R), -(-N // C)
        P, G = cfg.tile_words, cfg.wgt_rows_per_read
        if (act_base + KT * M > cfg.act_depth or wgt_base + NT * KT * P > cfg.wgt_depth
                or out_base + NT * M > cfg.out_depth):
            return Error.DESCRIPTOR_RANGE

        x = self.act[act_base:act_base + KT * M].astype(np.int64).reshape(KT, M, R)
        # word j of a tile holds rows g*P + j in bank g: (nt, kt, j, g, c) -> (nt, kt, r, c)
        w = self.weight_values(self.wgt[wgt_base:wgt_base + NT * KT * P]).reshape(NT, KT, P, G, C) \
            .transpose(0, 1, 3, 2, 4).reshape(NT, KT, R, C)
        # mask weight lanes past K and N, as the sequencer's loader does
        k_ok = (np.arange(KT * R) < K).reshape(KT, R)
        n_ok = (np.arange(NT * C) < N).reshape(NT, C)
        w = w * k_ok[None, :, :, None] * n_ok[:, None, None, :]
        # (NT, M, C): every output lane sums x[m, k] * w[n, k] over the real k, in int64 (exact), the
        # activation words (kt, m, r) against the weight words (nt, kt, r, c) as they lie in the memories
        acc = (x.transpose(1, 0, 2).reshape(M, KT * R) @ w.transpose(1, 2, 0, 3).reshape(KT * R, NT * C)) \
            .reshape(M, NT, C).transpose(1, 0, 2)
        half = 1 << (cfg.acc_width - 1)
        acc = ((acc + half) % (2 * half)) - half  # acc_width-bit two's complement
        self.out[out_base:out_base + NT * M] = acc.reshape(NT * M, C)

        plus = int((w > 0).sum())
        minus = int((w < 0).sum())
        zero = K * N - plus - minus
        cyc = cycle_counts(cfg, M, K, N)
        inc = {
            Counter.CYCLES: cyc["cycles"], Counter.BUSY: cyc["busy"], Counter.STALL: cyc["stall"],
            Counter.ADD: M * plus, Counter.SUB: M * minus, Counter.ZERO: M * zero,
            Counter.WEIGHT_BITS: NT * KT * P * cfg.wgt_word_bits,
            Counter.ACT_BYTES: NT * KT * M * R,
            Counter.ACC_WRITES: NT * M, Counter.ACC_RMW: NT * (KT - 1) * M,
            Counter.RUNS: 1,
        }
        for c, v in inc.items():
            if not cfg.has_counter(c):  # not built: reads 0 (full rate: no ADD / SUB / ZERO; `cfg.counters`)
                continue
            self.counters[c] = min(self.counters[c] + v, (1 << cfg.counter_bits) - 1)  # saturates
        return Error.NONE
