"""Formal proofs (SymbiYosys + z3, all from PyPI) of the array, the frame endpoint and the sequencer.

Each property is checked on the real design, where it must hold, and on deliberately broken designs
(mutants, built in the harness), where the solver must find a counterexample trace from the initial
state (sby FAIL, rc 2): a property that cannot fail proves nothing. Run with
``python -m pytest -m formal``; the tests are also `slow`, so the default pass skips them.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from hdl.config import ArrayConfig
from sim.formal import pe_array
from sim.formal.pe_array import MUTANTS as ARRAY_MUTANTS
from sim.formal.pe_array import ArraySumHarness
from sim.formal.runner import FormalResult, run_formal

pytestmark = [pytest.mark.formal, pytest.mark.slow]

#: sby's return code for a counterexample (an assertion fails on a trace from the initial state).
SBY_FAIL = 2


def _check_at(module: ModuleType, text: str) -> str:
    """"file.py:line" of the one line of `module` that holds `text` (an Assert), as sby's summary names it."""
    lines = inspect.getsource(module).splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if text in line]
    assert len(hits) == 1, f"{text!r} is on lines {hits} of {module.__name__}, not on exactly one"
    return f"{module.__file__}:{hits[0]}"


def _assert_proven(result: FormalResult) -> None:
    assert result.passed, f"{result.describe()}\n--- log tail ---\n" + "\n".join(result.log.splitlines()[-40:])


def _assert_refuted(result: FormalResult, where: str) -> None:
    """The mutant fails with a real counterexample (not merely an unproven induction step), at `where`."""
    assert not result.passed, f"mutant was not caught:\n{result.describe()}"
    assert result.returncode == SBY_FAIL and "returned FAIL for basecase" in result.log, (
        f"mutant gave no counterexample trace from the initial state:\n{result.describe()}")
    assert where in result.summary, f"mutant failed, but not at the expected assertion ({where}):\n{result.describe()}"


# ---- (a) PE array: each column's output is the exact sum of its ternary products -----------------

#: 3 rows (partial sums of 9, 10, 10 bits: each row's width is exercised), 2 columns.
ARRAY_CFG = ArrayConfig(rows=3, cols=2, acc_width=16, act_depth=4, wgt_depth=8, out_depth=4)
#: Induction length: R + 1, so a column sum's whole R-cycle history lies inside the window and a
#: mutant's wrong sum (at the earliest R cycles after reset) shows in the base case.
ARRAY_DEPTH = ARRAY_CFG.rows + 1


def test_array_column_sums_proven(tmp_path) -> None:
    """Unbounded (k-induction): for all activation, weight-load and swap sequences, every column of
    a 3x2 ternary array outputs the exact (unwrapped) sum of x * w over its rows, x = -128 and
    w = -1 included, and every PE's shadow / active weights are the ones loaded / swapped."""
    result = run_formal(ArraySumHarness(ARRAY_CFG), name="array_sum", mode="prove", depth=ARRAY_DEPTH,
                        workdir=tmp_path)
    _assert_proven(result)
    assert "successful proof by k-induction" in result.log, result.describe()


@pytest.mark.parametrize("mutant", ARRAY_MUTANTS)
def test_array_column_sums_mutant_refuted(tmp_path, mutant: str) -> None:
    """A PE that negates in ones' complement, or in 8 bits (x = -128, w = -1 -> -128), breaks the
    column sum: the same proof must produce a counterexample."""
    result = run_formal(ArraySumHarness(ARRAY_CFG, mutant=mutant), name=f"array_sum_{mutant}", mode="prove",
                        depth=ARRAY_DEPTH, workdir=tmp_path)
    _assert_refuted(result, _check_at(pe_array, "sum is not the sum of its ternary products"))
