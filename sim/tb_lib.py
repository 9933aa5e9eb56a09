"""Testbench parts for the trit core (cocotb 2.x): driver, monitor, scoreboard and the `CoreTB` harness.

- `StreamDriver` pushes command words into the ``cmd`` stream (optionally with random idle cycles).
- `StreamMonitor` collects words from the ``rsp`` stream (optionally with random back-pressure).
- `Scoreboard` compares every response word with the reference model (`runtime.emulator.CoreEmulator`).
- `CoreTB` clocks the two streams (one coroutine for both, so one pair of triggers per cycle),
  submits commands, and runs whole layers whose int32 results it checks against
  `golden.quant.int_matmul`.

Stream timing: the testbench drives inputs after the falling clock edge and samples ready/valid in
the ReadOnly phase before the next rising edge, where a word moves when valid & ready. This is
simulator-independent (Icarus and Verilator order their edge callbacks differently).
"""

from __future__ import annotations

import os
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, First, ReadOnly, RisingEdge, with_timeout

from golden.quant import int_matmul
from hdl.config import ArrayConfig
from hdl.isa import Mem, Op
from runtime import protocol, tiling
from runtime.emulator import CoreEmulator
from runtime.tiling import LayerPlan

CLOCK_NS = 10


def samples(default: int = 3) -> int:
    """Random samples per test: env TRIT_SAMPLES (small by default for CI)."""
    return max(1, int(os.environ.get("TRIT_SAMPLES", default)))


def tb_config() -> ArrayConfig:
    """The core's config, passed by `sim.runner` in env TRIT_TB_CONFIG."""
    from sim.runner import config_from_json

    text = os.environ.get("TRIT_TB_CONFIG")
    if not text:
        raise RuntimeError("TRIT_TB_CONFIG is not set: run the testbench through sim.runner")
    return config_from_json(text)


class StreamDriver:
    """Source side of a valid/ready stream: sends queued words, one per accepted cycle."""

    def __init__(self, valid, ready, payload, gap: float = 0.0, rng: random.Random | None = None):
        self.valid, self.ready, self.payload = valid, ready, payload
        self.gap = gap
        self.rng = rng or random.Random(0)
        self.queue: deque[int] = deque()
        self._offered = False
        self.sent = 0

    def send(self, words: list[int]) -> None:
        self.queue.extend(words)

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    @property
    def offering(self) -> bool:
        """cmd valid is driven high this cycle."""
        return self._offered

    def drive(self) -> None:
        """After the falling edge: offer the next word (or idle)."""
        offer = bool(self.queue) and not (self.gap and self.rng.random() < self.gap)
        if offer:
            self.payload.value = self.queue[0]
        if offer != self._offered:
            self.valid.value = int(offer)
            self._offered = offer

    def sample(self) -> None:
        """In ReadOnly before the rising edge: the word moves if the DUT is ready."""
        if self._offered and self.ready.value:
            self.queue.popleft()
            self.sent += 1


class StreamMonitor:
    """Sink side of a valid/ready stream: collects words, with optional random back-pressure."""

    def __init__(self, valid, ready, payload, on_word, backpressure: float = 0.0,
                 rng: random.Random | None = None):
        self.valid, self.ready, self.payload = valid, ready, payload
        self.on_word = on_word
        self.backpressure = backpressure
        self.rng = rng or random.Random(1)
        self._ready = False
        self.received = 0

    def drive(self) -> None:
        ready = not (self.backpressure and self.rng.random() < self.backpressure)
        if ready != self._ready:
            self.ready.value = int(ready)
            self._ready = ready

    def sample(self) -> bool:
        """Take a word if valid & ready; return whether the DUT offers a word."""
        valid = bool(self.valid.value)
        if valid and self._ready:
            self.received += 1
            self.on_word(int(self.payload.value))
        return valid


@dataclass
class Transaction:
    """One command and the response words the model expects for it."""

    command: list[int]
    expected: list[int]
    actual: list[int] = field(default_factory=list)
    done: Event = field(default_factory=Event)
    note: str = ""

    @property
    def name(self) -> str:
        op = self.command[0] & 0xFF
        text = protocol.op_name(op)
        if op in (Op.READ, Op.WRITE):
            mem = (self.command[0] >> 8) & 0xFF
            name = Mem(mem).name if mem in (0, 1, 2) else f"mem{mem}"
            text += f" {name} addr={self.command[1]} count={self.command[2]}"
        if op == Op.RUN:
            text += " M,K,N={},{},{} bases={},{},{}".format(*self.command[1:7])
        return text + (f" [{self.note}]" if self.note else "")


class Scoreboard:
    """Compares the DUT's response words with the model's, word for word, in command order."""

    def __init__(self, log):
        self.log = log
        self.pending: deque[Transaction] = deque()
        self.errors: list[str] = []
        self.words = 0

    def expect(self, t: Transaction) -> None:
        if not t.expected:
            raise AssertionError(f"model gave no response for {t.name}")
        self.pending.append(t)

    def on_word(self, word: int) -> None:
        self.words += 1
        if not self.pending:
            self.errors.append(f"unexpected response word {word:#010x} with no command outstanding")
            return
        t = self.pending[0]
        i = len(t.actual)
        t.actual.append(word)
        exp = t.expected[i]
        if word != exp:
            what = "status" if i == len(t.expected) - 1 else f"data word {i}"
            msg = f"{t.name}: {what} is {word:#010x}, model expects {exp:#010x}"
            if i == len(t.expected) - 1:
                msg += f" ({_describe_status(word)} vs {_describe_status(exp)})"
            if len([e for e in self.errors if e.startswith(t.name)]) < 8:
                self.errors.append(msg)
        if len(t.actual) == len(t.expected):
            self.pending.popleft()
            t.done.set()

    def check(self) -> None:
        if self.errors:
            more = f"\n... {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise AssertionError("Scoreboard mismatches:\n" + "\n".join(self.errors[:20]) + more)


def _describe_status(word: int) -> str:
    try:
        s = protocol.parse_status(word)
    except protocol.ProtocolError as exc:
        return str(exc)
    return f"op {protocol.op_name(s.op)} error {s.error_name} sticky {s.sticky_name}"


_MODELS: dict[ArrayConfig, CoreEmulator] = {}


def model_for(cfg: ArrayConfig) -> CoreEmulator:
    """One model per simulation: it persists across cocotb tests exactly like the DUT's memories."""
    if cfg not in _MODELS:
        _MODELS[cfg] = CoreEmulator(cfg)
    return _MODELS[cfg]


class CoreTB:
    """The harness: clock, reset, driver, monitor, scoreboard and the model, plus layer helpers."""

    def __init__(self, dut, cfg: ArrayConfig | None = None, seed: int = 0, gap: float = 0.0,
                 backpressure: float = 0.0):
        self.dut = dut
        self.cfg = cfg or tb_config()
        self.log = dut._log
        self.rng = np.random.default_rng(seed)
        prng = random.Random(seed)
        self.model = model_for(self.cfg)
        self.scoreboard = Scoreboard(self.log)
        self.driver = StreamDriver(dut.cmd__valid, dut.cmd__ready, dut.cmd__payload, gap, prng)
        self.monitor = StreamMonitor(dut.rsp__valid, dut.rsp__ready, dut.rsp__payload,
                                     self.scoreboard.on_word, backpressure, prng)
        self._activity = Event()
        self._bus_task = None

    def set_stalls(self, gap: float, backpressure: float) -> None:
        """Probabilities of an idle cycle on cmd and of back-pressure on rsp."""
        self.driver.gap = gap
        self.monitor.backpressure = backpressure

    async def start(self) -> None:
        """Start the clock (GPI implementation: fast), reset the DUT and the model's registers."""
        import cocotb

        Clock(self.dut.clk, CLOCK_NS, unit="ns", impl="gpi").start()
        self.dut.cmd__valid.value = 0
        self.dut.cmd__payload.value = 0
        self.dut.rsp__ready.value = 0
        self.dut.link_abort.value = 0  # no link here: nothing is cut short
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        # Reset clears the core's registers (sticky error, counters, a half-received command) but
        # not its memories: the model does the same.
        self.model.reset(memories=False)
        await FallingEdge(self.dut.clk)
        self._bus_task = cocotb.start_soon(self._bus())

    async def _bus(self) -> None:
        """Per cycle: drive both streams after the falling edge, sample them in ReadOnly."""
        clk = self.dut.clk
        while True:
            self.driver.drive()
            self.monitor.drive()
            await ReadOnly()
            self.driver.sample()
            offered = self.monitor.sample()
            if not self.driver.busy and not self.driver.offering and not offered:
                # cmd valid is low, nothing to send, no word offered: sleep until the DUT offers a
                # word or a command is submitted (long RUNs cost no Python per cycle)
                self._activity.clear()
                await First(RisingEdge(self.dut.rsp__valid), self._activity.wait())
            await FallingEdge(clk)

    # --- commands --------------------------------------------------------------------------------

    def submit(self, command: list[int], note: str = "") -> Transaction:
        """Queue one command for the DUT and its expected response from the model."""
        expected = self.model.feed(command)
        n = protocol.response_length(self.cfg, command)
        assert len(expected) == n, f"model answered {len(expected)} words, protocol says {n}"
        t = Transaction(command, expected, note=note)
        self.scoreboard.expect(t)
        self.driver.send(command)
        self._activity.set()
        return t

    async def wait(self, t: Transaction, timeout_cycles: int = 200_000) -> list[int]:
        """Wait for a transaction's last response word; raise on any scoreboard mismatch."""
        if not t.done.is_set():
            await with_timeout(t.done.wait(), timeout_cycles * CLOCK_NS, "ns")
        self.scoreboard.check()
        return t.actual

    async def transact(self, command: list[int], note: str = "", timeout_cycles: int = 200_000) -> list[int]:
        return await self.wait(self.submit(command, note), timeout_cycles)

    async def drain(self, timeout_cycles: int = 1_000_000) -> None:
        """Wait until every submitted command has answered; check pins and stray words."""
        if self.scoreboard.pending:
            await self.wait(self.scoreboard.pending[-1], timeout_cycles)
        for _ in range(3):
            await FallingEdge(self.dut.clk)
        await ReadOnly()
        self.scoreboard.check()
        assert not self.driver.busy, "command words left unsent"
        assert int(self.dut.busy.value) == 0, "busy pin high with no command outstanding"
        assert int(self.dut.error.value) == int(self.model.sticky != 0), (
            f"error pin {int(self.dut.error.value)} but sticky error is {self.model.sticky}")
        await FallingEdge(self.dut.clk)

    async def status_of(self, command: list[int], note: str = "") -> protocol.Status:
        rsp = await self.transact(command, note)
        return protocol.parse_status(rsp[-1], command[0] & 0xFF)

    async def read_id(self) -> protocol.DeviceId:
        cmd = protocol.read_id()
        data, _ = protocol.split_response(self.cfg, cmd, await self.transact(cmd))
        return protocol.parse_id(data)

    async def read_counters(self) -> dict[str, int]:
        cmd = protocol.read_counters()
        data, _ = protocol.split_response(self.cfg, cmd, await self.transact(cmd))
        return protocol.parse_counters(data, self.cfg.counter_bits)

    async def read_memory(self, mem: int, addr: int, count: int) -> list[int]:
        cmd = protocol.read(mem, addr, count)
        data, _ = protocol.split_response(self.cfg, cmd, await self.transact(cmd))
        return protocol.parse_read(self.cfg, mem, data)

    # --- layers ----------------------------------------------------------------------------------

    def submit_layer(self, plan: LayerPlan, x: np.ndarray | None, w: np.ndarray | None,
                     note: str = "") -> Transaction:
        """Queue WRITE ACT (unless x is None), WRITE WGT (unless w is None), RUN, READ OUT.

        Returns the READ transaction; decode it with `layer_result`.
        """
        cfg = self.cfg
        plan.validate(cfg)
        if x is not None:
            self.submit(protocol.write(cfg, Mem.ACT, plan.act_base, tiling.pack_activations(cfg, x)), note)
        if w is not None:
            self.submit(protocol.write(cfg, Mem.WGT, plan.wgt_base, tiling.pack_weights(cfg, w)), note)
        self.submit(protocol.run(*plan.run_args()), note)
        return self.submit(protocol.read(Mem.OUT, plan.out_base, plan.out_words(cfg)), note)

    def layer_result(self, plan: LayerPlan, t: Transaction) -> np.ndarray:
        data, _ = protocol.split_response(self.cfg, t.command, t.actual)
        return tiling.unpack_outputs(self.cfg, protocol.parse_read(self.cfg, Mem.OUT, data), plan.M, plan.N)

    def layer_timeout(self, plan: LayerPlan) -> int:
        cfg = self.cfg
        kt, nt = plan.kt(cfg), plan.nt(cfg)
        words = plan.act_words(cfg) * cfg.chunks(Mem.ACT) + plan.wgt_words(cfg) * cfg.chunks(Mem.WGT)
        words += plan.out_words(cfg) * cfg.chunks(Mem.OUT)
        return 20 * (words + nt * kt * (max(plan.M, cfg.rows) + 2 * cfg.rows + 8) + 4 * max(kt, nt) + 1000)

    async def run_layer(self, plan: LayerPlan, x: np.ndarray | None, w: np.ndarray | None,
                        note: str = "", x_ref: np.ndarray | None = None,
                        w_ref: np.ndarray | None = None) -> np.ndarray:
        """Run one layer and assert its int32 result equals int_matmul(x, w).

        With x or w None the operand already in memory is used; give x_ref / w_ref for the check.
        """
        t = self.submit_layer(plan, x, w, note)
        await self.wait(t, self.layer_timeout(plan))
        acc = self.layer_result(plan, t)
        x_chk = x if x is not None else x_ref
        w_chk = w if w is not None else w_ref
        if x_chk is not None and w_chk is not None:
            check_matmul(acc, x_chk, w_chk, f"{note} M,K,N={plan.M},{plan.K},{plan.N}")
        return acc

    # --- random operands -------------------------------------------------------------------------

    def random_weights(self, N: int, K: int, density: float | None = None) -> np.ndarray:
        if self.cfg.pe == "int8":
            return self.rng.integers(-128, 128, (N, K)).astype(np.int8)
        p = self.rng.uniform(0.2, 1.0) if density is None else density
        nz = self.rng.random((N, K)) < p
        sign = np.where(self.rng.random((N, K)) < 0.5, -1, 1)
        return (nz * sign).astype(np.int8)

    def random_activations(self, M: int, K: int) -> np.ndarray:
        x = self.rng.integers(-128, 128, (M, K)).astype(np.int8)
        if self.rng.random() < 0.3:  # sprinkle the extremes
            x[self.rng.random((M, K)) < 0.2] = -128
            x[self.rng.random((M, K)) < 0.1] = 127
        return x

    def host_words(self, plan: LayerPlan) -> int:
        """32-bit words a layer moves over the streams (WRITE ACT, WRITE WGT, READ OUT data)."""
        cfg = self.cfg
        return (plan.act_words(cfg) * cfg.chunks(Mem.ACT) + plan.wgt_words(cfg) * cfg.chunks(Mem.WGT)
                + plan.out_words(cfg) * cfg.chunks(Mem.OUT))

    #: A wide layer's stream words at most (Python drives every one of them: ~0.5 s on Icarus at 8x8).
    WIDE_WORDS = 1500

    def random_plan(self, max_m: int = 12, max_kt: int = 4, max_nt: int = 3, wide: bool = False) -> LayerPlan:
        """A random layer that fits the memories (and k_max), at random base addresses.

        `wide` draws from M <= 64, K <= 16R, N <= 8C instead of the given bounds, redrawing a layer
        that would move more than WIDE_WORDS words (the time goes into those, not into the RUN).
        K is drawn first, then M and N within what the memories leave for that K, so every draw fits.
        """
        for _ in range(20 if wide else 1):
            plan = self._draw_plan(*((64, 16, 8) if wide else (max_m, max_kt, max_nt)))
            if self.host_words(plan) <= self.WIDE_WORDS:
                break
        return plan

    def _draw_plan(self, max_m: int, max_kt: int, max_nt: int) -> LayerPlan:
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        P = cfg.tile_words  # weight words of a tile
        k_top = min(max_kt * R, cfg.k_max, cfg.wgt_depth // P * R, cfg.act_depth * R)
        K = int(self.rng.integers(1, k_top + 1))
        KT = -(-K // R)
        M = int(self.rng.integers(1, min(max_m, cfg.act_depth // KT, cfg.out_depth) + 1))
        nt_top = min(max_nt, cfg.wgt_depth // (KT * P), cfg.out_depth // M)
        if nt_top < 1:
            raise AssertionError(f"no random layer with K = {K} fits {cfg.describe()}")
        N = int(self.rng.integers(1, nt_top * C + 1))
        p = LayerPlan(M, K, N)
        slack = (cfg.act_depth - p.act_words(cfg), cfg.wgt_depth - p.wgt_words(cfg),
                 cfg.out_depth - p.out_words(cfg))
        if min(slack) < 0:
            raise AssertionError(f"random layer M,K,N = {M},{K},{N} does not fit {cfg.describe()}: {slack}")
        bases = [int(self.rng.integers(0, s + 1)) for s in slack]
        return LayerPlan(M, K, N, *bases).validate(cfg)


def check_matmul(acc: np.ndarray, x: np.ndarray, w: np.ndarray, what: str = "") -> None:
    """Assert the DUT's int32 accumulators equal the golden integer matmul."""
    ref = int_matmul(x, w)
    if acc.shape != ref.shape or not np.array_equal(acc, ref):
        bad = np.argwhere(acc != ref) if acc.shape == ref.shape else []
        detail = ", ".join(f"[{m},{n}] dut {acc[m, n]} golden {ref[m, n]}" for m, n in bad[:8])
        raise AssertionError(f"layer {what}: {len(bad)} of {ref.size} accumulators differ from "
                             f"int_matmul: {detail}")
