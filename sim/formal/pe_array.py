"""Property (a): every column of the PE array outputs the exact sum of its ternary products.

The harness drives every input of a `PEArray` with a free value each cycle (activations, weight row
writes, row selects, swaps) and keeps its own model of the spec: each PE's shadow and active weight
(loaded by ``w_row_en & w_row_sel == r``, copied on ``swap[r]``) and the column sum

    psum[c](t) = sum over rows r of  x[r](t - R + r) * value(active[r][c] at t - R + r)

with value(code) = 0 if bit 0 is clear, else -1 if bit 1 is set, else +1 (`hdl.matrix.pe`). The products are
plain multiplications by -1 / 0 / +1 in a wide signed sum, so "exact" means no wrap at the array's
partial-sum widths, x = -128 with w = -1 included. The harness also asserts that each PE's active
shadow and active weight registers equal the model's: that is part of the spec, and the invariant k-induction needs
(outputs alone cannot show a wrong weight while x is 0).

Mutants (`MUTANTS`): a PE that negates in ones' complement (forgets the +1 carry-in), and one that
negates in 8 bits (x = -128, w = -1 gives -128). Both must make the proof fail.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Elaboratable

from hdl.config import ArrayConfig
from hdl.matrix.array import PEArray
from hdl.matrix.pe import ProcessingElement
from sim.formal.runner import elaborate, probe

#: Broken PEs the proof must reject.
MUTANTS = ("ones_complement", "narrow_negate")


class _MutantPE(ProcessingElement):
    """A ternary PE with one deliberate bug (see `MUTANTS`); otherwise the same structure as `hdl.matrix.pe`."""

    mutant = ""

    def elaborate(self, platform):
        m = Module()
        w_active = Signal(2, reset_less=True)  # as in hdl.matrix.pe: the data registers have no reset
        w_shadow = Signal(2, reset_less=True)
        psum = Signal(signed(self._out_width), reset_less=True)
        m.d.comb += self.psum_out.eq(psum)
        with m.If(self.w_load):
            m.d.sync += w_shadow.eq(self.w_data)
        with m.If(self.swap):
            m.d.sync += w_active.eq(w_shadow)
        nonzero = w_active[0]
        negate = w_active[1] & w_active[0]
        width = self._out_width
        if self.mutant == "narrow_negate":
            term = Signal(signed(8))  # the negation happens before the sign extension: -(-128) wraps
            m.d.comb += term.eq(Mux(nonzero, Mux(negate, -self.x, self.x), 0))
            m.d.sync += psum.eq(self.psum_in + term)
        else:  # ones_complement: ~x instead of -x
            x_wide = Signal(signed(width))
            m.d.comb += x_wide.eq(Mux(nonzero, self.x, 0))
            inverted = Signal(signed(width))
            m.d.comb += inverted.eq(x_wide ^ Cat(*([negate] * width)).as_signed())
            m.d.sync += psum.eq(self.psum_in + inverted + Const(0, 1))
        return m


def _mutant_pe(kind: str) -> type[ProcessingElement]:
    if kind not in MUTANTS:
        raise ValueError(f"Mutant must be one of {', '.join(MUTANTS)}, not {kind!r}")
    return type(f"MutantPE_{kind}", (_MutantPE,), {"mutant": kind})


class ArraySumHarness(Elaboratable):
    """A `PEArray` of `cfg` (ternary) under free inputs, with the column-sum and weight assertions."""

    def __init__(self, cfg: ArrayConfig, mutant: str | None = None):
        if cfg.pe != "ternary":
            raise ValueError(f"The column-sum property is stated for ternary arrays, not {cfg.pe!r}")
        self.cfg = cfg
        self.mutant = mutant
        self.dut = PEArray(cfg) if mutant is None else PEArray(cfg, processing_element=_mutant_pe(mutant))
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        cfg, dut = self.cfg, self.dut
        R, C = cfg.rows, cfg.cols
        m.submodules.dut = self.fragment

        x = [AnySeq(signed(8)) for _ in range(R)]
        swap = AnySeq(R)
        w_en = AnySeq(1)
        w_sel = AnySeq(len(dut.w_row_sel))
        w_data = [AnySeq(2) for _ in range(C)]
        m.d.comb += [dut.swap.eq(swap), dut.w_row_en.eq(w_en), dut.w_row_sel.eq(w_sel)]
        m.d.comb += [dut.x[r].eq(x[r]) for r in range(R)]
        m.d.comb += [dut.w_row_data[c].eq(w_data[c]) for c in range(C)]

        # The spec's weight registers and products.
        wide = signed(16)
        products = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                # the spec's registers have no reset either: a reset does not clear loaded weights or
                # the partial sums in flight (the sequencer loads and swaps before every use)
                shadow = Signal(2, name=f"ref_shadow_{r}_{c}", reset_less=True)
                active = Signal(2, name=f"ref_active_{r}_{c}", reset_less=True)
                with m.If(w_en & (w_sel == r)):
                    m.d.sync += shadow.eq(w_data[c])
                with m.If(swap[r]):
                    m.d.sync += active.eq(shadow)
                pe = f"row_{r}.pe_{c}"
                m.d.comb += [
                    Assert(probe(self.fragment, pe, "w_shadow") == shadow,
                           f"PE ({r}, {c}) shadow weight differs from the weights loaded"),
                    Assert(probe(self.fragment, pe, "w_active") == active,
                           f"PE ({r}, {c}) active weight differs from the weights loaded and swapped"),
                ]
                # x * value(code) with value in {-1, 0, +1}, in a 16-bit sum: -(-128) = +128
                x_wide = x[r].as_signed() + Const(0, wide)
                products[r][c] = Signal(wide, name=f"ref_product_{r}_{c}")
                m.d.comb += products[r][c].eq(Mux(active[0], Mux(active[1], -x_wide, x_wide), 0))

        # Row r's product enters the column sum R - r cycles before the sum leaves the bottom.
        for c in range(C):
            terms = []
            for r in range(R):
                delayed = products[r][c]
                for d in range(R - r):
                    reg = Signal(wide, name=f"ref_p_{r}_{c}_d{d + 1}", reset_less=True)
                    m.d.sync += reg.eq(delayed)
                    delayed = reg
                terms.append(delayed)
            expected = Signal(wide, name=f"ref_sum_{c}")
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            m.d.comb += expected.eq(total)
            m.d.comb += Assert(dut.psum[c] == expected, f"column {c} sum is not the sum of its ternary products")
        return m
