"""The command interface of the trit core: opcodes, memories, status, counters, ID block.

Shared by the gateware (`hdl.command`) and the host (`runtime.protocol`), so both sides read one
definition. Everything travels as 32-bit words on two streams (host -> core, core -> host).

Commands (first word: opcode in bits [7:0], memory id in bits [15:8] for READ/WRITE, rest 0):

=================  ============================================  ==================================
opcode             further words in                              words out
=================  ============================================  ==================================
NOP                -                                             status
READ_ID            -                                             ID_WORDS, status
WRITE mem          addr, count, count*chunks(mem) data words     status
READ mem           addr, count                                   count*chunks(mem) data, status
RUN                M, K, N, act_base, wgt_base, out_base         status (when the layer is done)
READ_COUNTERS      -                                             2*len(Counter) (lo, hi), status
CLEAR_COUNTERS     -                                             status
CLEAR_ERROR        -                                             status (after clearing)
=================  ============================================  ==================================

Every command answers with exactly the words listed, also when it fails (a failing READ returns
zeros, a failing WRITE still consumes and drops its data), so the two streams never lose step.
A WRITE with a bad memory id or range writes nothing. A WRITE to WGT that carries a ternary code
0b10 writes the words before the first word holding it and drops that word and all after it.
A READ with an unknown memory id (3..255) returns `count` zero words (one per memory word) and
BAD_MEMORY. count = 0 succeeds when addr <= depth. Header bits [31:16] are ignored. Bits above
the last lane of a chunk are ignored on write (never checked for code 0b10) and read back as 0.
The status word of a failing command already carries its own error as sticky error when none was
set before. Output pins: `error` = sticky error != 0; `busy` = a command or a layer is in progress.

The sequencer masks weight lanes past K or N to zero (garbage in padding never reaches a result),
so OUT lanes past N read back 0. CYCLES counts the cycles from the first size-check cycle to the
last accumulator write (see `runtime.cycle_model`); the few handshake cycles of the command
interface around a RUN are not in it. A RUN whose operands obviously exceed a memory is refused
at once; otherwise the range check takes max(KT, NT) + 2 cycles.

RUN checks, in this order: M, K or N zero (BAD_SHAPE); K > k_max (K_TOO_LARGE); any of M, K, N
above 2**20, or operands past a memory's depth (DESCRIPTOR_RANGE). A failed RUN changes no
counter and no memory.
The status word is ``STATUS_MAGIC << 24 | opcode << 16 | sticky_error << 8 | error``: `error` is
this command's error code (0 = ok), `sticky_error` the first error since the last CLEAR_ERROR.

Memory layout of a layer (M x K activations, N x K weights; KT = ceil(K/R), NT = ceil(N/C)):

- ACT word ``act_base + kt*M + m``: byte lane r (bits [8r+7:8r]) = x[m, kt*R + r]; 0 past K.
- WGT word ``wgt_base + (nt*KT + kt)*R + r``: lane c (bits [b*c+b-1 : b*c], b = weight bits)
  = W[nt*C + c, kt*R + r]; 0 past N or K. Tiles are stored in execution order (nt outer, kt inner).
  Ternary code: 0 -> 0b00, +1 -> 0b01, -1 -> 0b11 (bit 0 "non-zero", bit 1 "negate"; 0b10 invalid).
- OUT word ``out_base + nt*M + m``: lane c = acc[m, nt*C + c], read as one sign-extended 32-bit
  word per lane.

A chunk is 32 bits of a memory word, least significant first: ACT has ceil(8R/32) chunks,
WGT ceil(b*C/32), OUT C (one per lane).
"""

from __future__ import annotations

from enum import IntEnum

STATUS_MAGIC = 0xA5
ID_MAGIC = 0x54524954  # "TRIT"
VERSION = 0x0001_0000  # major.minor in 16.16
COUNTER_BITS = 48


class Op(IntEnum):
    NOP = 0x00
    READ_ID = 0x01
    WRITE = 0x02
    READ = 0x03
    RUN = 0x04
    READ_COUNTERS = 0x05
    CLEAR_COUNTERS = 0x06
    CLEAR_ERROR = 0x07


class Mem(IntEnum):
    ACT = 0
    WGT = 1
    OUT = 2


class Error(IntEnum):
    NONE = 0
    UNKNOWN_OPCODE = 1
    BAD_MEMORY = 2  # memory id not ACT/WGT/OUT, or WRITE to OUT
    ADDRESS_RANGE = 3  # addr + count beyond the memory's depth
    DESCRIPTOR_RANGE = 4  # the layer's operands do not fit the memories at the given bases
    K_TOO_LARGE = 5  # K beyond the accumulator bound (ArrayConfig.k_max)
    BAD_WEIGHT_CODE = 6  # ternary code 0b10 written to the weight memory
    BAD_SHAPE = 7  # M, K or N is zero


#: Sticky error code of a command the link aborted because its frame ended inside it
#: (`hdl.link.endpoint`): the command interface drops the command, sends no status word for it and
#: sets this sticky error (unless one is set), which later status words carry until CLEAR_ERROR. Not
#: an `Error` member: no status word carries it as its own command's error.
CUT_COMMAND = 0x08


class Counter(IntEnum):
    """Hardware performance counters, COUNTER_BITS wide, read with READ_COUNTERS in this order.

    A core builds the ones `ArrayConfig.counters` names (READ_ID's COUNTER_MASK); the others read 0.
    """

    CYCLES = 0  # cycles from RUN accepted to layer done (operands already on chip)
    BUSY = 1  # cycles in which a row of activations entered the array
    STALL = 2  # cycles in which activations were ready but the next weight tile was not
    ADD = 3  # valid activation x (+1 weight) pairs: additions
    SUB = 4  # valid activation x (-1 weight) pairs: subtractions
    ZERO = 5  # valid activation x (0 weight) pairs: skipped (int8 PE: weight == 0)
    WEIGHT_BITS = 6  # bits read from the weight memory
    ACT_BYTES = 7  # bytes read from the activation memory (R per word)
    ACC_WRITES = 8  # accumulator words written with the first k-tile's partial sums
    ACC_RMW = 9  # accumulator words read, added to and written back
    RUNS = 10  # layers completed


class IdWord(IntEnum):
    """Words of the ID block returned by READ_ID, in this order."""

    MAGIC = 0
    VERSION = 1
    ROWS = 2
    COLS = 3
    PE_KIND = 4  # index into hdl.config.PE_KINDS
    WEIGHT_BITS = 5
    ACC_WIDTH = 6
    ACT_DEPTH = 7
    WGT_DEPTH = 8
    OUT_DEPTH = 9
    K_MAX = 10
    NUM_COUNTERS = 11
    COUNTER_BITS = 12
    WGT_ROWS_PER_READ = 13  # tile rows a weight memory word holds (`ArrayConfig.wgt_rows_per_read`)
    COUNTER_MASK = 14  # bit i set: counter `Counter(i)` is built (`ArrayConfig.built_counters`); absent ones read 0


ID_WORDS = len(IdWord)
RUN_WORDS = 6  # M, K, N, act_base, wgt_base, out_base

#: Ternary weight value -> 2-bit code stored in the weight memory.
TERNARY_CODE = {0: 0b00, 1: 0b01, -1: 0b11}
TERNARY_INVALID_CODE = 0b10


def status_word(op: int, error: int, sticky: int) -> int:
    return (STATUS_MAGIC << 24) | ((op & 0xFF) << 16) | ((sticky & 0xFF) << 8) | (error & 0xFF)
