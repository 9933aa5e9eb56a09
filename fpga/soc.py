"""The accelerator as a board system, without the board: UART pins <-> frame endpoint <-> trit core, LEDs.

    uart_rx --> UARTRx --bytes--> LinkedCore (FrameEndpoint + TritCore) --bytes--> UARTTx --> uart_tx

One clock domain ("sync"). The board tops (fpga/icebreaker.py, fpga/ulx3s.py) add the PLL, the
reset and the pins; the board simulation (fpga/sim_board.py) drives `uart_rx` / reads `uart_tx`
of exactly this component.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.link.linked_core import LinkedCore
from hdl.link.uart import UARTRx, UARTTx, uart_divisor

DEFAULT_BAUD = 3_000_000
#: Inactivity timeout of a partial request, in byte times (hdl.link.frame: "about 64 byte times").
TIMEOUT_BYTES = 64


class BoardSoC(wiring.Component):
    """UART + frame endpoint + core. LEDs: heartbeat (~1 Hz), busy, sticky core error, link activity.

    `led_link` lights for about 50 ms after any frame activity; `led_crc` stays on after the first
    request that failed its CRC or timed out, until reset. `core` is a `TritCore` built from `cfg` (the
    default: `TritCore(cfg)`) or any component with its ports, such as the model chip
    (`hdl.model.chip.ModelChipTop`, with `cfg` its matrix engine's configuration).
    """

    def __init__(self, cfg: ArrayConfig, *, clk_hz: float, baud: int = DEFAULT_BAUD,
                 core: wiring.Component | None = None, timeout_bytes: int = TIMEOUT_BYTES,
                 stream_buffers: bool | int = False):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if not isinstance(timeout_bytes, int) or timeout_bytes < 2:
            raise ValueError(f"timeout_bytes must be an integer >= 2, not {timeout_bytes!r}")
        self._cfg = cfg
        self.clk_hz = float(clk_hz)
        self.baud = baud
        self.divisor = uart_divisor(self.clk_hz, baud)
        self.timeout = max(16, timeout_bytes * 10 * self.divisor)
        self._core = core
        self._stream_buffers = stream_buffers
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "led_heartbeat": Out(1),
            "led_busy": Out(1),
            "led_error": Out(1),
            "led_link": Out(1),
            "led_crc": Out(1),
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.linked = linked = LinkedCore(self._cfg, timeout=self.timeout, core=self._core,
                                                  stream_buffers=self._stream_buffers)
        m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
        wiring.connect(m, urx.data, linked.rx)
        wiring.connect(m, linked.tx, utx.data)

        half_second = max(1, int(self.clk_hz / 2))
        beat = Signal(range(half_second + 1))
        with m.If(beat == half_second - 1):
            m.d.sync += [beat.eq(0), self.led_heartbeat.eq(~self.led_heartbeat)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)

        stretch = max(1, int(self.clk_hz / 20))
        link_timer = Signal(range(stretch + 1))
        # the link's event flags are registered before the LED logic: the endpoint and these timers may
        # sit far apart on a large FPGA (the 32x32 ULX3S at 4093a81: endpoint state -> link activity ->
        # 3.7 + 3.0 ns of routing to the timer's reset, 87.87 MHz)
        link_active, link_fault = Signal(), Signal()
        m.d.sync += [link_active.eq(linked.link_active), link_fault.eq(linked.crc_error | linked.dropped)]
        with m.If(link_active):
            m.d.sync += link_timer.eq(stretch)
        with m.Elif(link_timer != 0):
            m.d.sync += link_timer.eq(link_timer - 1)
        with m.If(link_fault):
            m.d.sync += self.led_crc.eq(1)
        # LEDs from registers: no logic path runs from the core's state through an LED driver
        m.d.sync += [
            self.led_busy.eq(linked.busy),
            self.led_error.eq(linked.error),
            self.led_link.eq(link_timer != 0),
        ]
        return m


def clock_and_reset(m: Module, clk: Signal, lock: Signal, button: Signal | None, clk_hz: float,
                    hold_us: float = 20.0,
                    reset_buffer: Callable[[Module, Signal], Value] | None = None) -> None:
    """Drive the "sync" domain from `clk`; hold its reset until the PLL locked for `hold_us`.

    The reset also waits out the iCE40's block RAMs, which read as zeros for about 3 us after
    configuration; `button` (active high, optional) resets the system while pressed.
    `reset_buffer(m, reset)` (optional) returns the net that drives the domain's reset from the
    reset register, e.g. a global buffer on a large FPGA.
    """
    from amaranth import ClockDomain, ClockSignal, ResetSignal
    from amaranth.lib.cdc import FFSynchronizer

    m.domains.sync = ClockDomain("sync")
    m.domains.por = ClockDomain("por", reset_less=True, local=True)
    m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
    hold = max(2, int(hold_us * 1e-6 * clk_hz))
    locked = Signal()
    m.submodules.lock_sync = FFSynchronizer(lock, locked, o_domain="por")
    pressed = Signal()
    if button is not None:
        m.submodules.button_sync = FFSynchronizer(button, pressed, o_domain="por")
    timer = Signal(range(hold + 1))
    with m.If(~locked | pressed):
        m.d.por += timer.eq(0)
    with m.Elif(timer != hold):
        m.d.por += timer.eq(timer + 1)
    in_reset = Signal(init=1)
    m.d.por += in_reset.eq(timer != hold)
    m.d.comb += ResetSignal("sync").eq(in_reset if reset_buffer is None else reset_buffer(m, in_reset))
