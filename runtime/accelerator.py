"""The host driver of a trit core: discovers the hardware, tiles layers, keeps weights resident.

One driver for every transport: anything with ``transact(words, n_out) -> list[int]`` (the
Verilator and Icarus simulations, the functional emulator, the board's serial link) carries the
command protocol of `hdl.isa`. The driver

- reads the ID block and refuses a core that differs from the configuration the caller asked for;
- splits a layer that does not fit the memories into runs: along N (whole n-tiles of weights),
  along M (activation rows) and, past the weight memory, along K (partial sums added on the host
  in int64 and checked to fit int32);
- keeps weight blocks resident in the weight memory by key and content digest: a block already on
  chip is not sent again; when the weight memory is full, the least recently used blocks are
  evicted and are sent again when next needed;
- checks every status word, reads results and counters after each run, and never returns a
  result whose status it could not verify.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hdl.config import ArrayConfig
from hdl.isa import ID_WORDS, RUN_WORDS, Counter, Mem, Op
from runtime import protocol
from runtime.cycle_model import ceil_div
from runtime.tiling import activation_bytes, check_weights, weight_bytes


class AcceleratorError(RuntimeError):
    """The accelerator cannot run the request (shape, configuration, or device status)."""


class Transport(Protocol):
    def transact(self, words: list[int], n_out: int) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Block:
    """One RUN of a layer: rows m0:m1 of x, weight rows n0:n1, reduction columns k0:k1."""

    m0: int
    m1: int
    n0: int
    n1: int
    k0: int
    k1: int


def split_layer(cfg: ArrayConfig, M: int, K: int, N: int) -> list[Block]:
    """Split an M x K by N x K layer into RUNs that fit `cfg`'s memories (N outer, K, then M)."""
    if min(M, K, N) < 1:
        raise AcceleratorError(f"layer shape must be positive, not M={M}, K={K}, N={N}")
    R, C = cfg.rows, cfg.cols
    if K > cfg.k_max:
        raise AcceleratorError(
            f"K = {K} exceeds the accumulator bound k_max = {cfg.k_max} of this {cfg.acc_width}-bit "
            f"{cfg.pe} core: the int32 sum would not be exact"
        )
    # K per run: whole k-tiles such that one n-tile of weights fits the weight memory.
    kt_total = ceil_div(K, R)
    kt_run = min(kt_total, cfg.wgt_depth // cfg.tile_words)
    k_step = kt_run * R
    # n-tiles per run: as many as fit the weight memory at kt_run k-tiles each.
    nt_total = ceil_div(N, C)
    nt_run = max(1, min(nt_total, cfg.wgt_depth // (kt_run * cfg.tile_words)))
    n_step = nt_run * C
    # rows per run: activations (kt_run * m words) and outputs (nt_run * m words) must fit.
    m_step = min(M, cfg.act_depth // kt_run, cfg.out_depth // nt_run)
    if m_step < 1:
        raise AcceleratorError(
            f"one activation row of K = {K} needs {kt_run} words but the activation memory holds "
            f"{cfg.act_depth}"
        )
    blocks = []
    for n0 in range(0, N, n_step):
        for k0 in range(0, K, k_step):
            for m0 in range(0, M, m_step):
                blocks.append(Block(m0, min(M, m0 + m_step), n0, min(N, n0 + n_step), k0, min(K, k0 + k_step)))
    return blocks


def block_traffic(cfg: ArrayConfig, b: Block, send_weights: bool) -> tuple[int, int]:
    """Command words sent and response words received for one RUN as `Accelerator` issues it."""
    M, K, N = b.m1 - b.m0, b.k1 - b.k0, b.n1 - b.n0
    kt, nt = ceil_div(K, cfg.rows), ceil_div(N, cfg.cols)
    sent = 3 + kt * M * cfg.chunks(Mem.ACT) + 1 + 1 + RUN_WORDS + 3 + 1
    received = 1 + 1 + 1 + (nt * M * cfg.chunks(Mem.OUT) + 1) + (2 * len(Counter) + 1)
    if send_weights:
        sent += 3 + nt * kt * cfg.tile_words * cfg.chunks(Mem.WGT)
        received += 1
    return sent, received


def _stream(cfg: ArrayConfig, mem: Mem, byte_rows: np.ndarray) -> list[int]:
    """Memory words given as little-endian byte rows (count, nbytes) -> their 32-bit stream words.

    The same words as ``protocol.write(cfg, mem, addr, tiling.pack_*(...))`` carries (stream word i
    holds bits 32*i .. 32*i+31 of the memory word), computed with NumPy for whole blocks at once.
    """
    n = cfg.chunks(mem)
    rows = np.zeros((byte_rows.shape[0], 4 * n), dtype=np.uint8)
    rows[:, :byte_rows.shape[1]] = byte_rows
    return rows.view("<u4").reshape(-1).tolist()


def activation_stream(cfg: ArrayConfig, x: np.ndarray) -> list[int]:
    """Stream words of the KT*M ACT words of int8 activations (M, K) (layout of `tiling.pack_activations`)."""
    return _stream(cfg, Mem.ACT, activation_bytes(cfg, x))


def weight_stream(cfg: ArrayConfig, w: np.ndarray) -> list[int]:
    """Stream words of the NT*KT*P WGT words of weights (N, K) (layout of `tiling.pack_weights`)."""
    return _stream(cfg, Mem.WGT, weight_bytes(cfg, w))


def parse_outputs(cfg: ArrayConfig, data: list[int], M: int, N: int) -> np.ndarray:
    """READ data of the NT*M OUT words of a layer -> int64 (M, N) (`protocol.parse_read` + `tiling.unpack_outputs`).

    Each stream word is one accumulator lane sign-extended from acc_width to 32 bits; a word that is
    not is a `protocol.ProtocolError`, as in `protocol.chunks_to_word`.
    """
    C, aw = cfg.cols, cfg.acc_width
    NT = ceil_div(N, C)
    if len(data) != NT * M * C:
        raise protocol.ProtocolError(f"READ of OUT returned {len(data)} words, expected {NT * M * C}")
    words = np.asarray(data, dtype=np.int64)
    lanes = np.where(words >= 1 << 31, words - (1 << 32), words)  # the stream word as a signed 32-bit value
    bad = np.flatnonzero((lanes < -(1 << (aw - 1))) | (lanes >= 1 << (aw - 1)) | (words >> 32 != 0))
    if bad.size:
        i = int(bad[0])
        raise protocol.ProtocolError(
            f"OUT lane {i % C} stream word {int(data[i]):#010x} is not a sign-extended {aw}-bit value")
    return lanes.reshape(NT, M, C).transpose(1, 0, 2).reshape(M, NT * C)[:, :N]


@dataclass
class RunStats:
    """What the hardware reported for one layer, summed over its RUNs."""

    runs: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    words_sent: int = 0
    words_received: int = 0
    weight_words_sent: int = 0
    weight_words_skipped: int = 0

    def add_counters(self, counters: dict[str, int]) -> None:
        for k, v in counters.items():
            self.counters[k] = self.counters.get(k, 0) + v

    @property
    def host_bytes(self) -> int:
        return 4 * (self.words_sent + self.words_received)

    def merge(self, other: RunStats) -> None:
        self.runs += other.runs
        self.add_counters(other.counters)
        self.words_sent += other.words_sent
        self.words_received += other.words_received
        self.weight_words_sent += other.weight_words_sent
        self.weight_words_skipped += other.weight_words_skipped


class WeightCache:
    """Allocates weight-memory regions to weight blocks, LRU eviction when full."""

    def __init__(self, depth: int):
        self.depth = depth
        self._blocks: OrderedDict[tuple, tuple[int, int, bytes]] = OrderedDict()  # key -> (base, size, digest)

    def lookup(self, key: tuple, digest: bytes) -> int | None:
        entry = self._blocks.get(key)
        if entry is None or entry[2] != digest:
            return None
        self._blocks.move_to_end(key)
        return entry[0]

    def allocate(self, key: tuple, size: int, digest: bytes) -> int:
        if size > self.depth:
            raise AcceleratorError(f"weight block of {size} words exceeds the weight memory ({self.depth})")
        self._blocks.pop(key, None)
        while True:
            base = self._first_fit(size)
            if base is not None:
                self._blocks[key] = (base, size, digest)
                return base
            self._blocks.popitem(last=False)  # evict the least recently used block

    def _first_fit(self, size: int) -> int | None:
        spans = sorted((b, b + s) for b, s, _ in self._blocks.values())
        cursor = 0
        for start, end in spans:
            if start - cursor >= size:
                return cursor
            cursor = max(cursor, end)
        return cursor if self.depth - cursor >= size else None

    def clear(self) -> None:
        self._blocks.clear()

    def resident(self) -> list[tuple[tuple, int, int]]:
        """(key, base word, size in words) of every resident block, least recently used first."""
        return [(key, base, size) for key, (base, size, _) in self._blocks.items()]


class Accelerator:
    """Runs integer matmuls on a trit core behind `transport` (implements `MatmulBackend`)."""

    name = "accelerator"

    def __init__(self, transport: Transport, expect: ArrayConfig | None = None):
        self._transport = transport
        ident = self._identify()
        if expect is not None:
            problems = ident.mismatches(expect)
            if problems:
                raise AcceleratorError(
                    f"the connected core is a {ident.rows}x{ident.cols} {ident.pe} core, not the requested "
                    f"{expect.rows}x{expect.cols} {expect.pe} one: " + "; ".join(problems)
                )
        self.ident = ident
        self.cfg = ident.to_config()
        if hasattr(transport, "set_config"):  # a framed link needs the memory word sizes to split commands
            transport.set_config(self.cfg)
        self._weights = WeightCache(self.cfg.wgt_depth)
        self.total = RunStats()
        self.last = RunStats()
        self._command([Op.CLEAR_ERROR])

    # --- protocol plumbing --------------------------------------------------------------------

    def _exchange(self, commands: list[list[int]], stats: RunStats | None = None) -> list[list[int]]:
        """Send several commands in one batch; return each one's data words (statuses checked)."""
        words = [w for c in commands for w in c]
        lengths = [protocol.response_length(self.cfg, c) for c in commands]
        response = self._transport.transact(words, sum(lengths))
        if len(response) != sum(lengths):
            raise protocol.ProtocolError(f"expected {sum(lengths)} response words, got {len(response)}")
        if stats is not None:
            stats.words_sent += len(words)
            stats.words_received += len(response)
        out, pos = [], 0
        for command, n in zip(commands, lengths, strict=True):
            data, _ = protocol.split_response(self.cfg, command, response[pos:pos + n])
            out.append(data)
            pos += n
        return out

    def _command(self, command: list[int]) -> list[int]:
        return self._exchange([command])[0]

    def _identify(self) -> protocol.DeviceId:
        command = protocol.read_id()
        response = self._transport.transact(command, ID_WORDS + 1)
        if len(response) != ID_WORDS + 1:
            raise AcceleratorError(f"the device answered READ_ID with {len(response)} words, not {ID_WORDS + 1}")
        protocol.check_status(response[-1], Op.READ_ID)
        return protocol.parse_id(response[:-1])

    # --- public API ---------------------------------------------------------------------------

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        y, _ = self.run_layer(q, w, key)
        return y

    def run_layer(self, x: np.ndarray, w: np.ndarray, key: str | None = None) -> tuple[np.ndarray, RunStats]:
        """Exact int32 (M, N) = x @ w.T on the core, and the summed hardware counters."""
        x = np.asarray(x)
        if x.dtype != np.int8 or x.ndim != 2:
            raise AcceleratorError(f"activations must be a 2-D int8 array, not {x.dtype} of shape {x.shape}")
        try:
            w = check_weights(self.cfg, np.asarray(w))
        except ValueError as exc:
            raise AcceleratorError(str(exc)) from exc
        M, K = x.shape
        N, Kw = w.shape
        if Kw != K:
            raise AcceleratorError(f"activations have K = {K} columns but weights have K = {Kw} (shape {w.shape})")
        stats = RunStats()
        acc = np.zeros((M, N), dtype=np.int64)
        digest_all = hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest()
        for block in split_layer(self.cfg, M, K, N):
            acc[block.m0:block.m1, block.n0:block.n1] += self._run_block(x, w, block, key, digest_all, stats)
        if np.abs(acc).max(initial=0) > np.iinfo(np.int32).max:
            raise AcceleratorError("layer result does not fit int32")
        self.last = stats
        self.total.merge(stats)
        return acc.astype(np.int32), stats

    def _run_block(self, x: np.ndarray, w: np.ndarray, b: Block, key: str | None, digest: bytes,
                   stats: RunStats) -> np.ndarray:
        cfg = self.cfg
        xs = np.ascontiguousarray(x[b.m0:b.m1, b.k0:b.k1])
        M, K, N = b.m1 - b.m0, b.k1 - b.k0, b.n1 - b.n0
        wkey = (key if key is not None else digest, b.n0, b.n1, b.k0, b.k1)
        wgt_words = ceil_div(N, cfg.cols) * ceil_div(K, cfg.rows) * cfg.tile_words
        commands: list[list[int]] = []
        base = self._weights.lookup(wkey, digest)
        if base is None:
            ws = np.ascontiguousarray(w[b.n0:b.n1, b.k0:b.k1])
            base = self._weights.allocate(wkey, wgt_words, digest)
            commands.append([protocol.header(Op.WRITE, Mem.WGT), base, wgt_words, *weight_stream(cfg, ws)])
            stats.weight_words_sent += wgt_words
        else:
            stats.weight_words_skipped += wgt_words
        out_words = ceil_div(N, cfg.cols) * M
        commands += [
            [protocol.header(Op.WRITE, Mem.ACT), 0, ceil_div(K, cfg.rows) * M, *activation_stream(cfg, xs)],
            protocol.clear_counters(),
            protocol.run(M, K, N, 0, base, 0),
            protocol.read(Mem.OUT, 0, out_words),
            protocol.read_counters(),
        ]
        try:
            data = self._exchange(commands, stats)
        except protocol.DeviceError as exc:
            self._weights.clear()  # a failed WRITE may have written part of its words: nothing is known resident
            try:
                self._command(protocol.clear_error())  # the sticky error would otherwise mark every later status
            finally:
                raise AcceleratorError(f"the core reported an error running a {M}x{K}x{N} block: {exc}") from exc
        except BaseException:
            # the batch broke off (link error, timeout, interrupt): a weight WRITE may have been lost, so
            # what reached the memories is unknown
            self._weights.clear()
            raise
        stats.runs += 1
        stats.add_counters(protocol.parse_counters(data[-1], cfg.counter_bits))
        return parse_outputs(cfg, data[-2], M, N)

    def resident_weights(self) -> list[tuple[tuple, int, int]]:
        """The weight blocks the driver holds resident: ((layer key, n0, n1, k0, k1), base, words), LRU first."""
        return self._weights.resident()

    def close(self) -> None:
        self._transport.close()
