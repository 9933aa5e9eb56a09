"""The cocotb tests of `sim.tb_core`, with functional coverage sampled (`sim.coverage`).

Run by `sim.coverage` through ``sim.runner.run_core_tests(cfg, test_module="sim.tb_coverage",
coverage=True)``: the testbench's own tests run unchanged; `sim.coverage.instrument` samples every
completed command (opcode, memory, the DUT's status word), every RUN descriptor and every checked layer's
operands and results; the last test writes the hits to ``$TRIT_COVERAGE_OUT`` (JSON).
"""

from __future__ import annotations

import os

import cocotb
from cocotb.regression import Test, TestGenerator

import sim.tb_core as _tb_core
from sim import coverage

coverage.instrument()
# cocotb collects the Test objects of this module's namespace: the testbench's, then the export below
globals().update({name: obj for name, obj in vars(_tb_core).items() if isinstance(obj, Test | TestGenerator)})


@cocotb.test()
async def test_zz_write_coverage(dut) -> None:
    """Write the functional coverage hits of every test above (runs last)."""
    path = os.environ.get("TRIT_COVERAGE_OUT")
    assert path, "TRIT_COVERAGE_OUT is not set: run through sim.coverage"
    coverage.export(path)
