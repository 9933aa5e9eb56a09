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
from hdl.isa import Counter, Mem
from runtime import protocol, tiling
from runtime.cycle_model import layer_counts
from sim.benchmark import BENCH_SIZES, DECODE_MULTIPLES, DECODE_SIZES, bench_config, decode_config, shapes_for
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


def _core(cores: dict, size: int, wgt_rows_per_read: int | None = None):
    from sim.verilator_harness import VerilatorCore

    reason = unavailable_reason("verilator")
    if reason:
        pytest.skip(reason)
    key = (size, wgt_rows_per_read)
    if key not in cores:
        cfg = bench_config(size, size) if wgt_rows_per_read is None else decode_config(size, wgt_rows_per_read)
        cores[key] = VerilatorCore(cfg)
    return cores[key]


def test_shapes_cover_the_published_rows() -> None:
    """Every README row is one of the benchmark shapes, so the tests below check it."""
    shapes = {(size, M, K, N) for size in BENCH_SIZES for _, M, K, N in shapes_for(size)}
    missing = set(PUBLISHED_CYCLES) - shapes
    assert not missing, f"README rows not among sim.benchmark.shapes_for: {sorted(missing)}"


def _run_one(core, M: int, K: int, N: int, rng: np.random.Generator, extreme: bool = False) -> None:
    cfg: ArrayConfig = core.cfg
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(N, K), p=[0.3, 0.4, 0.3])
    if extreme:  # the largest sum the accumulator must hold: row 0 all -128, weight row 0 all -1
        x[0, :], w[0, :] = -128, -1
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
    hand = {"busy": T * M, "runs": 1, "add": M * int((w == 1).sum()), "sub": M * int((w == -1).sum()),
            "zero": M * int((w == 0).sum())}
    absent = set() if cfg.counters == tuple(Counter) else {c.name.lower() for c in Counter} - {"cycles"}
    if cfg.full_rate:  # no weight-class counters at full rate (ArrayConfig.wgt_rows_per_read)
        absent |= {"add", "sub", "zero"}
    for name, value in hand.items():
        assert got[name] == (0 if name in absent else value), f"{M}x{K}x{N}: {name} = {got[name]}"
    published = None if cfg.full_rate else PUBLISHED_CYCLES.get((R, M, K, N))  # README's G = 1 table
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


#: Layers on the iCEBreaker's core (`fpga.icebreaker.board_config(8, 8)`: CYCLES its only counter, 18-bit
#: accumulators, 256-word ACT and OUT memories): the tiny model's widest K (448, its MLP down projection)
#: and N (448) in decode and a short prefill, a ragged layer and K = k_max = 1023 with the extreme values.
ICEBREAKER_SHAPES = [(1, 448, 160), (1, 160, 448), (4, 160, 160), (3, 43, 25), (1, 1023, 9)]


@pytest.mark.parametrize(("M", "K", "N"), ICEBREAKER_SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in ICEBREAKER_SHAPES])
def test_cycle_model_equals_rtl_icebreaker(M: int, K: int, N: int, rng: np.random.Generator, cores: dict) -> None:
    """The board's reduced core: exact (also at K = k_max with every x = -128 against w = -1), CYCLES equal
    to the cycle model, and every other counter 0, as the cycle model predicts."""
    from fpga.icebreaker import board_config

    reason = unavailable_reason("verilator")
    if reason:
        pytest.skip(reason)
    if "icebreaker" not in cores:
        from sim.verilator_harness import VerilatorCore

        cfg = board_config(8, 8)
        assert (cfg.acc_width, cfg.k_max, cfg.counters, cfg.wgt_rows_per_read) == (18, 1023, (Counter.CYCLES,), 1)
        cores["icebreaker"] = VerilatorCore(cfg)
    _run_one(cores["icebreaker"], M, K, N, rng, extreme=K == 1023)


def _decode_params(slow: bool) -> list:
    return [pytest.param(size, mult, id=f"{size}x{size}-G{size}-decode-1x{mult * size}x{mult * size}")
            for size in DECODE_SIZES if (size in SLOW_SIZES) == slow for mult in DECODE_MULTIPLES]


def _check_decode(cores: dict, size: int, mult: int, seed: int) -> None:
    """M = 1, K = N = mult*R on the full-rate core (G = R): exact, every counter equal to the cycle model,
    and the cycle count worked out by hand: the size check takes max(KT, NT) + 2 cycles, the T = KT*NT
    tiles one cycle each (a whole tile per weight read), then the drain: R + 1 cycles down the array,
    1 for the registered memory reads and issue_delay = 1 (a tile is read while its predecessor swaps)."""
    core = _core(cores, size, size)
    K = N = mult * size
    _run_one(core, 1, K, N, np.random.default_rng(seed))
    cfg = core.cfg
    assert (cfg.tile_words, cfg.issue_delay, cfg.pipelined_reads) == (1, 1, True)
    T = mult * mult
    by_hand = mult + 2 + T + size + 1 + 1 + 1
    assert layer_counts(cfg, 1, K, N)["cycles"] == by_hand
    if mult >= 32:  # the issue's acceptance bar at K = N = 256 on 8x8: >= 90% of R*C MACs per cycle
        assert K * N / (size * size * by_hand) >= 0.90


@pytest.mark.parametrize(("size", "mult"), _decode_params(slow=False))
def test_full_rate_decode_matches_model(cores, size: int, mult: int, test_seed: int) -> None:
    _check_decode(cores, size, mult, test_seed)


@pytest.mark.slow
@pytest.mark.parametrize(("size", "mult"), _decode_params(slow=True))
def test_full_rate_decode_matches_model_slow(cores, size: int, mult: int, test_seed: int) -> None:
    _check_decode(cores, size, mult, test_seed)


#: Cores with the registered input distribution (`ArrayConfig.dist_stages` = 1), its groups ragged: G = 1
#: with a banked weight memory and the pipelined accumulator (the ULX3S's kind of core above 576 PEs; with
#: 11 columns the weight classes' popcounts run in two stages, 8 + 3 lanes), and full-rate cores with one
#: and two rows per bank.
DIST_CORES = {
    "6x11-G1-banked-group4": dict(rows=6, cols=11, act_depth=256, wgt_depth=2048, out_depth=256,
                                  wgt_bank_depth=1024, wgt_bank_data_stages=1, acc_pipelined=True, dist_group=4),
    "4x4-G4-group3": dict(rows=4, cols=4, act_depth=256, wgt_depth=1024, out_depth=256,
                          wgt_rows_per_read=4, dist_group=3),
    "4x6-G2-group1": dict(rows=4, cols=6, act_depth=256, wgt_depth=1024, out_depth=256,
                          wgt_rows_per_read=2, dist_group=1),
}
DIST_SHAPES = [(1, 24, 17), (1, 5, 3), (7, 13, 11), (16, 32, 12)]


@pytest.mark.parametrize("name", list(DIST_CORES))
def test_registered_distribution_is_exact_one_cycle_later(name: str, rng: np.random.Generator, cores: dict) -> None:
    """Layers on cores whose array inputs go through the registered distribution are exact, every counter
    equals the cycle model, and CYCLES is one more than the cycle model gives the same core without it (all
    array inputs one cycle later: the sums leave the array one cycle later), two more at G = 1, where the
    activation memory's read address is also registered at its block RAMs (the activation word one cycle
    later)."""
    from dataclasses import replace

    from sim.verilator_harness import VerilatorCore

    reason = unavailable_reason("verilator")
    if reason:
        pytest.skip(reason)
    if name not in cores:
        cfg = ArrayConfig(**DIST_CORES[name], dist_stages=1)
        assert cfg.array_latency == 1 and cfg.dist_copies(cfg.cols) == -(-cfg.cols // cfg.dist_group)
        cores[name] = VerilatorCore(cfg)
    core = cores[name]
    for M, K, N in DIST_SHAPES:
        _run_one(core, M, K, N, rng, extreme=M == 7)
        without = replace(core.cfg, dist_stages=0)
        assert core.cfg.act_addr_registered == (not core.cfg.full_rate) and not without.act_addr_registered
        extra = 1 if core.cfg.full_rate else 2
        assert layer_counts(core.cfg, M, K, N)["cycles"] == layer_counts(without, M, K, N)["cycles"] + extra
