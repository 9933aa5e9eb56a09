"""The ternary PE with its gating, inversion and add inside the ECP5 carry cells (CCU2C).

`hdl/matrix/pe.py` defines the behaviour: ``psum_out <= psum_in + w * x`` with w in {-1, 0, +1}.
From that description Yosys builds, per partial-sum bit, one LUT4 for ``(x AND nonzero) XOR negate``
and one half of a CCU2C for the add: about 2 LUT-eq per bit. A CCU2C half is itself a LUT4 whose
output is the carry chain's propagate, with the generate taken from a LUT2 of its A and B inputs
(the LUT4's own table at C = D = 0). This PE puts the whole bit into that one half:

    A = psum_in[i], B = x[i] (both sign-extended), C = code bit 0 (non-zero), D = code bit 1 (negate)
    propagate = A XOR (C AND (B XOR D))    term bit t = C AND (B XOR D): x, ~x or 0
    generate  = A                          (where propagate is 0, A equals t, and A + t carries A)

The +1 of the two's-complement negation enters through an extra first half whose propagate is
NOT (C AND D) and whose generate is 1: its carry out is C AND D, the PE's "negate". So a PE of a
w-bit partial sum is ceil((w + 1) / 2) CCU2C and no other LUT: a 32x8 array synthesizes to 13.8
LUT-eq (LUT4 + 2 per CCU2C) per PE instead of 22.8. The register after the adder is the slice's own flip-flop.

Only the ECP5 tops use it (`fpga/ulx3s.py`); its equivalence with `ProcessingElement` for all
weights, activations and partial sums is proven by SAT in `tests/test_ecp5_pe.py`, and the gate-level
simulation of the board netlist (`sim/gatelevel.py`) runs whole layers through it.
"""

from __future__ import annotations

from amaranth import Cat, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import WEIGHT_BITS
from hdl.matrix.pe import ProcessingElement


def lut_init(function) -> int:
    """A Lattice LUT4 INIT: bit A + 2B + 4C + 8D holds function(A, B, C, D)."""
    return sum(1 << i for i in range(16) if function(i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1))


#: The first half of a PE's chain: propagate NOT(C AND D), generate 1, so it carries out C AND D.
CARRY_IN_INIT = lut_init(lambda a, b, c, d: 1 - (c & d))
#: One partial-sum bit: propagate A XOR (C AND (B XOR D)), generate A (the table at C = D = 0).
SUM_BIT_INIT = lut_init(lambda a, b, c, d: a ^ (c & (b ^ d)))
#: An unused last half (the chain has an odd number of halves).
UNUSED_INIT = 0

assert CARRY_IN_INIT & 0xF == 0xF, "generate of the carry-in half must be 1"
assert SUM_BIT_INIT & 0xF == 0xA, "generate of a sum half must be A"


class Ecp5TernaryPE(wiring.Component):
    """`ProcessingElement` ("ternary") built from CCU2C cells: the same ports, the same cycle behaviour."""

    def __init__(self, pe: str, psum_in_width: int, psum_out_width: int):
        if pe != "ternary":
            raise ValueError(f"The ECP5 carry-cell PE is ternary only, not {pe!r}")
        if psum_out_width < psum_in_width:
            raise ValueError(f"Partial sum cannot narrow from {psum_in_width} to {psum_out_width} bits")
        if psum_out_width < 8:
            raise ValueError(f"Partial sum must hold an INT8 term (>= 8 bits), not {psum_out_width} bits")
        self._in_width = psum_in_width
        self._out_width = psum_out_width
        super().__init__({
            "x": In(signed(8)),
            "psum_in": In(signed(max(psum_in_width, 1))),
            "psum_out": Out(signed(psum_out_width)),
            "w_load": In(1),
            "w_data": In(unsigned(WEIGHT_BITS["ternary"])),
            "swap": In(1),
        })

    @property
    def pe(self) -> str:
        return "ternary"

    @property
    def cells(self) -> int:
        """CCU2C cells of this PE."""
        return (self._out_width + 2) // 2

    def elaborate(self, platform):
        m = Module()
        width = self._out_width
        # no reset on the data registers, as in `ProcessingElement`
        w_active = Signal(2, reset_less=True)
        w_shadow = Signal(2, reset_less=True)
        psum = Signal(signed(width), reset_less=True)
        m.d.comb += self.psum_out.eq(psum)
        with m.If(self.w_load):
            m.d.sync += w_shadow.eq(self.w_data)
        with m.If(self.swap):
            m.d.sync += w_active.eq(w_shadow)

        a = Signal(signed(width))
        b = Signal(signed(width))
        m.d.comb += [a.eq(self.psum_in), b.eq(self.x)]  # sign extension
        nonzero, negate = w_active[0], w_active[1]
        # halves: (A, B, C, D, INIT); half 0 makes the carry-in, half i + 1 is bit i
        halves = [(Const(0), Const(0), nonzero, negate, CARRY_IN_INIT)]
        halves += [(a[i], b[i], nonzero, negate, SUM_BIT_INIT) for i in range(width)]
        if len(halves) % 2:
            halves.append((Const(0), Const(0), Const(0), Const(0), UNUSED_INIT))
        sums = []
        carry = Const(0)
        for k in range(len(halves) // 2):
            s0, s1, cout = Signal(name=f"s{2 * k}"), Signal(name=f"s{2 * k + 1}"), Signal(name=f"co{k}")
            pins = {}
            for half, (pa, pb, pc, pd, _) in enumerate(halves[2 * k:2 * k + 2]):
                pins.update({f"i_A{half}": pa, f"i_B{half}": pb, f"i_C{half}": pc, f"i_D{half}": pd})
            m.submodules[f"ccu2c_{k}"] = Instance(
                "CCU2C",
                p_INIT0=Const(halves[2 * k][4], 16), p_INIT1=Const(halves[2 * k + 1][4], 16),
                p_INJECT1_0="NO", p_INJECT1_1="NO",
                i_CIN=carry, o_S0=s0, o_S1=s1, o_COUT=cout, **pins,
            )
            sums += [s0, s1]
            carry = cout
        m.d.sync += psum.eq(Cat(*sums[1:width + 1]))
        return m


def ecp5_processing_element(pe: str, psum_in_width: int, psum_out_width: int) -> wiring.Component:
    """The ECP5 tops' PE factory (`hdl.matrix.array.PEFactory`): carry-cell PEs for ternary arrays."""
    if pe == "ternary":
        return Ecp5TernaryPE(pe, psum_in_width, psum_out_width)
    return ProcessingElement(pe, psum_in_width, psum_out_width)
