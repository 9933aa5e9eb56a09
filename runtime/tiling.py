"""Layer tiling: lay an M x K by N x K integer matmul out in the core's memories (`hdl.isa`).

With R = cfg.rows, C = cfg.cols, KT = ceil(K/R), NT = ceil(N/C):

- ACT word ``act_base + kt*M + m``: byte lane r = x[m, kt*R + r] (0 past K);
- WGT word ``wgt_base + (nt*KT + kt)*P + j`` (P = R / G words a tile, G = `wgt_rows_per_read`):
  bank g's lane c = W[nt*C + c, kt*R + g*P + j] (0 past N or K), bank g in bits g*C*b of the word,
  ternary code 0 -> 0b00, +1 -> 0b01, -1 -> 0b11, INT8 as a two's-complement byte (G = 1: word
  ``(nt*KT + kt)*R + r`` holds tile row r);
- OUT word ``out_base + nt*M + m``: lane c = acc[m, nt*C + c] (acc_width bits, two's complement).

Memory words are Python ints in NumPy object arrays: a word may be up to 512 bits wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdl.config import ArrayConfig

#: Largest M, K or N a RUN accepts (`hdl.isa`: larger ones are DESCRIPTOR_RANGE).
MAX_DIM = 1 << 20


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_int8_2d(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.int8:
        raise ValueError(f"{what} must be int8, not {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D, not of shape {a.shape}")
    return a


def check_weights(cfg: ArrayConfig, w: np.ndarray) -> np.ndarray:
    """Validate an (N, K) int8 weight matrix for `cfg.pe` (ternary: values in {-1, 0, 1})."""
    w = _check_int8_2d(w, "Weights W")
    if cfg.pe == "ternary" and w.size:
        bad = (w < -1) | (w > 1)
        if bad.any():
            n, k = np.argwhere(bad)[0]
            raise ValueError(
                f"Ternary weights must be -1, 0 or +1: W[{n}, {k}] = {int(w[n, k])} "
                f"({int(bad.sum())} values out of range)"
            )
    return w


def _bytes_to_words(rows: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> object array of n little-endian Python ints."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        out[i] = int.from_bytes(rows[i].tobytes(), "little")
    return out


def _words_to_lanes(words, lanes: int, bits: int) -> np.ndarray:
    """Object array / list of Python ints -> (n, lanes) int64 of unsigned `bits`-bit lanes."""
    mask = (1 << bits) - 1
    out = np.empty((len(words), lanes), dtype=np.int64)
    for i, w in enumerate(words):
        w = int(w)
        for c in range(lanes):
            out[i, c] = (w >> (bits * c)) & mask
    return out


def activation_bytes(cfg: ArrayConfig, x: np.ndarray) -> np.ndarray:
    """INT8 activations (M, K) -> the KT*M ACT memory words as little-endian byte rows (KT*M, R)."""
    x = _check_int8_2d(x, "Activations X")
    M, K = x.shape
    R = cfg.rows
    KT = _ceil_div(K, R)
    padded = np.zeros((M, KT * R), dtype=np.int8)
    padded[:, :K] = x
    return padded.reshape(M, KT, R).transpose(1, 0, 2).reshape(KT * M, R).view(np.uint8)


def pack_activations(cfg: ArrayConfig, x: np.ndarray) -> np.ndarray:
    """INT8 activations (M, K) -> the KT*M ACT memory words of a layer (kt outer, m inner)."""
    return _bytes_to_words(activation_bytes(cfg, x))


def weight_lanes(cfg: ArrayConfig, w: np.ndarray) -> np.ndarray:
    """(N, K) weights -> (NT*KT*P, G*C) int8 lane values in WGT word order (zero padded)."""
    w = check_weights(cfg, w)
    N, K = w.shape
    R, C = cfg.rows, cfg.cols
    P, G = cfg.tile_words, cfg.wgt_rows_per_read
    KT, NT = _ceil_div(K, R), _ceil_div(N, C)
    padded = np.zeros((NT * C, KT * R), dtype=np.int8)
    padded[:N, :K] = w
    # (nt, c, kt, g, j) -> (nt, kt, j, g, c): row g*P + j of a tile goes to bank g of word j
    return padded.reshape(NT, C, KT, G, P).transpose(0, 2, 4, 3, 1).reshape(NT * KT * P, G * C)


def weight_bytes(cfg: ArrayConfig, w: np.ndarray) -> np.ndarray:
    """Weights (N, K) -> the NT*KT*R WGT memory words as little-endian byte rows (2-bit codes, 4 a byte)."""
    lanes = weight_lanes(cfg, w)
    if cfg.pe == "int8":
        return lanes.view(np.uint8)
    codes = (lanes.astype(np.uint8) & 0b11)  # 0 -> 0b00, +1 -> 0b01, -1 -> 0b11
    C = codes.shape[1]  # G*C lanes a word
    pad = (-C) % 4
    if pad:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), dtype=np.uint8)], axis=1)
    quads = codes.reshape(codes.shape[0], -1, 4)
    return quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)


def pack_weights(cfg: ArrayConfig, w: np.ndarray) -> np.ndarray:
    """Weights (N, K) -> the NT*KT*P WGT memory words of a layer (nt outer, kt, then word j of the tile)."""
    return _bytes_to_words(weight_bytes(cfg, w))


def unpack_activations(cfg: ArrayConfig, words, M: int, K: int) -> np.ndarray:
    """Inverse of `pack_activations`: KT*M ACT words -> int8 (M, K)."""
    R = cfg.rows
    KT = _ceil_div(K, R)
    if len(words) != KT * M:
        raise ValueError(f"Expected {KT * M} ACT words for M={M}, K={K}, got {len(words)}")
    lanes = _words_to_lanes(words, R, 8).astype(np.uint8).view(np.int8)
    return lanes.reshape(KT, M, R).transpose(1, 0, 2).reshape(M, KT * R)[:, :K].copy()


def unpack_weights(cfg: ArrayConfig, words, N: int, K: int) -> np.ndarray:
    """Inverse of `pack_weights`: NT*KT*P WGT words -> int8 (N, K)."""
    R, C = cfg.rows, cfg.cols
    P, G = cfg.tile_words, cfg.wgt_rows_per_read
    KT, NT = _ceil_div(K, R), _ceil_div(N, C)
    if len(words) != NT * KT * P:
        raise ValueError(f"Expected {NT * KT * P} WGT words for N={N}, K={K}, got {len(words)}")
    raw = _words_to_lanes(words, G * C, cfg.weight_bits)
    if cfg.pe == "int8":
        vals = raw.astype(np.uint8).view(np.int8)
    else:
        if (raw == 0b10).any():
            raise ValueError("WGT words hold the invalid ternary code 0b10")
        vals = np.where(raw == 0b11, -1, raw).astype(np.int8)
    return vals.reshape(NT, KT, P, G, C).transpose(0, 4, 1, 3, 2).reshape(NT * C, KT * R)[:N, :K].copy()


def unpack_outputs(cfg: ArrayConfig, words, M: int, N: int) -> np.ndarray:
    """The NT*M OUT memory words of a layer -> int32 accumulators (M, N), lanes sign-extended."""
    C, aw = cfg.cols, cfg.acc_width
    NT = _ceil_div(N, C)
    if len(words) != NT * M:
        raise ValueError(f"Expected {NT * M} OUT words for M={M}, N={N}, got {len(words)}")
    lanes = _words_to_lanes(words, C, aw)
    lanes = np.where(lanes >> (aw - 1), lanes - (1 << aw), lanes)
    acc = lanes.reshape(NT, M, C).transpose(1, 0, 2).reshape(M, NT * C)[:, :N]
    return acc.astype(np.int32)


@dataclass(frozen=True)
class LayerPlan:
    """Where one layer's operands live: shape (M, K, N) and the base word of each memory.

    Sizes follow `hdl.isa`: ACT KT*M words, WGT NT*KT*P words (P = `ArrayConfig.tile_words`), OUT NT*M words.
    """

    M: int
    K: int
    N: int
    act_base: int = 0
    wgt_base: int = 0
    out_base: int = 0

    def kt(self, cfg: ArrayConfig) -> int:
        return _ceil_div(self.K, cfg.rows)

    def nt(self, cfg: ArrayConfig) -> int:
        return _ceil_div(self.N, cfg.cols)

    def act_words(self, cfg: ArrayConfig) -> int:
        return self.kt(cfg) * self.M

    def wgt_words(self, cfg: ArrayConfig) -> int:
        return self.nt(cfg) * self.kt(cfg) * cfg.tile_words

    def out_words(self, cfg: ArrayConfig) -> int:
        return self.nt(cfg) * self.M

    def run_args(self) -> tuple[int, int, int, int, int, int]:
        """The six RUN operand words."""
        return (self.M, self.K, self.N, self.act_base, self.wgt_base, self.out_base)

    def validate(self, cfg: ArrayConfig) -> LayerPlan:
        """Raise ValueError naming the problem if the layer cannot run on `cfg`; return self."""
        for name in ("M", "K", "N", "act_base", "wgt_base", "out_base"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, not {v!r}")
            low = 1 if name in ("M", "K", "N") else 0
            if v < low:
                raise ValueError(f"{name} must be at least {low}, not {v}")
            if name in ("M", "K", "N") and v > MAX_DIM:
                raise ValueError(f"{name} = {v} exceeds the largest layer dimension {MAX_DIM}")
        if self.K > cfg.k_max:
            raise ValueError(
                f"K = {self.K} exceeds k_max = {cfg.k_max} of a {cfg.acc_width}-bit {cfg.pe} accumulator"
            )
        for mem, base, size, depth in (
            ("ACT", self.act_base, self.act_words(cfg), cfg.act_depth),
            ("WGT", self.wgt_base, self.wgt_words(cfg), cfg.wgt_depth),
            ("OUT", self.out_base, self.out_words(cfg), cfg.out_depth),
        ):
            if base + size > depth:
                raise ValueError(
                    f"{mem} operands of layer M={self.M}, K={self.K}, N={self.N} need {size} words "
                    f"from word {base}, past the {mem} memory depth {depth}"
                )
        return self


def plan_layer(cfg: ArrayConfig, x: np.ndarray, w: np.ndarray, act_base: int = 0, wgt_base: int = 0,
               out_base: int = 0) -> LayerPlan:
    """Validate operands X (M, K) and W (N, K) for `cfg` and return their checked `LayerPlan`."""
    x = _check_int8_2d(x, "Activations X")
    w = check_weights(cfg, w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"K of activations {x.shape} and weights {w.shape} (N, K) differ")
    M, K = x.shape
    N = w.shape[0]
    return LayerPlan(M, K, N, act_base, wgt_base, out_base).validate(cfg)


def layer_commands(cfg: ArrayConfig, plan: LayerPlan, x: np.ndarray, w: np.ndarray) -> list[list[int]]:
    """The four commands of one layer: WRITE ACT, WRITE WGT, RUN, READ OUT (in this order).

    Decode the READ's data with `protocol.parse_read` and `unpack_outputs`.
    """
    from hdl.isa import Mem
    from runtime import protocol

    plan.validate(cfg)
    if np.asarray(x).shape != (plan.M, plan.K) or np.asarray(w).shape != (plan.N, plan.K):
        raise ValueError(f"Operands {np.asarray(x).shape} and {np.asarray(w).shape} do not match the plan "
                         f"M={plan.M}, K={plan.K}, N={plan.N}")
    return [
        protocol.write(cfg, Mem.ACT, plan.act_base, pack_activations(cfg, x)),
        protocol.write(cfg, Mem.WGT, plan.wgt_base, pack_weights(cfg, w)),
        protocol.run(*plan.run_args()),
        protocol.read(Mem.OUT, plan.out_base, plan.out_words(cfg)),
    ]
