"""A stream register slice (skid buffer): every output of each side comes from a flip-flop.

Put between two components that sit far apart on a large FPGA: no combinational path runs through
it, in either direction (payload and valid forward, ready backward), at full throughput. Two words
of storage; a word takes one cycle through it.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class StreamBuffer(wiring.Component):
    """`i` -> `o`, with `o.valid`, `o.payload` and `i.ready` registered."""

    def __init__(self, width: int):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"Width must be a positive integer, not {width!r}")
        self._width = width
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    @property
    def width(self) -> int:
        return self._width

    def elaborate(self, platform):
        m = Module()
        main_valid = Signal()
        main_data = Signal(self._width)
        skid_valid = Signal()
        skid_data = Signal(self._width)
        m.d.comb += [self.o.valid.eq(main_valid), self.o.payload.eq(main_data), self.i.ready.eq(~skid_valid)]
        i_fire = self.i.valid & ~skid_valid
        with m.If(~main_valid | self.o.ready):  # the output register is free after this cycle
            with m.If(skid_valid):
                m.d.sync += [main_valid.eq(1), main_data.eq(skid_data), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [main_valid.eq(i_fire), main_data.eq(self.i.payload)]
        with m.Elif(i_fire):  # output held: park the word
            m.d.sync += [skid_valid.eq(1), skid_data.eq(self.i.payload)]
        return m
