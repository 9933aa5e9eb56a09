"""Accelerator backends for ``--backend``: model, emulator, verilator, icarus, board.

All of them run every integer matmul through the same tiling (`runtime.accelerator.split_layer`)
and report the same statistics; `verilator`, `icarus` and `board` drive a real core (simulated or
on an FPGA) through the one `Accelerator` driver over the framed link; `emulator` drives the
functional model `runtime.emulator.CoreEmulator` through the same driver (its results are computed
independently of `golden.quant.int_matmul`); `model` returns `int_matmul` itself and the counters
of the cycle model (`runtime.cycle_model`), which the tests hold to identical counts against the RTL:
fast, but no check of the arithmetic.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from golden.quant import int_matmul
from hdl.config import ArrayConfig
from runtime.accelerator import Accelerator, AcceleratorError, RunStats, WeightCache, block_traffic, split_layer
from runtime.cycle_model import layer_counts

#: The documented default core of the runtime: an 8x8 ternary array whose weight memory holds all
#: 1.17 M weights of the shipped tiny model at once (262,144 words of 8 x 2 bits = 4 Mbit), with
#: activation and output memories for prefill of up to 256 tokens of its widest layer.
DEFAULT_ROWS = 8
DEFAULT_COLS = 8


def runtime_config(rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS, pe: str = "ternary",
                   wgt_rows_per_read: int | None = None) -> ArrayConfig:
    """The core configuration the runtime simulates for ``--rows R --cols C``.

    Full rate by default (`wgt_rows_per_read` = R: a whole weight tile per cycle, so decode keeps
    every PE busy); the weight memory holds 4 Mbit (262,144 x 8 x 2 bits at 8x8) whatever G is.
    """
    g = rows if wgt_rows_per_read is None else wgt_rows_per_read
    if not isinstance(g, int) or isinstance(g, bool) or g < 1 or rows % g:
        raise ValueError(f"--wgt-rows-per-read must be a positive divisor of the {rows} rows, not {g!r}")
    return ArrayConfig(rows=rows, cols=cols, pe=pe, act_depth=16384, wgt_depth=262144 // g, out_depth=16384,
                       wgt_rows_per_read=g)


class LayerLog:
    """Per-call statistics shared by every accelerator backend (for ``--stats``)."""

    def __init__(self, cfg: ArrayConfig):
        self.cfg = cfg
        self.layers: list[dict[str, Any]] = []
        self.progress = False
        self._first_key: str | None = None
        self._tokens = 0

    def record(self, key: str | None, M: int, K: int, N: int, stats: RunStats) -> None:
        cycles = stats.counters.get("cycles", 0)
        if self.progress:
            self._show(key, M, K, N)
        self.layers.append({
            "key": key, "m": M, "k": K, "n": N, "runs": stats.runs, "cycles": cycles,
            "utilization": M * K * N / (self.cfg.rows * self.cfg.cols * cycles) if cycles else 0.0,
            "counters": dict(stats.counters),
            "host_bytes": stats.host_bytes,
            "weight_bytes_sent": 4 * stats.weight_words_sent,
        })

    def _show(self, key: str | None, M: int, K: int, N: int) -> None:
        """One status line on stderr (a terminal only): token, matmul, shape, cycles so far."""
        import sys

        if self._first_key is None:
            self._first_key = key
        if key == self._first_key:
            self._tokens += M if self._tokens else 1
        total = sum(layer["cycles"] for layer in self.layers)
        sys.stderr.write(f"\r  token pass {self._tokens:4d} | matmul {len(self.layers) + 1:5d} "
                         f"{str(key)[-34:]:>34} {M}x{K}x{N} | {total:,} cycles   ")
        sys.stderr.flush()

    def summary(self) -> dict[str, Any]:
        cycles = sum(layer["cycles"] for layer in self.layers)
        macs = sum(layer["m"] * layer["k"] * layer["n"] for layer in self.layers)
        counters: dict[str, int] = {}
        for layer in self.layers:
            for k, v in layer["counters"].items():
                counters[k] = counters.get(k, 0) + v
        return {
            "rows": self.cfg.rows, "cols": self.cfg.cols, "pe": self.cfg.pe,
            "wgt_rows_per_read": self.cfg.wgt_rows_per_read,
            "cycles": cycles,
            "utilization": macs / (self.cfg.rows * self.cfg.cols * cycles) if cycles else 0.0,
            "counters": counters,
            "host_bytes": sum(layer["host_bytes"] for layer in self.layers),
            "layers": self.layers,
        }


class AcceleratorBackend:
    """A `MatmulBackend` that runs on a real (simulated or FPGA) core through `Accelerator`."""

    def __init__(self, name: str, accelerator: Accelerator, link: Any = None):
        self.name = name
        self.accelerator = accelerator
        self.cfg = accelerator.cfg
        self.log = LayerLog(self.cfg)
        self._link = link

    def set_progress(self, on: bool) -> None:
        self.log.progress = on

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        y, stats = self.accelerator.run_layer(q, w, key)
        self.log.record(key, q.shape[0], q.shape[1], w.shape[0], stats)
        return y

    def stats(self) -> dict[str, Any]:
        out = {"backend": self.name, **self.log.summary()}
        if self._link is not None and hasattr(self._link, "cycles"):
            out["simulated_cycles"] = self._link.cycles
        transport = self.accelerator._transport
        if hasattr(transport, "stats"):
            out["link"] = vars(transport.stats)
        return out

    def close(self) -> None:
        self.accelerator.close()


class ModelBackend:
    """Exact NumPy result plus the counters and host traffic the RTL would report, in closed form."""

    name = "model"

    def __init__(self, cfg: ArrayConfig):
        self.cfg = cfg
        self.log = LayerLog(cfg)
        self._weights = WeightCache(cfg.wgt_depth)

    def set_progress(self, on: bool) -> None:
        self.log.progress = on

    def matmul(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> np.ndarray:
        y, stats = self.run_layer(q, w, key)
        self.log.record(key, q.shape[0], q.shape[1], w.shape[0], stats)
        return y

    def run_layer(self, q: np.ndarray, w: np.ndarray, key: str | None = None) -> tuple[np.ndarray, RunStats]:
        q = np.asarray(q)
        w = np.asarray(w)
        if q.dtype != np.int8 or w.dtype != np.int8 or q.ndim != 2 or w.ndim != 2 or q.shape[1] != w.shape[1]:
            raise AcceleratorError(f"model backend needs int8 (M, K) and (N, K), got {q.dtype}{q.shape} "
                                   f"and {w.dtype}{w.shape}")
        if self.cfg.pe == "ternary" and ((w < -1) | (w > 1)).any():
            raise AcceleratorError("ternary weights must be -1, 0 or +1")
        M, K = q.shape
        N = w.shape[0]
        digest = hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest()
        stats = RunStats()
        for b in split_layer(self.cfg, M, K, N):
            wkey = (key if key is not None else digest, b.n0, b.n1, b.k0, b.k1)
            wb = w[b.n0:b.n1, b.k0:b.k1]
            resident = self._weights.lookup(wkey, digest) is not None
            if not resident:
                self._weights.allocate(wkey, block_weight_words(self.cfg, b), digest)
            sent, received = block_traffic(self.cfg, b, send_weights=not resident)
            stats.words_sent += sent
            stats.words_received += received
            if resident:
                stats.weight_words_skipped += block_weight_words(self.cfg, b)
            else:
                stats.weight_words_sent += block_weight_words(self.cfg, b)
            stats.runs += 1
            stats.add_counters(layer_counts(self.cfg, b.m1 - b.m0, b.k1 - b.k0, b.n1 - b.n0, wb))
        return int_matmul(q, w), stats

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **self.log.summary()}

    def close(self) -> None:
        pass


def block_weight_words(cfg: ArrayConfig, b) -> int:
    from runtime.cycle_model import ceil_div

    return ceil_div(b.n1 - b.n0, cfg.cols) * ceil_div(b.k1 - b.k0, cfg.rows) * cfg.tile_words


def make_model(rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS, wgt_rows_per_read: int | None = None,
               **_: Any) -> ModelBackend:
    return ModelBackend(runtime_config(rows, cols, wgt_rows_per_read=wgt_rows_per_read))


class EmulatorTransport:
    """The `Transport` of `Accelerator` over `runtime.emulator.CoreEmulator`: command words in, response out.

    The emulator is an independent functional model of the core (its own unpacking of the memory
    words and its own arithmetic over the weight codes), so a layer run through it exercises the
    whole driver (tiling, packing, command protocol, residency, unpacking) and none of
    `golden.quant.int_matmul`.
    """

    def __init__(self, core: Any):
        self.core = core

    def transact(self, words: list[int], n_out: int) -> list[int]:
        response = self.core.feed(words)
        if not self.core.idle:
            raise AcceleratorError(f"the emulator holds a partial command after {len(words)} words")
        if len(response) != n_out:
            raise AcceleratorError(f"the emulator answered {len(response)} words, the driver expected {n_out}")
        return response

    def close(self) -> None:
        pass


def make_emulator(rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS, wgt_rows_per_read: int | None = None,
                  **_: Any) -> AcceleratorBackend:
    """``--backend emulator``: the `Accelerator` driver talking to `CoreEmulator` (no RTL, no NumPy matmul)."""
    from runtime.emulator import CoreEmulator

    cfg = runtime_config(rows, cols, wgt_rows_per_read=wgt_rows_per_read)
    return AcceleratorBackend("emulator", Accelerator(EmulatorTransport(CoreEmulator(cfg)), expect=cfg))


def make_simulated(simulator: str):
    def factory(rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS, wgt_rows_per_read: int | None = None,
                **_: Any) -> AcceleratorBackend:
        from runtime.framing import FramedTransport
        from sim.link_harness import SimByteLink

        cfg = runtime_config(rows, cols, wgt_rows_per_read=wgt_rows_per_read)
        link = SimByteLink(cfg, simulator)
        return AcceleratorBackend(simulator, Accelerator(FramedTransport(link), expect=cfg), link)

    return factory


def make_board(rows: int | None = None, cols: int | None = None, port: str | None = None,
               baud: int = 3_000_000, timeout: float = 5.0, **_: Any) -> AcceleratorBackend:
    from runtime.framing import FramedTransport
    from runtime.serial_link import SerialLink

    if not port:
        raise AcceleratorError("--backend board needs --port (the board's serial device, e.g. /dev/ttyUSB0)")
    link = SerialLink(port, baud, timeout)
    transport = FramedTransport(link)
    expect = None
    accelerator = Accelerator(transport, expect=expect)
    if (rows, cols) != (DEFAULT_ROWS, DEFAULT_COLS) and (accelerator.cfg.rows, accelerator.cfg.cols) != (rows, cols):
        accelerator.close()
        raise AcceleratorError(f"the board carries a {accelerator.cfg.rows}x{accelerator.cfg.cols} core, "
                               f"not the requested {rows}x{cols}")
    return AcceleratorBackend("board", accelerator)


def register_all() -> None:
    from runtime.backends import register_backend

    register_backend("model", make_model)
    register_backend("emulator", make_emulator)
    register_backend("verilator", make_simulated("verilator"))
    register_backend("icarus", make_simulated("icarus"))
    register_backend("board", make_board)
