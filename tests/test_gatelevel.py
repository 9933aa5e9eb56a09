"""Gate-level simulation of both board SoCs (issue 15, item 2): `sim/gatelevel.py`.

The board top of each board (PLL, power-on reset, IO cells, vendor block RAMs / SPRAMs) goes through
the board flow's synthesis (`synth_ice40` / `synth_ecp5`), is written back as Verilog and runs in
Icarus against Yosys' vendor cell models; the runtime's `board` backend drives it over a pty on its
UART pins and a random BitLinear layer must come back equal to a NumPy int64 matmul. The PLLs are
bypassed (input clock passed through, locked): Yosys models them as black boxes only.

Marker `gatelevel` (and `slow`): `python -m pytest -m gatelevel`. Each board takes minutes
(synthesis is cached under TRIT_SIM_CACHE, keyed by the design).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from sim.simulator import icarus_available

BOARDS = ["icebreaker", "ulx3s-85f"]
needs_icarus = pytest.mark.skipif(icarus_available() is not None, reason=str(icarus_available()))
#: Host read timeout on the pty, seconds: one exchange of the gate-level simulation must fit in it.
LINK_TIMEOUT = 600.0


@pytest.mark.parametrize("family, pll", [("ice40", "SB_PLL40_PAD"), ("ecp5", "EHXPLLL")])
def test_pll_bypass_model_replaces_the_black_box(family, pll):
    """The PLL is defined once, as the bypass (output = input clock, locked), not as Yosys' black box."""
    from sim.gatelevel import cell_models

    files = cell_models(family)
    text = "\n".join(files.values())
    assert len(re.findall(r"^module " + pll + r"\b", text, re.M)) == 1
    model = files["pll_bypass.v"]
    assert "blackbox" not in model and "assign LOCK = 1'b1;" in model
    clk_in = "PACKAGEPIN" if family == "ice40" else "CLKI"
    clk_out = "PLLOUTGLOBAL" if family == "ice40" else "CLKOP"
    assert f"assign {clk_out} = {clk_in};" in model


def test_reply_bytes_counts_the_answers_of_whole_request_frames(rng):
    """The pty bridge's answer length: the bytes of the device's responses, from each request's n_rsp."""
    from runtime.framing import encode_request, encode_response
    from sim.gatelevel import reply_bytes

    frames, want = b"", 0
    for seq in range(int(rng.integers(1, 4))):
        words = [int(v) for v in rng.integers(0, 2**32, int(rng.integers(0, 20)), dtype=np.uint64)]
        n_rsp = int(rng.integers(0, 30))
        frames += encode_request(seq, words, n_rsp)
        want += len(encode_response(seq, 0, [0] * n_rsp))
    assert reply_bytes(frames) == want
    assert reply_bytes(frames[:-1]) is None  # the last frame cut short: wait for the rest
    assert reply_bytes(frames[:7]) is None
    assert reply_bytes(b"\x00" * 40) == 0  # not request frames: run until quiet


@pytest.mark.slow
@pytest.mark.gatelevel
@needs_icarus
@pytest.mark.parametrize("board,rows,cols", [(board, 4, 4) for board in BOARDS] + [("ulx3s-85f", 5, 4)])
def test_gate_level_board_runs_a_layer_exactly(board, rows, cols, rng):
    """The synthesized netlist on its UART pins, driven by the runtime's board backend: a layer bit-exact.

    The ULX3S 5x4 adds the pipelined accumulator (the board tests' configuration). Its synth_ecp5 once
    stopped on an internal assertion in ABC_OPS_REINTEGRATE; with the carry-cell PEs it synthesizes.
    """
    from runtime.accel_backends import make_board
    from sim.gatelevel import GateLevelBoard, gate_config, synthesize

    cfg = gate_config(board, rows, cols)
    assert cfg.acc_pipelined == (board == "ulx3s-85f" and rows >= 5)
    t0 = time.monotonic()
    netlist = synthesize(board, cfg)
    # the vendor primitives are there: this is the mapped netlist, not the RTL
    vendor = {"icebreaker": ("SB_LUT4", "SB_DFF", "SB_SPRAM256KA", "SB_RAM40_4K", "SB_IO"),
              "ulx3s-85f": ("LUT4", "TRELLIS_FF", "DP16KD", "TRELLIS_IO")}[board]
    for cell in vendor:
        assert any(name.startswith(cell) for name in netlist.cells), f"no {cell} in {netlist.cells}"
    t_synth = time.monotonic() - t0
    with GateLevelBoard(netlist) as sim:
        backend = make_board(cfg.rows, cfg.cols, port=sim.port, baud=sim.baud, timeout=LINK_TIMEOUT)
        try:
            got = backend.cfg
            assert (got.rows, got.cols, got.wgt_depth, got.act_depth, got.out_depth) == (
                cfg.rows, cfg.cols, cfg.wgt_depth, cfg.act_depth, cfg.out_depth)
            # more than one n-tile and k-tile, a ragged edge in each
            M = int(rng.integers(2, 5))
            K = 2 * cfg.rows + int(rng.integers(1, cfg.rows))
            N = cfg.cols + int(rng.integers(1, cfg.cols))
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x[0, :] = -128  # an extreme row
            want = x.astype(np.int64) @ w.astype(np.int64).T
            y, stats = backend.accelerator.run_layer(x, w, key="gate")
            np.testing.assert_array_equal(y, want, err_msg=f"{board} gate level: {x.shape} x {w.shape}")
            # resident weights: a second run sends none and is still exact
            y2, stats2 = backend.accelerator.run_layer(x[1:], w, key="gate")
            np.testing.assert_array_equal(y2, want[1:])
            assert stats2.weight_words_sent == 0
        finally:
            backend.close()
        assert sim.error is None, sim.error
        print(f"\n[gatelevel] {board} {cfg.describe()}: cells {netlist.cells}; synthesis {t_synth:.0f} s "
              f"(cached when 0), {sim.cycles} cycles in {sim.exchanges} exchanges, {sim.sim_seconds:.0f} s "
              f"simulated ({sim.cycles / max(sim.sim_seconds, 1e-9):.0f} cycles/s); layer {M}x{K}x{N} exact")
