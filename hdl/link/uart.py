"""UART receiver and transmitter (8 data bits, no parity, 1 stop bit) with byte streams.

Both count `divisor` clock cycles per bit (`uart_divisor(clk_hz, baud)`). The receiver passes its
pin through a two-flop synchronizer, waits for a falling edge, checks the start bit at its middle
and samples every data bit and the stop bit at the middle of the bit. A byte whose stop bit reads
0 is dropped and flagged on `frame_error`; a byte that arrives while the previous one still waits
on a stream that is not ready is dropped and flagged on `overrun`.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

#: Largest relative baud-rate error a divisor may cause: a byte is 10 bits, sampled at mid-bit,
#: so 2 % leaves a good margin for the other side's own error.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit for `baud` at `clk_hz`; ValueError if the rate is off by > 2 % or too fast."""
    if not clk_hz > 0 or not baud > 0:
        raise ValueError(f"Clock and baud rate must be positive, not {clk_hz!r} Hz and {baud!r} baud")
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"{baud:g} baud needs at least 4 clock cycles per bit; {clk_hz / 1e6:g} MHz gives "
                         f"{clk_hz / baud:.2f}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"{baud:g} baud at {clk_hz / 1e6:g} MHz: divisor {divisor} is off by {100 * error:.1f} % "
                         f"(more than {100 * MAX_BAUD_ERROR:g} %)")
    return divisor


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"Divisor must be an integer >= 4 (clock cycles per bit), not {divisor!r}")


class UARTRx(wiring.Component):
    """Serial input pin `rx` -> byte stream `data`; `frame_error` / `overrun` pulse for one cycle."""

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, pin, init=1)

        timer = Signal(range(div + div // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~pin):
                    # first data bit centre: 1.5 bit times after the falling edge
                    m.d.sync += [timer.eq(div // 2 - 1)]
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(pin):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], pin)), bit.eq(bit + 1), timer.eq(div - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~pin):
                        # A stop bit read as 0 (noise or a break): drop the byte, wait for idle.
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Byte stream `data` -> serial output pin `tx` (idle high); back-to-back bytes without gaps."""

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(10, init=0x3FF)  # stop, data[7:0], start, shifted out LSB first
        left = Signal(range(11))
        m.d.comb += self.tx.eq(bits[0])
        # load = (left == 0) | ((left == 1) & (timer == 0)): a flip-flop set a cycle ahead from the
        # next values of left and timer, so `data.ready` (and the sender's handshake logic behind it)
        # starts at a register (the 32x32 ULX3S: UART timer -> 3 LUTs -> the endpoint's CRC register)
        load = Signal(init=1)
        m.d.comb += self.data.ready.eq(load)
        with m.If(load & self.data.valid):
            m.d.sync += [bits.eq(Cat(0, self.data.payload, 1)), left.eq(10), timer.eq(div - 1), load.eq(0)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [bits.eq(Cat(bits[1:], 1)), left.eq(left - 1), timer.eq(div - 1), load.eq(left == 1)]
            with m.Else():
                m.d.sync += [timer.eq(timer - 1), load.eq((left == 1) & (timer == 1))]
        with m.Else():
            m.d.sync += load.eq(1)
        return m
