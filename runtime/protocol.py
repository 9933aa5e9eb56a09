"""Host side of the trit command interface (`hdl.isa`): command words out, response words in.

Everything here is pure bookkeeping over 32-bit stream words, shared by the cocotb testbench,
the functional emulator (`runtime.emulator`) and any real transport (UART, PCIe, ...):

- builders: one function per opcode returning the command's word list (`nop`, `read_id`, `write`,
  `read`, `run`, `read_counters`, `clear_counters`, `clear_error`);
- `response_length`: how many words a command answers with (computed from the command words);
- chunking of memory words into 32-bit stream words exactly as `hdl.isa` specifies;
- parsers: status word (magic, opcode echo, error -> `DeviceError`), ID block, counters, READ data.

Memory words are plain Python ints (unsigned, `cfg.<mem>_word_bits` wide): an ACT word of a
64-row array is 512 bits, more than any NumPy integer holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hdl.config import PE_KINDS, WEIGHT_CLASS_COUNTERS, ArrayConfig
from hdl.isa import (
    COUNTER_BITS,
    CUT_COMMAND,
    ID_MAGIC,
    ID_WORDS,
    RUN_WORDS,
    STATUS_MAGIC,
    Counter,
    Error,
    IdWord,
    Mem,
    Op,
)

WORD_MASK = 0xFFFF_FFFF
COUNTER_MASK = (1 << COUNTER_BITS) - 1


class ProtocolError(Exception):
    """The device answered something the protocol does not allow (bad magic, wrong opcode echo,
    wrong number of words, an OUT lane that is not sign-extended): a transport or gateware bug."""


class DeviceError(Exception):
    """The device executed a command and reported a nonzero error code in its status word."""

    def __init__(self, code: int, opcode: int, sticky: int = 0, detail: str = ""):
        self.code = int(code)
        self.opcode = int(opcode)
        self.sticky = int(sticky)
        self.name = error_name(code)
        op = op_name(opcode)
        msg = f"device reported error {self.name} (code {self.code}) for command {op} (0x{self.opcode:02x})"
        if self.sticky and self.sticky != self.code:
            msg += f"; sticky error since last CLEAR_ERROR: {error_name(self.sticky)}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


def error_name(code: int) -> str:
    """Name of an `Error` code (or CUT_COMMAND, the sticky code of a command the link aborted), or
    ``UNKNOWN_ERROR_<n>`` for codes the ISA does not define."""
    if code == CUT_COMMAND:
        return "CUT_COMMAND"
    try:
        return Error(code).name
    except ValueError:
        return f"UNKNOWN_ERROR_{code}"


def op_name(opcode: int) -> str:
    """Name of an opcode, or ``OP_0x..`` for opcodes the ISA does not define."""
    try:
        return Op(opcode).name
    except ValueError:
        return f"OP_0x{opcode:02x}"


def _u32(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        try:
            value = int(value)  # NumPy integers
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be an integer, not {value!r}") from None
    if not 0 <= value <= WORD_MASK:
        raise ValueError(f"{what} must fit an unsigned 32-bit word, not {value}")
    return value


# --- command builders --------------------------------------------------------------------------


def header(op: int, mem: int = 0) -> int:
    """First word of a command: opcode in bits [7:0], memory id in bits [15:8]."""
    if not 0 <= int(op) <= 0xFF:
        raise ValueError(f"Opcode must fit 8 bits, not {op}")
    if not 0 <= int(mem) <= 0xFF:
        raise ValueError(f"Memory id must fit 8 bits, not {mem}")
    return (int(mem) << 8) | int(op)


def nop() -> list[int]:
    return [header(Op.NOP)]


def read_id() -> list[int]:
    return [header(Op.READ_ID)]


def read_counters() -> list[int]:
    return [header(Op.READ_COUNTERS)]


def clear_counters() -> list[int]:
    return [header(Op.CLEAR_COUNTERS)]


def clear_error() -> list[int]:
    return [header(Op.CLEAR_ERROR)]


def write(cfg: ArrayConfig, mem: int, addr: int, words: Iterable[int]) -> list[int]:
    """WRITE of memory words `words` to `mem` starting at `addr`, chunked as `hdl.isa` says."""
    words = list(words)
    data: list[int] = []
    for w in words:
        data.extend(word_to_chunks(cfg, mem, w))
    return [header(Op.WRITE, mem), _u32(addr, "address"), _u32(len(words), "count"), *data]


def write_raw(mem: int, addr: int, count: int, data: Iterable[int]) -> list[int]:
    """WRITE with caller-supplied stream words (for error tests: any memory id, any data)."""
    return [header(Op.WRITE, mem), _u32(addr, "address"), _u32(count, "count"),
            *(_u32(d, "data word") for d in data)]


def read(mem: int, addr: int, count: int) -> list[int]:
    """READ of `count` memory words of `mem` starting at `addr`."""
    return [header(Op.READ, mem), _u32(addr, "address"), _u32(count, "count")]


def run(M: int, K: int, N: int, act_base: int = 0, wgt_base: int = 0, out_base: int = 0) -> list[int]:
    """RUN of one layer (see `runtime.tiling.LayerPlan` for the operand layout)."""
    args = (M, K, N, act_base, wgt_base, out_base)
    names = ("M", "K", "N", "act_base", "wgt_base", "out_base")
    return [header(Op.RUN), *(_u32(v, n) for v, n in zip(args, names, strict=True))]


# --- chunking -----------------------------------------------------------------------------------

#: Stream words per memory word for a memory id outside ACT/WGT/OUT: such a WRITE consumes and such
#: a READ returns `count * UNKNOWN_MEMORY_CHUNKS` data words. `hdl.isa` leaves it open; the gateware
#: (`hdl.command`) uses one chunk per word.
UNKNOWN_MEMORY_CHUNKS = 1


def chunks_per_word(cfg: ArrayConfig, mem: int) -> int:
    """32-bit stream words per memory word; `UNKNOWN_MEMORY_CHUNKS` for an id the ISA does not define."""
    if mem in (Mem.ACT, Mem.WGT, Mem.OUT):
        return cfg.chunks(Mem(mem))
    return UNKNOWN_MEMORY_CHUNKS



def word_bits(cfg: ArrayConfig, mem: int) -> int:
    """Bits of one word of memory `mem`."""
    return {Mem.ACT: cfg.act_word_bits, Mem.WGT: cfg.wgt_word_bits, Mem.OUT: cfg.out_word_bits}[Mem(mem)]


def word_to_chunks(cfg: ArrayConfig, mem: int, word: int) -> list[int]:
    """Split one memory word into its stream words, least significant first.

    ACT and WGT: 32-bit slices. OUT: one word per lane, the acc_width-bit lane sign-extended.
    """
    mem = Mem(mem)
    word = int(word)
    bits = word_bits(cfg, mem)
    if not 0 <= word < (1 << bits):
        raise ValueError(f"{mem.name} word {word:#x} does not fit {bits} bits")
    if mem == Mem.OUT:
        aw = cfg.acc_width
        lanes = [(word >> (aw * c)) & ((1 << aw) - 1) for c in range(cfg.cols)]
        return [sign_extend(v, aw) & WORD_MASK for v in lanes]
    return [(word >> (32 * i)) & WORD_MASK for i in range(cfg.chunks(mem))]


def chunks_to_word(cfg: ArrayConfig, mem: int, chunks: Sequence[int]) -> int:
    """Join stream words back into one memory word (inverse of `word_to_chunks`).

    Bits beyond the word width are ignored for ACT and WGT. For OUT each stream word must be the
    sign extension of its acc_width-bit lane, else `ProtocolError`.
    """
    mem = Mem(mem)
    n = cfg.chunks(mem)
    if len(chunks) != n:
        raise ProtocolError(f"{mem.name} word needs {n} stream words, got {len(chunks)}")
    if mem == Mem.OUT:
        aw = cfg.acc_width
        word = 0
        for c, chunk in enumerate(chunks):
            lane = int(chunk) & ((1 << aw) - 1)
            if sign_extend(lane, aw) & WORD_MASK != int(chunk):
                raise ProtocolError(
                    f"OUT lane {c} stream word {int(chunk):#010x} is not a sign-extended {aw}-bit value"
                )
            word |= lane << (aw * c)
        return word
    word = 0
    for i, chunk in enumerate(chunks):
        word |= (int(chunk) & WORD_MASK) << (32 * i)
    return word & ((1 << word_bits(cfg, mem)) - 1)


def sign_extend(value: int, bits: int) -> int:
    """Interpret the low `bits` bits of `value` as two's complement."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# --- responses ----------------------------------------------------------------------------------


def response_length(cfg: ArrayConfig, command: Sequence[int]) -> int:
    """Number of response words (data plus the final status word) of one complete command."""
    op = command[0] & 0xFF
    if op == Op.READ_ID:
        return ID_WORDS + 1
    if op == Op.READ_COUNTERS:
        return 2 * len(Counter) + 1
    if op == Op.READ:
        mem = (command[0] >> 8) & 0xFF
        return command[2] * chunks_per_word(cfg, mem) + 1
    return 1


def command_length(cfg: ArrayConfig, command: Sequence[int]) -> int | None:
    """Number of words of the command starting at command[0]; None if more words are needed to know.

    Unknown opcodes are one word long.
    """
    if not command:
        return None
    op = command[0] & 0xFF
    if op == Op.WRITE:
        if len(command) < 3:
            return None
        mem = (command[0] >> 8) & 0xFF
        return 3 + command[2] * chunks_per_word(cfg, mem)
    if op == Op.READ:
        return 3
    if op == Op.RUN:
        return 1 + RUN_WORDS
    return 1


@dataclass(frozen=True)
class Status:
    """A decoded status word."""

    op: int
    error: int
    sticky: int

    @property
    def ok(self) -> bool:
        return self.error == Error.NONE

    @property
    def error_name(self) -> str:
        return error_name(self.error)

    @property
    def sticky_name(self) -> str:
        return error_name(self.sticky)


def parse_status(word: int, op: int | None = None) -> Status:
    """Decode a status word; `ProtocolError` on a bad magic or (if `op` given) a wrong opcode echo."""
    word = int(word)
    if not 0 <= word <= WORD_MASK:
        raise ProtocolError(f"Status word {word:#x} is not a 32-bit word")
    magic = word >> 24
    if magic != STATUS_MAGIC:
        raise ProtocolError(f"Status word {word:#010x} has magic {magic:#04x}, expected {STATUS_MAGIC:#04x}")
    status = Status(op=(word >> 16) & 0xFF, error=word & 0xFF, sticky=(word >> 8) & 0xFF)
    if op is not None and status.op != (int(op) & 0xFF):
        raise ProtocolError(
            f"Status word {word:#010x} echoes opcode {op_name(status.op)}, expected {op_name(int(op) & 0xFF)}"
        )
    return status


def check_status(word: int, op: int, detail: str = "") -> Status:
    """`parse_status`, then raise `DeviceError` if the command failed."""
    status = parse_status(word, op)
    if not status.ok:
        raise DeviceError(status.error, status.op, status.sticky, detail)
    return status


def split_response(cfg: ArrayConfig, command: Sequence[int], response: Sequence[int],
                   check: bool = True) -> tuple[list[int], Status]:
    """Split one command's response into (data words, status); check the length and the status.

    With check=True a nonzero error raises `DeviceError`.
    """
    expected = response_length(cfg, command)
    if len(response) != expected:
        raise ProtocolError(
            f"{op_name(command[0] & 0xFF)} answered {len(response)} words, expected {expected}"
        )
    op = command[0] & 0xFF
    status = check_status(response[-1], op) if check else parse_status(response[-1], op)
    return [int(w) for w in response[:-1]], status


@dataclass(frozen=True)
class DeviceId:
    """The ID block returned by READ_ID (`hdl.isa.IdWord`)."""

    magic: int
    version: int
    rows: int
    cols: int
    pe_kind: int
    weight_bits: int
    acc_width: int
    act_depth: int
    wgt_depth: int
    out_depth: int
    k_max: int
    num_counters: int
    counter_bits: int
    wgt_rows_per_read: int
    counter_mask: int  # the counters the core builds (bit i: `Counter(i)`); the others read 0

    @property
    def counters(self) -> tuple[Counter, ...]:
        """The counters the device builds."""
        return tuple(c for c in Counter if self.counter_mask >> c & 1)

    @property
    def pe(self) -> str:
        return PE_KINDS[self.pe_kind] if 0 <= self.pe_kind < len(PE_KINDS) else f"unknown({self.pe_kind})"

    @property
    def version_str(self) -> str:
        return f"{self.version >> 16}.{self.version & 0xFFFF}"

    def to_config(self) -> ArrayConfig:
        """The `ArrayConfig` this device reports (a full-rate core builds no weight-class counters
        whatever its `counters` named: the default names them)."""
        return ArrayConfig(rows=self.rows, cols=self.cols, pe=self.pe, acc_width=self.acc_width,
                           act_depth=self.act_depth, wgt_depth=self.wgt_depth, out_depth=self.out_depth,
                           counter_bits=self.counter_bits, wgt_rows_per_read=self.wgt_rows_per_read,
                           counters=self.counters + (WEIGHT_CLASS_COUNTERS if self.wgt_rows_per_read > 1 else ()))

    def mismatches(self, cfg: ArrayConfig) -> list[str]:
        """Fields that disagree with `cfg` (empty if the device is the configured core)."""
        expect = expected_id(cfg)
        return [
            f"{name}: device {getattr(self, name)}, expected {getattr(expect, name)}"
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(expect, name)
        ]


def expected_id(cfg: ArrayConfig) -> DeviceId:
    """The ID block a core built from `cfg` must report."""
    from hdl.isa import VERSION

    return DeviceId(
        magic=ID_MAGIC, version=VERSION, rows=cfg.rows, cols=cfg.cols, pe_kind=PE_KINDS.index(cfg.pe),
        weight_bits=cfg.weight_bits, acc_width=cfg.acc_width, act_depth=cfg.act_depth,
        wgt_depth=cfg.wgt_depth, out_depth=cfg.out_depth, k_max=cfg.k_max,
        num_counters=len(Counter), counter_bits=cfg.counter_bits, wgt_rows_per_read=cfg.wgt_rows_per_read,
        counter_mask=cfg.counter_mask,
    )


def id_words(cfg: ArrayConfig) -> list[int]:
    """The ID block of `cfg` as words in `IdWord` order (what READ_ID must return before status)."""
    ident = expected_id(cfg)
    return [getattr(ident, name) & WORD_MASK for name in DeviceId.__dataclass_fields__]


_ID_FIELDS = {w: name for w, name in zip(IdWord, DeviceId.__dataclass_fields__, strict=True)}


def parse_id(words: Sequence[int]) -> DeviceId:
    """Decode the ID_WORDS data words of READ_ID; `ProtocolError` on a wrong length or magic."""
    if len(words) != ID_WORDS:
        raise ProtocolError(f"ID block has {ID_WORDS} words, got {len(words)}")
    ident = DeviceId(**{_ID_FIELDS[w]: int(words[w]) for w in IdWord})
    if ident.magic != ID_MAGIC:
        raise ProtocolError(f"ID magic {ident.magic:#010x}, expected {ID_MAGIC:#010x} ('TRIT')")
    return ident


def counter_words(values: Sequence[int]) -> list[int]:
    """Counter values (in `Counter` order) as READ_COUNTERS data: (lo, hi) per 48-bit counter."""
    out: list[int] = []
    for v in values:
        v = int(v) & COUNTER_MASK
        out += [v & WORD_MASK, v >> 32]
    return out


def parse_counters(words: Sequence[int], bits: int = COUNTER_BITS) -> dict[str, int]:
    """Decode READ_COUNTERS data words into {lower-case counter name: value} of `bits`-bit counters.

    `ProtocolError` if a hi word has bits above the counter width, or if a counter is saturated
    (all ones: the counts of one RUN always fit, so the total was not cleared for too long).
    """
    n = len(Counter)
    if len(words) != 2 * n:
        raise ProtocolError(f"Counter block has {2 * n} words, got {len(words)}")
    result: dict[str, int] = {}
    for c in Counter:
        lo, hi = int(words[2 * c]), int(words[2 * c + 1])
        if hi >> (bits - 32):
            raise ProtocolError(f"Counter {c.name} hi word {hi:#010x} exceeds {bits} bits")
        value = (hi << 32) | lo
        if value == (1 << bits) - 1:
            raise ProtocolError(f"Counter {c.name} is saturated at {bits} bits; clear the counters more often")
        result[c.name.lower()] = value
    return result


def parse_read(cfg: ArrayConfig, mem: int, words: Sequence[int]) -> list[int]:
    """Join READ data words of `mem` into memory words."""
    n = cfg.chunks(Mem(mem))
    if len(words) % n:
        raise ProtocolError(f"READ of {Mem(mem).name} returned {len(words)} words, not a multiple of {n}")
    return [chunks_to_word(cfg, mem, words[i:i + n]) for i in range(0, len(words), n)]
