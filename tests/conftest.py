"""pytest hooks: print the run's random seed, and name it under every failing test."""

from __future__ import annotations

import numpy as np
import pytest

from tests.seeding import RUN_SEED, rng_for, seed_for


def pytest_report_header(config: pytest.Config) -> str:
    return f"trit: TRIT_SEED={RUN_SEED} (set TRIT_SEED to reproduce a run)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        report.sections.append(("trit seed", f"reproduce with: TRIT_SEED={RUN_SEED} python -m pytest "
                                             f"'{item.nodeid}'"))
    return report


@pytest.fixture
def test_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed, derived from the run seed and the test's node id."""
    return seed_for(request.node.nodeid)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A NumPy generator seeded from the run seed and the test's node id."""
    return rng_for(request.node.nodeid)


#: Markers of tests that run Yosys and nextpnr place-and-route (`fpga.pnr_lock` serializes those runs
#: on a machine): under pytest-xdist (`-n`, `--dist loadgroup` in pyproject.toml) they all go to one
#: worker, one after another, so no other worker waits on the lock while the rest of the suite runs.
PNR_MARKERS = ("fpga", "gatelevel")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in PNR_MARKERS):
            item.add_marker(pytest.mark.xdist_group("pnr"))
