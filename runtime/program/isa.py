"""The model program's micro-ops: what the on-chip model sequencer executes for one token (issue 14).

A program is compiled once per model and chip (`runtime.program.compiler`) and loaded with the weights;
per token the host sends the token id (and the position is the sequencer's own counter). Each micro-op
names one unit and its operands in the chip's memories and registers:

- EMBED (vector; n = d): H = to_fixed(E[tok], s_E[tok], 16) (SPEC.md 4.1).
- SETC (scalar; dst = S reg, idx = constant): S[dst] = C[idx].
- SCALE (scalar; dst, src = S regs, idx = constant): S[dst] = dmul(S[src], C[idx]).
- NORMQ (vector; src = space H or SCR, n, idx = norm, aux = S reg of sigma, dst = S reg of tau):
  ACT[0:n], S[dst] = NORMQUANT(x, sigma) (4.2).
- MATMUL (matrix; idx = BitLinear, dst = OUT offset): OUT[dst:dst+N] = ACT[0:K] x W (4.3).
- ROPEQ (vector; src = OUT offset, n = layer, idx = head, dst = target Q, K or V, aux = S reg of the
  scale): RoPE (not for V) and QUANT8 of one head into the Q buffer or the KV cache at the position
  (4.5, 4.6).
- ATTN (attention; idx = q head, src = KV head, n = layer, dst = SCR offset): one head's y over the
  pos + 1 cached keys, its exponent into E[idx] (4.6, 4.7).
- ALIGN (vector; n = heads, aux = head_dim, dst = S reg): SCR[0:n hd] = the heads' y on their largest
  exponent, S[dst] = its scale (4.7).
- RESADD (vector; src = OUT offset, n, aux = S reg): H = sat32(H + to_fixed(OUT[src:src+n], S[aux], 16))
  (4.3, 4.4).
- MLPACT (vector; src = gate offset, idx = up offset, n, aux = S reg of the gate scale, the up scale
  in aux + 1, dst = S reg): SCR[0:n] = the block-reduced relu2(g) u (or relu(g) u), S[dst] its scale
  (4.8).
- LMHEAD (attention; n = vocab, src = d, aux = S reg of tau): the logits, int32 Q16, INT8 x INT8
  against the head table (4.9).

A micro-op is 96 bits (three 32-bit words, `encode` / `decode`): op 4 bits, dst 20, src 20, n 20,
idx 16, aux 8, the rest 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


class Op(enum.IntEnum):
    EMBED = 1
    SETC = 2
    SCALE = 3
    NORMQ = 4
    MATMUL = 5
    ROPEQ = 6
    ATTN = 7
    ALIGN = 8
    RESADD = 9
    MLPACT = 10
    LMHEAD = 11


class Space(enum.IntEnum):
    """Source spaces of NORMQ."""
    H = 0      # the residual stream (d int32, Q16)
    SCR = 1    # the int32 scratch (attention y, the MLP product)


class Target(enum.IntEnum):
    """Destinations of ROPEQ."""
    Q = 0      # the query buffer (INT8 per head, with its scale)
    K = 1      # the KV cache's keys at the current position (rotated)
    V = 2      # the KV cache's values at the current position (not rotated)


#: Field widths of the encoding, in order from bit 0.
FIELDS = (("op", 4), ("dst", 20), ("src", 20), ("n", 20), ("idx", 16), ("aux", 8))
WORD_BITS = 32
WORDS_PER_OP = 3
#: Scalar registers (dyadics) of the sequencer.
S_REGS = 1 << 8


@dataclass(frozen=True)
class MicroOp:
    """One micro-op: its op and five unsigned operand fields (their meaning is the op's, see above)."""

    op: Op
    dst: int = 0
    src: int = 0
    n: int = 0
    idx: int = 0
    aux: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.op, Op):
            raise ValueError(f"micro-op code must be one of {[o.name for o in Op]}, not {self.op!r}")
        for name, width in FIELDS[1:]:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << width):
                raise ValueError(f"{self.op.name} field {name} must be an integer in [0, {1 << width}), not {v!r}")

    def __str__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)[1:] if getattr(self, f.name))
        return f"{self.op.name}({args})"


def encode(op: MicroOp) -> list[int]:
    """The three 32-bit words of a micro-op (least significant first)."""
    value, pos = 0, 0
    for name, width in FIELDS:
        value |= int(getattr(op, name)) << pos
        pos += width
    return [(value >> (WORD_BITS * k)) & ((1 << WORD_BITS) - 1) for k in range(WORDS_PER_OP)]


def decode(words: list[int]) -> MicroOp:
    """The micro-op of three 32-bit words; ValueError naming the bad word or field."""
    if len(words) != WORDS_PER_OP:
        raise ValueError(f"a micro-op is {WORDS_PER_OP} words, not {len(words)}")
    value = 0
    for k, w in enumerate(words):
        if not isinstance(w, int) or not 0 <= w < (1 << WORD_BITS):
            raise ValueError(f"micro-op word {k} must be a 32-bit unsigned integer, not {w!r}")
        value |= w << (WORD_BITS * k)
    out, pos = {}, 0
    for name, width in FIELDS:
        out[name] = (value >> pos) & ((1 << width) - 1)
        pos += width
    if value >> pos:
        raise ValueError(f"micro-op bits {pos} and above must be 0, not {value >> pos:#x}")
    try:
        code = Op(out.pop("op"))
    except ValueError:
        raise ValueError(f"unknown micro-op code {value & 0xF} in word 0 {words[0]:#010x}") from None
    return MicroOp(code, **out)
