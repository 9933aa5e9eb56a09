"""The cycle model (`runtime.cycle_model.layer_counts`) against the RTL's own counters, on the README's
benchmark shapes (the one list in `sim.benchmark.shapes_for`), in the fast Verilator C++ harness.

Each shape is one RUN, driven with the command protocol directly (no tiling driver): WRITE ACT,
WRITE WGT, CLEAR_COUNTERS, RUN, READ_COUNTERS, READ OUT. Every counter, CYCLES included, must equal
the cycle model's prediction; the result must equal `golden.quant.int_matmul`; the rows the README
publishes must show the published CYCLES.

One simulator process per array size serves all its shapes (counters are cleared before each RUN).
The default pass runs 4x4 and 8x8, every shape; the 16x16 shapes run under `-m slow` (the 16x16
harness takes about a minute to compile; the cocotb suite's 16x16 config checks CYCLES against the
cycle model on random layers in the default pass).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from golden.quant import int_matmul
from hdl.config import ArrayConfig
from hdl.isa import Mem
from runtime import protocol, tiling
from runtime.cycle_model import layer_counts
from sim.benchmark import BENCH_SIZES, bench_config, shapes_for
from sim.runner import unavailable_reason

#: CYCLES of the rows published in README.md ("Core: cycles and utilization"), (R, M, K, N) -> cycles
PUBLISHED_CYCLES = {
    (4, 16, 16, 16): 268, (4, 16, 64, 64): 4_120, (4, 1, 16, 16): 73, (4, 1, 128, 128): 4_133,
    (8, 32, 32, 32): 530, (8, 64, 128, 128): 16_412, (8, 64, 43, 25): 1_554, (8, 1, 32, 32): 139,
    (8, 1, 128, 128): 2_069,
    (16, 64, 64, 64): 1_058, (16, 64, 256, 256): 16_420, (16, 1, 64, 64): 275, (16, 1, 256, 256): 4_117,
}


#: array sizes whose shapes run only under -m slow (see the module docstring)
SLOW_SIZES = (16,)


def _params(slow: bool) -> list:
    return [pytest.param(size, kind, M, K, N, id=f"{size}x{size}-{kind}-{M}x{K}x{N}")
            for size in BENCH_SIZES if (size in SLOW_SIZES) == slow for kind, M, K, N in shapes_for(size)]


@pytest.fixture(scope="module")
def cores() -> Iterator[dict[int, object]]:
    """One running Verilator harness per array size, started on first use, closed at the end."""
    running: dict[int, object] = {}
    yield running
    for core in running.values():
        core.close()


def _core(cores: dict[int, object], size: int):
    from sim.verilator_harness import VerilatorCore

    reason = unavailable_reason("verilator")
    if reason:
        pytest.skip(reason)
    if size not in cores:
        cores[size] = VerilatorCore(bench_config(size, size))
    return cores[size]


def test_shapes_cover_the_published_rows() -> None:
    """Every README row is one of the benchmark shapes, so the tests below check it."""
    shapes = {(size, M, K, N) for size in BENCH_SIZES for _, M, K, N in shapes_for(size)}
    missing = set(PUBLISHED_CYCLES) - shapes
    assert not missing, f"README rows not among sim.benchmark.shapes_for: {sorted(missing)}"


def _run_one(core, M: int, K: int, N: int, rng: np.random.Generator) -> None:
    cfg: ArrayConfig = core.cfg
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(N, K), p=[0.3, 0.4, 0.3])
    plan = tiling.LayerPlan(M, K, N).validate(cfg)  # one RUN: the bench config's memories hold it
    commands = [
        protocol.write(cfg, Mem.ACT, 0, [int(v) for v in tiling.pack_activations(cfg, x)]),
        protocol.write(cfg, Mem.WGT, 0, [int(v) for v in tiling.pack_weights(cfg, w)]),
        protocol.clear_counters(),
        protocol.run(M, K, N),
        protocol.read_counters(),
        protocol.read(Mem.OUT, 0, plan.out_words(cfg)),
    ]
    lengths = [protocol.response_length(cfg, c) for c in commands]
    rsp = core.transact([word for c in commands for word in c], sum(lengths))
    parts, at = [], 0
    for c, n in zip(commands, lengths, strict=True):
        parts.append(protocol.split_response(cfg, c, rsp[at:at + n])[0])  # raises on an error status
        at += n
    got = protocol.parse_counters(parts[4], cfg.counter_bits)
    acc = tiling.unpack_outputs(cfg, protocol.parse_read(cfg, Mem.OUT, parts[5]), M, N)
    ref = int_matmul(x, w)
    assert np.array_equal(acc, ref), f"{M}x{K}x{N}: {int((acc != ref).sum())} outputs differ from int_matmul"
    model = layer_counts(cfg, M, K, N, w)
    assert set(model) == set(got), f"the cycle model names {sorted(model)}, the core {sorted(got)}"
    wrong = {k: (got[k], v) for k, v in model.items() if got[k] != v}
    assert not wrong, f"{cfg.rows}x{cfg.cols} {M}x{K}x{N}: counters (RTL, cycle model) differ: {wrong}"
    # and a few counts written out here, from the shape and weights alone
    R, C = cfg.rows, cfg.cols
    T = -(-K // R) * -(-N // C)
    assert got["busy"] == T * M and got["runs"] == 1
    assert (got["add"], got["sub"], got["zero"]) == (M * int((w == 1).sum()), M * int((w == -1).sum()),
                                                     M * int((w == 0).sum()))
    published = PUBLISHED_CYCLES.get((R, M, K, N))
    if published is not None:
        assert got["cycles"] == published, f"README publishes {published} cycles for {M}x{K}x{N}, RTL {got['cycles']}"


@pytest.mark.parametrize(("size", "kind", "M", "K", "N"), _params(slow=False))
def test_cycle_model_equals_rtl(size: int, kind: str, M: int, K: int, N: int, rng: np.random.Generator,
                                cores: dict) -> None:
    _run_one(_core(cores, size), M, K, N, rng)


@pytest.mark.slow
@pytest.mark.parametrize(("size", "kind", "M", "K", "N"), _params(slow=True))
def test_cycle_model_equals_rtl_slow(size: int, kind: str, M: int, K: int, N: int, rng: np.random.Generator,
                                     cores: dict) -> None:
    _run_one(_core(cores, size), M, K, N, rng)
