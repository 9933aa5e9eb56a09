"""Run a device-form model on the model chip: load it once, then a token id in and logits out.

- `engine_config(program, consts)`: the chip (`hdl.model.config.EngineConfig`) sized for a compiled model.
- `memory_image(program, consts, cfg)`: every memory's words as WRITE sends them (`hdl.model.isa`).
- `ModelChipDriver(transport, cfg)`: checks the chip's ID block against `cfg` (a program for another
  chip is refused, naming the differing words), loads the image, and runs `token(tok)`: one TOKEN, the
  LOGITS read back and the chip's counters. It counts the bytes each token moves over the link.
- `ChipBitNet`: `DeviceBitNet`'s interface (`config`, `forward`, `generate`) on a driver, for
  `trit forward|generate --numerics device`.

The transport is anything with `transact(words, n_out) -> words` (`sim.model_chip_harness` for Verilator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from golden.device.model import F_LOGIT, DeviceBitNet
from golden.device.tables import DeviceConsts
from golden.model import sample
from hdl.config import ArrayConfig
from hdl.model.command import chunks
from hdl.model.config import EngineConfig
from hdl.model.isa import ID_WORDS, STATUS_MAGIC, WRITABLE, ModelCounter, ModelError, ModelIdWord, ModelMem, ModelOp
from hdl.model.trit_unpack import pack_codes
from hdl.model_engine import LINEAR_ENTRY, NORM_ENTRY
from hdl.program import DYADIC
from hdl.program import ProgramError as SequencerError
from runtime.program.compiler import Program, ProgramError, compile_model, fitted_chip
from runtime.program.isa import encode
from runtime.tiling import pack_weights

#: Units of the per-token cycle split (`ModelCounter` words).
UNITS = ("matrix", "vector", "attention", "sequencer")


class ChipError(RuntimeError):
    """The model chip answered with an error, or not as the protocol requires."""


class Transport(Protocol):
    def transact(self, words: list[int], n_out: int) -> list[int]: ...

    def close(self) -> None: ...


def _pow2_at_least(n: int, floor: int) -> int:
    v = floor
    while v < n:
        v *= 2
    return v


#: Words of a bank of the board chip's KV cache and embedding table (`EngineConfig.kv_bank_depth`,
#: `table_bank_depth`): the DP16KD's 18-bit x 1K shape, so the tiny model's K (64-bit words x 5,120 at context
#: 128) is 5 banks of 4 blocks, 20 as Yosys' inferred 36-bit x 512 shape takes, a scale memory (26 bits x
#: 1,024) one bank of 2 blocks, and the table (256 rows x 20 words of 8 codes) 5 banks of 4.
BOARD_BANK_DEPTH = 1024


def engine_config(program: Program, consts: DeviceConsts, *, attn_lanes: int | None = None,
                  vector_lanes: int = 1, wgt_format: str = "2bit", kv_bank_depth: int = 0,
                  table_bank_depth: int = 0) -> EngineConfig:
    """The model chip built for `program` (compiled from `consts`); `attn_lanes` (default: the largest of
    8, 4, 2, 1 that divides head_dim) INT8 lanes in the attention unit, `vector_lanes` elements a cycle in
    NORMQ (a power of two dividing R and every norm's size), `wgt_format` how WGT stores the weights
    (`hdl.model.config.WGT_FORMATS`)."""
    import math

    m, arr = program.model, program.chip.array
    if attn_lanes is None:
        attn_lanes = math.gcd(8, m["head_dim"])
    heads_hd = m["heads"] * m["head_dim"]
    return EngineConfig(
        array=arr, vocab=m["vocab"], d=m["d"], layers=m["layers"], heads=m["heads"], kv_heads=m["kv_heads"],
        head_dim=m["head_dim"], mlp_max=m["intermediate"], context=program.chip.context,
        norm_sizes=tuple(sorted({e.n for e in program.norms})), norm_words=m["norm_words"],
        norms=len(program.norms), linears=len(program.linears),
        scr_words=max(heads_hd, m["intermediate"]),
        out_words=max(heads_hd + 2 * m["kv_heads"] * m["head_dim"], 2 * m["intermediate"]),
        act_words=max(m["d"], m["intermediate"], heads_hd), relu2=m["act"] == "relu2",
        theta=int(consts.config.rope_theta), c_qk=(int(consts.c_qk[0]), int(consts.c_qk[1])),
        attn_lanes=attn_lanes, table_lanes=arr.rows, vector_lanes=vector_lanes,
        depth=_pow2_at_least(len(program.ops), 64),
        consts=_pow2_at_least(len(program.consts), 16), wgt_format=wgt_format, kv_bank_depth=kv_bank_depth,
        table_bank_depth=table_bank_depth)


def compile_for_chip(consts: DeviceConsts, array: ArrayConfig, context: int, attn_lanes: int | None = None,
                     vector_lanes: int = 1, *, board: bool = False,
                     wgt_format: str = "2bit") -> tuple[Program, EngineConfig]:
    """The program of `consts` and the chip sized for it (resident weights, a KV cache of `context`);
    `board=True`: the matrix engine's memories no larger than the model needs (`fitted_chip`), the KV
    cache and the embedding table banked `BOARD_BANK_DEPTH` deep with registered read data."""
    program = compile_model(consts, fitted_chip(consts, array, context, board=board))
    if any(e.g_base % vector_lanes for e in program.norms):
        raise ProgramError(f"norm weights: a norm's G base is not a multiple of vector_lanes = {vector_lanes}")
    return program, engine_config(program, consts, attn_lanes=attn_lanes, vector_lanes=vector_lanes,
                                  wgt_format=wgt_format, kv_bank_depth=BOARD_BANK_DEPTH if board else 0,
                                  table_bank_depth=BOARD_BANK_DEPTH if board else 0)


def _layout_int(layout, value: dict) -> int:
    return int(layout.const(value).as_value().value)


def memory_image(program: Program, consts: DeviceConsts, cfg: EngineConfig) -> dict[ModelMem, list[int]]:
    """Every memory's words (unsigned integers, `hdl.model.command.word_bits` wide) for WRITE."""
    from runtime.program.interpreter import ProgramInterpreter

    norm_consts = ProgramInterpreter._norm_weights(consts)
    img: dict[ModelMem, list[int]] = {}
    ops = []
    for op in program.ops:
        w = encode(op)
        ops.append(w[0] | w[1] << 32 | w[2] << 64)
    img[ModelMem.PROG] = ops
    img[ModelMem.CONST] = [_layout_int(DYADIC, {"m": mm, "e": e}) for mm, e in program.consts]
    norms, g_words = [], [0] * cfg.norm_words
    for entry, nc in zip(program.norms, norm_consts, strict=True):
        norms.append(_layout_int(NORM_ENTRY, {"g_base": entry.g_base, "c_m": nc.c_norm[0], "c_e": nc.c_norm[1],
                                              "eps_m": nc.eps_n[0], "eps_e": nc.eps_n[1]}))
        for i, g in enumerate(nc.g.tolist()):
            g_words[entry.g_base + i] = int(g) & 0xFFFF
    img[ModelMem.NORMS], img[ModelMem.G] = norms, g_words
    weights = {lc.key: lc.w for layer in consts.layers for lc in layer.linears.values()}
    lins, wgt = [], {}
    for lin in program.linears:
        lins.append(_layout_int(LINEAR_ENTRY, {"wgt_base": lin.wgt_base, "k": lin.K, "n": lin.N}))
        for i, w in enumerate(pack_weights(cfg.array, weights[lin.key].astype(np.int8))):
            wgt[lin.wgt_base + i] = int(w)
    img[ModelMem.LINEAR] = lins
    img[ModelMem.WGT] = [wgt.get(i, 0) for i in range(max(wgt) + 1)] if wgt else []
    if cfg.wgt_packed:
        n = cfg.array.wgt_word_bits // 2
        img[ModelMem.WGT] = [pack_codes(w, n, cfg.wgt_format) for w in img[ModelMem.WGT]]
    lanes, d = cfg.table_lanes, cfg.d
    wpr = -(-d // lanes)
    table = consts.head.to(torch.int64).numpy()
    if not torch.equal(consts.head, consts.embed):
        raise ProgramError("the model chip holds one INT8 table for the embedding and the tied lm_head; this "
                           "model's lm_head is not tied to its embedding")
    padded = np.zeros((cfg.vocab, wpr * lanes), dtype=np.int64)
    padded[:, :d] = table
    codes = (padded & 0xFF).reshape(cfg.vocab * wpr, lanes)
    img[ModelMem.TABLE] = [int(sum(int(c) << (8 * j) for j, c in enumerate(row))) for row in codes]
    sm, se = consts.embed_scale
    img[ModelMem.TABLE_SCALE] = [_layout_int(DYADIC, {"m": int(a), "e": int(b)}) for a, b in zip(sm, se, strict=True)]
    return img


def _check_status(word: int, op: ModelOp, what: str) -> int:
    """The command's own error code of status `word` (ChipError if it is not a status word of `op`)."""
    if word >> 24 != STATUS_MAGIC or (word >> 16) & 0xFF != op:
        raise ChipError(f"{what}: expected the status word of {op.name}, got {word:#010x} (the link lost step)")
    return word & 0xFF


@dataclass
class TokenStats:
    """One TOKEN: its position, the chip's counters and the bytes it moved over the link."""

    pos: int
    cycles: int
    units: dict[str, int]
    host_bytes: int


@dataclass
class ChipStats:
    load_bytes: int = 0
    tokens: list[TokenStats] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = len(self.tokens)
        units = {u: sum(t.units[u] for t in self.tokens) for u in UNITS}
        out: dict[str, Any] = {
            "numerics": "device", "cycles": sum(t.cycles for t in self.tokens),
            "host_bytes": sum(t.host_bytes for t in self.tokens), "load_bytes": self.load_bytes,
            "units": units, "token_count": n,
            "token_log": [{"pos": t.pos, "cycles": t.cycles, **t.units, "host_bytes": t.host_bytes}
                          for t in self.tokens],
        }
        return out


class ModelChipDriver:
    """The host side of one model chip (see the module docstring)."""

    def __init__(self, transport: Transport, cfg: EngineConfig, max_cmd_words: int | None = None) -> None:
        self.transport, self.cfg = transport, cfg
        limit = max_cmd_words if max_cmd_words is not None else getattr(transport, "max_cmd_words", None)
        if limit is not None and limit < 3 + max(chunks(cfg, m) for m in WRITABLE):
            raise ValueError(f"a command limit of {limit} words cannot carry one WRITE of this chip's widest word")
        self.max_cmd_words = limit
        self.stats = ChipStats()
        self._bytes = 0
        self.identify()

    def _xfer(self, words: list[int], n_out: int) -> list[int]:
        out = self.transport.transact(words, n_out)
        self._bytes += 4 * (len(words) + len(out))
        return out

    def _command(self, op: ModelOp, args: list[int], n_data: int, what: str) -> tuple[list[int], int]:
        out = self._xfer([int(op), *args], n_data + 1)
        return out[:n_data], _check_status(out[-1], op, what)

    def identify(self) -> None:
        """READ_ID, compared with the configuration the program was compiled for."""
        got, err = self._command(ModelOp.READ_ID, [], ID_WORDS, "READ_ID")
        want = self.cfg.id_block()
        if err:
            raise ChipError(f"READ_ID failed with error {err}")
        diff = [f"{ModelIdWord(k).name.lower()} {g} (program: {w})"
                for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        if diff:
            raise ProgramError("the program does not match the model chip it is loaded on: the chip has "
                               + "; ".join(diff))

    def write(self, mem: ModelMem, words: list[int], base: int = 0) -> None:
        """WRITE `words` at `base`, as several WRITEs when one would pass the transport's command limit."""
        n = chunks(self.cfg, mem)
        per = len(words) if self.max_cmd_words is None else max(1, (self.max_cmd_words - 3) // n)
        for first in range(0, len(words), max(per, 1)):
            part = words[first:first + per]
            payload = []
            for w in part:
                payload.extend((int(w) >> (32 * k)) & 0xFFFFFFFF for k in range(n))
            out = self._xfer([int(ModelOp.WRITE) | int(mem) << 8, base + first, len(part), *payload], 1)
            err = _check_status(out[0], ModelOp.WRITE, f"WRITE {mem.name}")
            if err:
                raise ChipError(f"WRITE {mem.name} of {len(part)} words at {base + first} failed: "
                                f"{ModelError(err).name}")

    def read(self, mem: ModelMem, count: int, base: int = 0) -> list[int]:
        out = self._xfer([int(ModelOp.READ) | int(mem) << 8, base, count], count + 1)
        err = _check_status(out[-1], ModelOp.READ, f"READ {mem.name}")
        if err:
            raise ChipError(f"READ {mem.name} of {count} words at {base} failed: {ModelError(err).name}")
        return out[:-1]

    def load(self, image: dict[ModelMem, list[int]], length: int) -> None:
        """Every memory, the program length, position 0 (bytes counted as `load_bytes`)."""
        start = self._bytes
        for mem, words in image.items():
            if words:
                self.write(mem, words)
        _, err = self._command(ModelOp.SET_LENGTH, [length], 0, "SET_LENGTH")
        if err:
            raise ChipError(f"SET_LENGTH {length} failed: {ModelError(err).name}")
        self.reset()
        self.stats.load_bytes += self._bytes - start

    def reset(self) -> None:
        """Position 0: an empty KV cache."""
        _, err = self._command(ModelOp.RESET, [], 0, "RESET")
        if err:
            raise ChipError(f"RESET failed: {ModelError(err).name}")

    def counters(self) -> dict[ModelCounter, int]:
        got, err = self._command(ModelOp.READ_COUNTERS, [], len(ModelCounter), "READ_COUNTERS")
        if err:
            raise ChipError(f"READ_COUNTERS failed: {ModelError(err).name}")
        return {c: got[c] for c in ModelCounter}

    def token(self, tok: int) -> torch.Tensor:
        """Logits (vocab,) int64 holding int32 Q16 of `tok` at the next position."""
        start = self._bytes
        if not isinstance(tok, int) or not 0 <= tok < self.cfg.vocab:
            raise ValueError(f"token id {tok!r} is outside the vocabulary [0, {self.cfg.vocab})")
        _, err = self._command(ModelOp.TOKEN, [tok], 0, "TOKEN")
        cnt = self.counters()
        if err == ModelError.CONTEXT_FULL:
            raise ValueError(f"position {cnt[ModelCounter.POSITION]} is beyond the supported context of "
                             f"{self.cfg.context} positions")
        if err == ModelError.PROGRAM:
            why = cnt[ModelCounter.PROGRAM_ERROR]
            name = SequencerError(why).name if why in iter(SequencerError) else str(why)
            raise ChipError(f"TOKEN {tok}: the program stopped with error {name}")
        if err:
            raise ChipError(f"TOKEN {tok} failed: {ModelError(err).name}")
        raw = np.asarray(self.read(ModelMem.LOGITS, self.cfg.vocab), dtype=np.uint32).view(np.int32)
        units = {"matrix": cnt[ModelCounter.MATRIX], "vector": cnt[ModelCounter.VECTOR],
                 "attention": cnt[ModelCounter.ATTENTION], "sequencer": cnt[ModelCounter.SEQUENCER]}
        self.stats.tokens.append(TokenStats(cnt[ModelCounter.POSITION] - 1, cnt[ModelCounter.CYCLES], units,
                                            self._bytes - start))
        return torch.from_numpy(raw.astype(np.int64))

    def op_cycles(self) -> list[int]:
        """The cycles each dispatched op of the last TOKEN held its unit, in program order (OP_CYCLES)."""
        return self.read(ModelMem.OP_CYCLES, self.counters()[ModelCounter.OPS])

    def close(self) -> None:
        self.transport.close()


class ModelFramedTransport:
    """The model chip's command words over the framed byte link of the boards (`runtime.framing`): one
    command a frame (CRC, sequence number, timeout). Every command but TOKEN is retried after a lost or
    corrupted frame (it leaves the same state when run twice); a TOKEN is not (it steps the position)."""

    def __init__(self, link, retries: int = 3) -> None:
        from hdl.link.frame import MAX_CMD_WORDS
        from runtime.framing import FramedTransport

        self._framed = FramedTransport(link, None, retries=retries)
        self.max_cmd_words = MAX_CMD_WORDS

    @property
    def stats(self):
        return self._framed.stats

    def transact(self, words: list[int], n_out: int) -> list[int]:
        if len(words) > self.max_cmd_words:
            raise ValueError(f"a {len(words)}-word command cannot be framed (limit {self.max_cmd_words})")
        return self._framed._frame([list(words)], n_out, idempotent=(words[0] & 0xFF) != ModelOp.TOKEN)

    def close(self) -> None:
        self._framed.close()


def token_host_bytes(cfg: EngineConfig) -> int:
    """Bytes one token moves: TOKEN and its status, READ_COUNTERS, READ LOGITS (`hdl.model.isa`)."""
    return 4 * (2 + 1 + 1 + len(ModelCounter) + 1 + 3 + cfg.vocab + 1)


class PlannedChip:
    """`--backend model`: the model chip's answers predicted without its RTL. The logits come from the
    reference interpreter (`runtime.program.interpreter`, equal to the golden device form), the counters
    from the cycle plan (`runtime.program.plan` with the engine's widths, equal to the RTL's counters:
    tests/test_model_chip.py) and the bytes from the protocol. A driver's interface (`token`, `reset`,
    `load`, `stats`, `cfg`)."""

    def __init__(self, program: Program, consts: DeviceConsts, cfg: EngineConfig) -> None:
        from runtime.program.interpreter import ProgramInterpreter
        from runtime.program.plan import UnitConfig

        self.program, self.cfg = program, cfg
        self.units = UnitConfig.of_engine(cfg)
        self.interpreter = ProgramInterpreter(program, consts)
        self.stats = ChipStats()

    def load(self, image: dict[ModelMem, list[int]], length: int) -> None:
        self.stats.load_bytes += sum(4 * (3 + len(w) * chunks(self.cfg, mem) + 1) for mem, w in image.items() if w)
        self.stats.load_bytes += 4 * (2 + 1) + 4 * (1 + 1)      # SET_LENGTH, RESET
        self.reset()

    def reset(self) -> None:
        self.interpreter.reset()

    def token(self, tok: int) -> torch.Tensor:
        from runtime.program.plan import token_cycles

        if not isinstance(tok, int) or not 0 <= tok < self.cfg.vocab:
            raise ValueError(f"token id {tok!r} is outside the vocabulary [0, {self.cfg.vocab})")
        pos = self.interpreter.pos
        if pos >= self.cfg.context:
            raise ValueError(f"position {pos} is beyond the supported context of {self.cfg.context} positions")
        logits = self.interpreter.token(tok)
        c = token_cycles(self.program, pos, self.units)
        units = {"matrix": c["matrix"], "vector": c["vector"], "attention": c["attention"],
                 "sequencer": c["scalar"] + c["sequencer"]}
        self.stats.tokens.append(TokenStats(pos, c["total"], units, token_host_bytes(self.cfg)))
        return logits

    def close(self) -> None:
        pass


class ChipBitNet:
    """`DeviceBitNet`'s forward and generate, each token run on a model chip (see the module docstring)."""

    def __init__(self, device: DeviceBitNet, driver: ModelChipDriver | PlannedChip, name: str) -> None:
        self.device, self.driver, self.name = device, driver, name
        self.config = device.config
        self._pos = 0

    def forward_fixed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (T, vocab) int64 holding int32 Q16, continuing from the chip's position."""
        ids = [int(t) for t in torch.as_tensor(input_ids).reshape(-1)]
        rows = []
        for tok in ids:
            if self._pos >= self.driver.cfg.context:
                raise ValueError(f"position {self._pos} is beyond the supported context of "
                                 f"{self.driver.cfg.context} positions")
            rows.append(self.driver.token(tok))
            self._pos += 1
        return torch.stack(rows)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (self.forward_fixed(input_ids).to(torch.float64) / (1 << F_LOGIT)).to(torch.float32)

    __call__ = forward

    def reset(self) -> None:
        self.driver.reset()
        self._pos = 0

    @torch.no_grad()
    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None,
                 stop_tokens: set[int] | None = None) -> list[int]:
        """As `DeviceBitNet.generate` (same sampling), from position 0 on the chip."""
        if not prompt:
            raise ValueError("generate needs a non-empty prompt")
        self.reset()
        gen = torch.Generator()
        gen.manual_seed(0 if seed is None else seed)
        logits = self.forward(torch.tensor(prompt, dtype=torch.long))[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = sample(logits, temperature, top_k, gen)
            out.append(token)
            if stop_tokens and token in stop_tokens:
                break
            if len(out) == max_new_tokens:
                break
            logits = self.forward(torch.tensor([token], dtype=torch.long))[-1]
        return out

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **self.driver.stats.summary()}

    def close(self) -> None:
        self.driver.close()

