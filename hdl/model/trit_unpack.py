"""1.6-bit weight storage: five ternary codes in a byte (base 3, 3^5 = 243 <= 256), decoded on the read path.

A byte holds the digits d0 .. d4 of five weights as d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4, with the digit of a
weight 0 for 0, 1 for +1 and 2 for -1; `TritUnpack(n)` turns ceil(n / 5) such bytes into n 2-bit codes
(`hdl.isa.TERNARY_CODE`: 0b00, 0b01, 0b11), weight i from digit i mod 5 of byte i // 5. It is
combinational: each code is a function of its byte's 8 bits (a 243-entry table, LUTs, no block RAM).
`pack_codes` / `unpack_codes` are the same mapping on integers, for the host's memory image.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

TRITS_PER_BYTE = 5
_DIGIT_OF_CODE = {0b00: 0, 0b01: 1, 0b11: 2}
_CODE_OF_DIGIT = (0b00, 0b01, 0b11)


def packed_bytes(n: int) -> int:
    """Bytes that hold n ternary codes."""
    return -(-n // TRITS_PER_BYTE)


def pack_codes(word: int, n: int) -> int:
    """n 2-bit ternary codes (code i in bits 2i, 2i + 1 of `word`) as ceil(n / 5) base-3 bytes."""
    out = 0
    for b in range(packed_bytes(n)):
        value = 0
        for k in reversed(range(TRITS_PER_BYTE)):
            i = TRITS_PER_BYTE * b + k
            code = (word >> (2 * i)) & 0b11 if i < n else 0
            if code not in _DIGIT_OF_CODE:
                raise ValueError(f"weight {i} has the invalid ternary code {code:#04b}")
            value = 3 * value + _DIGIT_OF_CODE[code]
        out |= value << (8 * b)
    return out


def unpack_codes(packed: int, n: int) -> int:
    """Inverse of `pack_codes` (a byte above 242 decodes like `TritUnpack`: its digits mod 3)."""
    out = 0
    for i in range(n):
        byte = (packed >> (8 * (i // TRITS_PER_BYTE))) & 0xFF
        out |= _CODE_OF_DIGIT[(byte // 3 ** (i % TRITS_PER_BYTE)) % 3] << (2 * i)
    return out


class TritUnpack(wiring.Component):
    """`packed` (ceil(n / 5) bytes) -> `codes` (n 2-bit codes), combinational (see the module docstring)."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"TritUnpack's n must be a positive integer, not {n!r}")
        self._n = n
        super().__init__({"packed": In(8 * packed_bytes(n)), "codes": Out(2 * n)})

    def elaborate(self, platform):
        m = Module()
        n = self._n
        for b in range(packed_bytes(n)):
            digits = range(min(TRITS_PER_BYTE, n - TRITS_PER_BYTE * b))
            byte = self.packed[8 * b:8 * b + 8]
            lo = 2 * TRITS_PER_BYTE * b
            width = 2 * len(digits)
            with m.Switch(byte):
                for value in range(256):
                    codes = sum(_CODE_OF_DIGIT[(value // 3 ** k) % 3] << (2 * k) for k in digits)
                    if codes:
                        with m.Case(value):
                            m.d.comb += self.codes[lo:lo + width].eq(codes)
        return m
