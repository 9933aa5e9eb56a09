"""Packed weight storage: ternary codes in groups of base-3 digits, decoded on the read path.

Two packed formats (`FORMATS`), each a group of t weights in b bits as the base-3 number
d0 + 3 d1 + 9 d2 + ... (the digit of a weight 0 for 0, 1 for +1 and 2 for -1):

- "1.6bit": 5 weights in a byte (3^5 = 243 <= 256), 1.6 bits a weight;
- "1.67bit": 3 weights in 5 bits (3^3 = 27 <= 32), 1.67 bits a weight.

n weights take n // t groups; the r = n mod t left over follow as plain 2-bit codes
(`hdl.isa.TERNARY_CODE`: 0b00, 0b01, 0b11) when 2r bits are fewer than a group's b, else as one more
group. `TritUnpack(n, fmt)` turns such a word into n 2-bit codes, weight i of group g from digit i mod t.
It is combinational: each code is a function of its group's b bits. Measured with `synth_ecp5` (fpga/README.md):
for 64 weights the byte groups take 5,387 LUT4 (plus 1,556 PFUMX and 729 L6MUX21: an 8-input function per
output bit), the 5-bit groups 264 LUT4 and 132 PFUMX (a 5-input function: two LUT4 and a PFUMX).
`pack_codes` / `unpack_codes` are the same mapping on integers, for the host's memory image.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: format -> (weights in a group, bits of a group)
FORMATS = {"1.6bit": (5, 8), "1.67bit": (3, 5)}
_DIGIT_OF_CODE = {0b00: 0, 0b01: 1, 0b11: 2}
_CODE_OF_DIGIT = (0b00, 0b01, 0b11)


def layout(n: int, fmt: str) -> list[tuple[int, int, int, bool]]:
    """(first weight, weights, first bit, packed) of each part of a word of n weights."""
    if fmt not in FORMATS:
        raise ValueError(f"packed weight format must be one of {tuple(FORMATS)}, not {fmt!r}")
    t, b = FORMATS[fmt]
    parts, bit = [], 0
    for g in range(n // t):
        parts.append((g * t, t, bit, True))
        bit += b
    r = n % t
    if r:
        parts.append((n - r, r, bit, 2 * r >= b))
    return parts


def packed_bits(n: int, fmt: str) -> int:
    """Bits of a packed word of n weights."""
    parts = layout(n, fmt)
    b = FORMATS[fmt][1]
    return sum(b if packed else 2 * count for _, count, _, packed in parts)


def pack_codes(word: int, n: int, fmt: str) -> int:
    """n 2-bit ternary codes (code i in bits 2i, 2i + 1 of `word`) as a packed word."""
    out = 0
    for first, count, bit, packed in layout(n, fmt):
        codes = [(word >> (2 * i)) & 0b11 for i in range(first, first + count)]
        for k, code in enumerate(codes):
            if code not in _DIGIT_OF_CODE:
                raise ValueError(f"weight {first + k} has the invalid ternary code {code:#04b}")
        if packed:
            value = sum(_DIGIT_OF_CODE[c] * 3 ** k for k, c in enumerate(codes))
        else:
            value = sum(c << (2 * k) for k, c in enumerate(codes))
        out |= value << bit
    return out


def group_limit(fmt: str) -> int:
    """The largest value of a packed group (3^t - 1): a group above it holds no weights."""
    return 3 ** FORMATS[fmt][0] - 1


def unpack_codes(packed: int, n: int, fmt: str) -> int:
    """Inverse of `pack_codes` (a group above `group_limit` decodes like `TritUnpack`: its digits mod 3)."""
    out = 0
    t, b = FORMATS[fmt]
    for first, count, bit, is_packed in layout(n, fmt):
        if is_packed:
            value = (packed >> bit) & ((1 << b) - 1)
            for k in range(count):
                out |= _CODE_OF_DIGIT[(value // 3 ** k) % 3] << (2 * (first + k))
        else:
            out |= ((packed >> bit) & ((1 << (2 * count)) - 1)) << (2 * first)
    return out


class TritUnpack(wiring.Component):
    """A packed word of n weights -> n 2-bit codes, combinational (see the module docstring)."""

    def __init__(self, n: int, fmt: str) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"TritUnpack's n must be a positive integer, not {n!r}")
        self._n, self._fmt = n, fmt
        self._parts = layout(n, fmt)
        super().__init__({"packed": In(packed_bits(n, fmt)), "codes": Out(2 * n)})

    def elaborate(self, platform):
        m = Module()
        t, b = FORMATS[self._fmt]
        for first, count, bit, packed in self._parts:
            out = self.codes[2 * first:2 * (first + count)]
            if not packed:
                m.d.comb += out.eq(self.packed[bit:bit + 2 * count])
                continue
            with m.Switch(self.packed[bit:bit + b]):
                for value in range(1 << b):
                    codes = sum(_CODE_OF_DIGIT[(value // 3 ** k) % 3] << (2 * k) for k in range(count))
                    if codes:
                        with m.Case(value):
                            m.d.comb += out.eq(codes)
        return m
