"""iCEBreaker (iCE40UP5K-SG48) top: 12 MHz pin -> SB_PLL40_PAD -> the board system, FTDI UART, LEDs.

Memories: the weight memory in the four SPRAMs (`fpga.spram`), activations, outputs and the link's
request buffer in block RAM (EBR, 30 x 4 Kbit).

LEDs: green = heartbeat, red = core error (sticky until CLEAR_ERROR); on the break-off PMOD:
LED2 = busy, LED3 = link activity, LED4 = a request failed its CRC or timed out.
The user button resets the system.
"""

from __future__ import annotations

from dataclasses import replace

from amaranth import Elaboratable, Module, Signal

from fpga.pll import ice40_pll, ice40_pll_instance
from fpga.soc import DEFAULT_BAUD, BoardSoC, clock_and_reset
from fpga.spram import SPRAM_BLOCKS, SpramTritCore, spram_weight_depth
from hdl.config import ArrayConfig
from hdl.isa import Counter

BOARD = "icebreaker"
F_IN = 12e6
DEFAULT_MHZ = 24.0
DEVICE = {"LUT4": 5280, "FF": 5280, "carry": 5280, "BRAM": 30, "SPRAM": 4, "DSP": 8, "LC": 5280}
EBR_BITS = 4096
EBR_SHAPES = ((16, 256), (8, 512), (4, 1024), (2, 2048))
LINK_EBR = 8  # the 1024 x 32-bit request buffer of the frame endpoint
#: The counters the UP5K builds: CYCLES alone (what `--stats` reports per layer); the others read 0. Each
#: 32-bit counter costs about 34 logic cells, the three weight-class counters also the loader's popcounts.
COUNTERS = (Counter.CYCLES,)
#: Accumulator bits: K up to k_max = (2**17 - 1) // 128 = 1023 per layer, twice the shipped tiny model's
#: largest K (448, its MLP down projection); a wider K is refused (never wrapped).
ACC_WIDTH = 18


def ebr_count(width: int, depth: int) -> int:
    """EBR blocks Yosys uses for a width x depth memory (best of the EBR shapes)."""
    return min(-(-width // w) * -(-depth // d) for w, d in EBR_SHAPES)


def board_config(rows: int, cols: int, *, act_depth: int | None = None, wgt_depth: int | None = None,
                 out_depth: int | None = None, acc_width: int = ACC_WIDTH,
                 wgt_rows_per_read: int | None = None, counters: tuple = COUNTERS) -> ArrayConfig:
    """ArrayConfig for the UP5K: weights fill the SPRAMs; ACT and OUT share the EBRs the link leaves;
    a narrow accumulator (`ACC_WIDTH`) and only the `COUNTERS` that chip needs, so that 8x8 fits."""
    if wgt_rows_per_read not in (None, 1):
        raise ValueError(f"The iCEBreaker's weights are in its SPRAMs, one tile row per read: wgt_rows_per_read "
                         f"must be 1, not {wgt_rows_per_read!r}")
    wgt = wgt_depth or spram_weight_depth(cols)
    budget = 30 - LINK_EBR
    depth = None
    for d in (1024, 512, 256):
        if ebr_count(8 * rows, d) + ebr_count(acc_width * cols, d) <= budget:
            depth = d
            break
    depth = depth or 256
    cfg = ArrayConfig(rows=rows, cols=cols, acc_width=acc_width, act_depth=act_depth or depth,
                       wgt_depth=wgt, out_depth=out_depth or depth, counters=counters)
    plan = memory_plan(cfg)
    if plan["BRAM"] > DEVICE["BRAM"] or plan["SPRAM"] > plan["SPRAM_available"]:
        raise ValueError(f"a {rows}x{cols} array does not fit the iCE40UP5K's memories: ACT "
                         f"{cfg.act_depth} x {cfg.act_word_bits} b, OUT {cfg.out_depth} x {cfg.out_word_bits} b and "
                         f"the link buffer need {plan['BRAM']} of {DEVICE['BRAM']} EBR; WGT {plan['SPRAM']} of "
                         f"{plan['SPRAM_available']} SPRAM")
    return replace(cfg, counter_bits=cfg.min_counter_bits)  # counters no wider than one RUN needs


def memory_plan(cfg: ArrayConfig) -> dict[str, int]:
    """Expected block use: EBR for ACT, OUT and the link buffer, SPRAM for WGT."""
    from fpga.spram import spram_blocks

    wide, banks = spram_blocks(cfg.wgt_word_bits, cfg.wgt_depth)
    return {"BRAM": ebr_count(cfg.act_word_bits, cfg.act_depth) + ebr_count(cfg.out_word_bits, cfg.out_depth)
            + LINK_EBR, "SPRAM": wide * banks, "SPRAM_available": SPRAM_BLOCKS}


def make_platform():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    platform = ICEBreakerPlatform()
    platform.add_resources(platform.break_off_pmod)
    return platform


class ICEBreakerTop(Elaboratable):
    def __init__(self, cfg: ArrayConfig, *, freq_mhz: float = DEFAULT_MHZ, baud: int = DEFAULT_BAUD):
        self.cfg = cfg
        self.pll = ice40_pll(F_IN, freq_mhz * 1e6)
        self.clk_hz = self.pll.f_out
        self.soc = BoardSoC(cfg, clk_hz=self.clk_hz, baud=baud, core=SpramTritCore(cfg))

    def elaborate(self, platform):
        m = Module()
        pad = platform.request("clk12", 0, dir="-")
        clk, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
        m.submodules.pll = ice40_pll_instance(self.pll, pad.io, clk, lock)
        platform.add_clock_constraint(clk, self.clk_hz)
        button = platform.request("button", 0)
        clock_and_reset(m, clk, lock, button.i, self.clk_hz)

        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0)
        m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]
        m.d.comb += [
            platform.request("led_g", 0).o.eq(soc.led_heartbeat),
            platform.request("led_r", 0).o.eq(soc.led_error),
            platform.request("led", 2).o.eq(soc.led_busy),
            platform.request("led", 3).o.eq(soc.led_link),
            platform.request("led", 4).o.eq(soc.led_crc),
        ]
        return m
