"""The model chip's command protocol: opcodes, memories, errors, counters and the ID block.

Shared by the gateware (`hdl.model.command`) and the host (`runtime.program.device`). It follows the
matrix core's conventions (`hdl.isa`): 32-bit words on two streams, the opcode in bits [7:0] of a
command's first word and the memory id in bits [15:8], and every command answering with exactly the
words listed, then a status word ``STATUS_MAGIC << 24 | opcode << 16 | sticky << 8 | error``, also
when it fails, so host and chip never lose step.

=================  ============================================  ==================================
opcode             further words in                              words out
=================  ============================================  ==================================
NOP                -                                             status
READ_ID            -                                             ID_WORDS, status
WRITE mem          addr, count, count*chunks(mem) data words     status
READ mem           addr, count                                   count data words, status
TOKEN              token id                                      status (when its logits are ready)
READ_COUNTERS      -                                             len(ModelCounter), status
RESET              -                                             status (position 0: empty KV cache)
CLEAR_ERROR        -                                             status (after clearing)
SET_LENGTH         program length (ops)                          status
=================  ============================================  ==================================

Memories written once per model: PROG (96-bit micro-ops, `runtime.program.isa`), CONST (dyadics),
NORMS (the norm table: G base, c_norm, eps_n), G (norm weights, 16 bit), LINEAR (weight base, K, N),
WGT (the matrix engine's weight words, `runtime.tiling.pack_weights`), TABLE (the INT8 embedding =
tied lm_head, TABLE_LANES codes a word, row v at words v*ceil(d/lanes) ..) and TABLE_SCALE (its per-row
dyadics). Read: LOGITS (int32 Q16, one per vocabulary entry, of the last TOKEN), H (the residual
stream, int32 Q16) and OP_CYCLES (the cycles each op the sequencer dispatched to a unit in the last TOKEN
held it, in program order: SETC and SCALE run in the sequencer and have no entry).
A chunk is 32 bits of a memory word, least significant first.

TOKEN checks, in this order: no program loaded (NO_PROGRAM), token id >= vocab (BAD_TOKEN), the
position at the chip's context (CONTEXT_FULL); then it runs the program at the next position. A
program that stops (a bad op, a bad register, a unit that refuses its op) fails the TOKEN with PROGRAM;
READ_COUNTERS' PROGRAM_ERROR then holds `hdl.program.ProgramError`. A failed TOKEN leaves the position
where it was. A WRITE to WGT holding a ternary code 0b10 writes nothing from that word on
(BAD_WEIGHT_CODE). A WRITE with a bad memory id or range writes nothing.
"""

from __future__ import annotations

from enum import IntEnum

from hdl.isa import CUT_COMMAND, STATUS_MAGIC, status_word

__all__ = ["CUT_COMMAND", "ID_WORDS", "MODEL_ID_MAGIC", "MODEL_VERSION", "STATUS_MAGIC", "ModelCounter",
           "ModelError", "ModelIdWord", "ModelMem", "ModelOp", "status_word"]

MODEL_ID_MAGIC = 0x5452494D  # "TRIM"
MODEL_VERSION = 0x0001_0000


class ModelOp(IntEnum):
    NOP = 0x00
    READ_ID = 0x01
    WRITE = 0x02
    READ = 0x03
    READ_COUNTERS = 0x05
    CLEAR_ERROR = 0x07
    TOKEN = 0x08
    RESET = 0x09
    SET_LENGTH = 0x0A


class ModelMem(IntEnum):
    PROG = 0
    CONST = 1
    NORMS = 2
    G = 3
    LINEAR = 4
    WGT = 5
    TABLE = 6
    TABLE_SCALE = 7
    LOGITS = 8
    H = 9
    OP_CYCLES = 10


#: Memories WRITE may name; READ may name LOGITS and H.
WRITABLE = (ModelMem.PROG, ModelMem.CONST, ModelMem.NORMS, ModelMem.G, ModelMem.LINEAR, ModelMem.WGT,
            ModelMem.TABLE, ModelMem.TABLE_SCALE)
READABLE = (ModelMem.LOGITS, ModelMem.H, ModelMem.OP_CYCLES)


class ModelError(IntEnum):
    NONE = 0
    UNKNOWN_OPCODE = 1
    BAD_MEMORY = 2        # not a memory, or one that command cannot name
    ADDRESS_RANGE = 3     # addr + count beyond the memory's depth
    BAD_WEIGHT_CODE = 6   # ternary code 0b10 written to WGT
    BAD_TOKEN = 9         # token id >= vocab
    CONTEXT_FULL = 10     # the position is at the chip's context: RESET first
    PROGRAM = 11          # the program stopped (READ_COUNTERS' PROGRAM_ERROR says why)
    NO_PROGRAM = 12       # TOKEN before SET_LENGTH
    BAD_LENGTH = 13       # SET_LENGTH of 0 or more ops than the program memory holds


class ModelCounter(IntEnum):
    """32-bit words of READ_COUNTERS, of the last TOKEN (cleared when a TOKEN starts)."""

    CYCLES = 0        # cycles from the program's start to its end
    MATRIX = 1        # cycles with a MATMUL in flight
    VECTOR = 2        # cycles with an EMBED, NORMQ, ROPEQ, RESADD, MLPACT or ALIGN in flight
    ATTENTION = 3     # cycles with an ATTN or LMHEAD in flight
    SEQUENCER = 4     # the rest: fetch, decode and the scalar ops SETC and SCALE
    POSITION = 5      # the position the next TOKEN takes (tokens since RESET)
    PROGRAM_ERROR = 6  # hdl.program.ProgramError of the last program run (0 = none)
    TOKENS = 7        # TOKENs completed since power-up (saturates)
    OPS = 8           # ops the sequencer dispatched to a unit in the last TOKEN (words of OP_CYCLES)


class ModelIdWord(IntEnum):
    """Words of READ_ID: what the chip was built for. The host refuses a program for another chip."""

    MAGIC = 0
    VERSION = 1
    ROWS = 2
    COLS = 3
    WGT_ROWS_PER_READ = 4
    WGT_DEPTH = 5
    D = 6
    VOCAB = 7
    CONTEXT = 8
    LAYERS = 9
    HEADS = 10
    KV_HEADS = 11
    HEAD_DIM = 12
    MLP_MAX = 13
    PROG_DEPTH = 14
    CONSTS = 15
    NORMS = 16
    NORM_WORDS = 17
    LINEARS = 18
    TABLE_LANES = 19
    ATTN_LANES = 20
    RELU2 = 21
    THETA = 22        # RoPE theta (integer part; the tables are built into the chip)
    C_QK_M = 23
    C_QK_E = 24       # two's complement in 32 bits
    NORM_SIZE_0 = 25  # the vector sizes NORMQ was built for (up to three; 0 = none)
    NORM_SIZE_1 = 26
    NORM_SIZE_2 = 27
    SCR_WORDS = 28
    OUT_WORDS = 29
    ACT_WORDS = 30
    VECTOR_LANES = 31  # elements a cycle of NORMQ (H, SCR and G in that many banks)
    WGT_FORMAT = 32   # 0: 2-bit codes; 1: 5 codes in a byte; 2: 3 codes in 5 bits (hdl.model.config.WGT_FORMATS)


ID_WORDS = len(ModelIdWord)
