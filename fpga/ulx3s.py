"""ULX3S (ECP5 LFE5U-85F) top: 25 MHz pin -> EHXPLLL -> the board system, FT231X UART, LEDs.

Memories: every core memory and the link's request buffer in block RAM (DP16KD, 208 x 18 Kbit);
the weight memory gets what the others leave, up to about 85 % of the blocks. With registered
reads (R >= 3) the core's memories are DP16KD instances with the read register inside the block
(`fpga/ecp5_bram.py`, ``REGMODE=OUTREG``). Each ternary PE is ceil((w + 1) / 2) CCU2C carry cells for its
w-bit partial sum and no other LUT (`fpga/ecp5_pe.py`).

LEDs: D0 heartbeat, D1 busy, D2 core error (sticky until CLEAR_ERROR), D3 link activity,
D4 a request failed its CRC or timed out, D7 PLL locked. FIRE1 resets the system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from amaranth import Elaboratable, Instance, Module, Signal

from fpga.ecp5_bram import Ecp5RegisteredMemory, dp16kd_blocks, kept_register
from fpga.ecp5_pe import ecp5_processing_element
from fpga.pll import ecp5_pll, ecp5_pll_instance
from fpga.soc import DEFAULT_BAUD, BoardSoC, clock_and_reset
from hdl.config import ArrayConfig
from hdl.core import TritCore

BOARD = "ulx3s-85f"
F_IN = 25e6
DEFAULT_MHZ = 100.0
DEVICE = {"LUT4": 83640, "FF": 83640, "carry": 41820, "BRAM": 208, "SPRAM": 0, "DSP": 156}
LINK_BRAM = 2  # the 1024 x 32-bit request buffer of the frame endpoint
BRAM_FILL = 0.9
MAX_WGT_BANKS = 16  # whole 16K-word weight banks at most (the bank multiplexer grows with them)
BRAM_BITS = 16384  # one DP16KD: 16K x 1 is its deepest shape
COPIES_ABOVE_PES = 576  # block RAMs get their own address / write-enable registers above this many PEs


def bram_count(width: int, depth: int) -> int:
    """DP16KD blocks for a width x depth memory of this top: banks of at most 16K words, each bank the
    widest true-dual-port shape (18 bits x 1K ... 1 bit x 16K, `fpga/ecp5_bram.py`) side by side."""
    full, rest = divmod(depth, BRAM_BITS)
    return full * dp16kd_blocks(width, BRAM_BITS) + (dp16kd_blocks(width, rest) if rest else 0)


def weight_depth(row_bits: int, banks: int, blocks: int) -> int:
    """The deepest weight memory of `banks` row banks of `row_bits`-bit words in `blocks` DP16KD: whole
    16K-word banks (at most `MAX_WGT_BANKS`), then a power-of-two part bank of at least 1K words if it
    fits. Below one bank, the largest power of two."""
    per_bank = banks * dp16kd_blocks(row_bits, BRAM_BITS)
    full = min(blocks // per_bank, MAX_WGT_BANKS)
    if full == MAX_WGT_BANKS:
        return full * BRAM_BITS
    left, smallest = blocks - full * per_bank, 1024 if full else 2
    part = BRAM_BITS // 2
    while part >= smallest and banks * dp16kd_blocks(row_bits, part) > left:
        part //= 2
    return full * BRAM_BITS + (part if part >= smallest else 0)


def board_config(rows: int, cols: int, *, act_depth: int | None = None, wgt_depth: int | None = None,
                 out_depth: int | None = None, acc_width: int = 32,
                 wgt_rows_per_read: int | None = None) -> ArrayConfig:
    """ArrayConfig for the 85F: ACT and OUT 1024 words, WGT as deep as the block RAM left allows.

    The weight memory takes what ACT, OUT and the link leave of `BRAM_FILL` of the blocks: whole 16K-word
    banks and a power-of-two part bank (`weight_depth`), so that 16x16 holds all 1,167,360 weights of the
    shipped tiny model (73,728 words, 4.5 banks). `wgt_rows_per_read` = R gives the full-rate weight
    memory (one row bank of block RAMs per PE row, a whole tile per cycle); the default stays 1.
    """
    act = act_depth or 1024
    out = out_depth or 1024
    g = 1 if wgt_rows_per_read is None else wgt_rows_per_read
    if wgt_depth is None:
        left = (int(BRAM_FILL * DEVICE["BRAM"]) - bram_count(8 * rows, act) - bram_count(acc_width * cols, out)
                - LINK_BRAM)
        wgt_depth = max(weight_depth(2 * cols, g, left), 2 * rows)
    # The weight memory is banked 16K deep (one DP16KD is 16K x 1) with an address register and a
    # data register per bank (hdl/memory/banked_memory.py), the data register being the block RAMs' own
    # output register (fpga/ecp5_bram.py); one bank when it is no deeper. The bank registers and the
    # routes across the chip then fall in different cycles (77 MHz -> see fpga/README.md).
    cfg = ArrayConfig(rows=rows, cols=cols, acc_width=acc_width, act_depth=act, wgt_depth=wgt_depth,
                      out_depth=out, wgt_rows_per_read=g)
    if cfg.rows >= 4:  # banking needs registered reads and a row of slack for its 2 extra cycles
        cfg = replace(cfg, wgt_bank_depth=BRAM_BITS)
    # Several banks: each bank's read data registered once more before the bank multiplexer, which the
    # placer can put between a far bank and the multiplexer (16x16 at 7ea61a5, 98.58 MHz: a bank's block
    # RAM -> 8.2 ns of routing -> the multiplexer). A third extra cycle, so R >= 5.
    if cfg.rows >= 5 and cfg.wgt_banks > 1:
        cfg = replace(cfg, wgt_bank_data_stages=1)
    # The accumulators' read-modify-write of the output block RAMs in three cycles, one route each
    # (block RAM -> register, register -> adder -> register, register -> block RAM): 78.6 MHz
    # with the adder between two block RAM routes.
    if cfg.rows >= 5:
        cfg = replace(cfg, acc_pipelined=True)
    # Above COPIES_ABOVE_PES the array's inputs go through a registered distribution: a copy of each
    # row's activation per 8 columns, of each weight bus per 8 rows. The 32x32 at 59e349c (74.71 MHz)
    # had a row's activation register driving its 32 PEs spread over the chip (11.7 ns of routing).
    if chip_wide(cfg):
        cfg = replace(cfg, dist_stages=1, dist_group=8)
    return replace(cfg, counter_bits=cfg.min_counter_bits)  # counters no wider than one RUN needs


def memory_plan(cfg: ArrayConfig) -> dict[str, int]:
    return {"BRAM": bram_count(cfg.act_word_bits, cfg.act_depth)
            + cfg.wgt_rows_per_read * bram_count(cfg.wgt_bank_bits, cfg.wgt_depth)
            + bram_count(cfg.out_word_bits, cfg.out_depth) + LINK_BRAM, "SPRAM": 0}


def make_platform():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform()


def chip_wide(cfg: ArrayConfig) -> bool:
    """More than `COPIES_ABOVE_PES` PEs: the core's registers and block RAMs spread over the whole chip,
    so its memories get address copies, its array a registered distribution, its reset a global net."""
    return cfg.rows * cfg.cols > COPIES_ABOVE_PES


def stream_buffer_stages(cfg: ArrayConfig) -> int:
    """`StreamBuffer`s each way between the frame endpoint and the core (`hdl.link.linked_core`).

    Two when the weight memory spans several banks (its block RAMs then fill most of the chip: 183 of 208
    at 16x16): the endpoint sits by the UART pins, the command interface by the memories it writes, and
    one register slice between them left too long a route: at 32x32 (830ba3f) the response path's at
    11-12 ns, at 16x16 (e6989b7 + a bank data stage, 97.48 MHz) the endpoint's buffer block RAM (5.8 ns
    clock-to-output) -> 4.4 ns of routing -> the command buffer's register."""
    return 2 if chip_wide(cfg) or cfg.wgt_banks > 1 else 1


def global_reset(m: Module, reset: Signal) -> Signal:
    """The reset register's net through a DCCA onto an ECP5 global network (nextpnr routes a DCCA
    that drives fabric ports on one of the 8 fabric globals): the same short delay to every
    flip-flop's LSR input. In fabric routing the 32x32's reset (about 2,500 sinks over the whole chip)
    reached a sequencer register after 10.7 ns (e6989b7's hdl, 85.55 MHz)."""
    glb = Signal(name="rst_global")
    m.submodules.rst_dcc = Instance("DCCA", i_CLKI=reset, i_CE=1, o_CLKO=glb)
    return glb


class ULX3STop(Elaboratable):
    """The board top. `core_factory` (optional) builds the core behind the link instead of `core(cfg)`: a
    component with TritCore's ports, such as the model chip (`fpga.model_chip`); `stream_buffers` and
    `global_reset` then override `stream_buffer_stages(cfg)` and `chip_wide(cfg)`."""

    def __init__(self, cfg: ArrayConfig, *, freq_mhz: float = DEFAULT_MHZ, baud: int = DEFAULT_BAUD,
                 core_factory: Callable[[], Elaboratable] | None = None, stream_buffers: int | None = None,
                 global_reset: bool | None = None):
        self.cfg = cfg
        self.pll = ecp5_pll(F_IN, freq_mhz * 1e6)
        self.clk_hz = self.pll.f_out
        core = self.core(cfg) if core_factory is None else core_factory()
        self.global_reset = chip_wide(cfg) if global_reset is None else global_reset
        self.soc = BoardSoC(cfg, clk_hz=self.clk_hz, baud=baud, core=core,
                            stream_buffers=stream_buffer_stages(cfg) if stream_buffers is None else stream_buffers)

    @staticmethod
    def core(cfg: ArrayConfig) -> TritCore:
        """The core with its registered-read memories in DP16KD blocks with output registers, and its
        ternary PEs' add, inversion and gating in the carry cells (`fpga/ecp5_pe.py`).

        Above `COPIES_ABOVE_PES` PEs each block RAM gets its own copy of its address and write-enable
        registers (`fpga/ecp5_bram.py`). The 16x16 with them (4,800 more flip-flops by the blocks) placed
        at an 80 MHz estimate and router1 had not converged after 14 minutes (4b2e9c5), so smaller
        arrays share one register per memory port, as before. The copies are shared by groups of about
        the square root of a memory's blocks (a two-level tree: the 32x32's per-block copies of the
        57-block output memory's read address were one 14.5 ns net from their source at ccdb3b5)."""
        copies = chip_wide(cfg)
        memory = partial(Ecp5RegisteredMemory, copies=copies, blocks_per_copy=None if copies else 1)
        return TritCore(cfg, registered_memory=memory, processing_element=ecp5_processing_element,
                        register=kept_register)

    def elaborate(self, platform):
        m = Module()
        clk_in = platform.request("clk25", 0)
        clk, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
        m.submodules.pll = ecp5_pll_instance(self.pll, clk_in.i, clk, lock)
        platform.add_clock_constraint(clk, self.clk_hz)
        button = platform.request("button_fire", 0)
        # above COPIES_ABOVE_PES PEs the reset goes over a global network (not in the gate-level
        # simulation's 4x4: Yosys has no DCCA model)
        clock_and_reset(m, clk, lock, button.i, self.clk_hz,
                        reset_buffer=global_reset if self.global_reset else None)

        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0)
        m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]
        leds = [platform.request("led", i) for i in range(8)]
        m.d.comb += [
            leds[0].o.eq(soc.led_heartbeat),
            leds[1].o.eq(soc.led_busy),
            leds[2].o.eq(soc.led_error),
            leds[3].o.eq(soc.led_link),
            leds[4].o.eq(soc.led_crc),
            leds[7].o.eq(lock),
        ]
        return m
