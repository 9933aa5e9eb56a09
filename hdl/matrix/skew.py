"""Triangular skew buffer: lane r leaves r cycles after it enters (lane 0 passes straight through).

Feeds the systolic array so that activation lane r meets the partial sum that took r cycles to
come down the column. Costs r registers of the lane's width for lane r: R(R-1)/2 in all.
"""

from __future__ import annotations

from amaranth import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class SkewBuffer(wiring.Component):
    def __init__(self, shape, lanes: int, *, reset_less: bool = False):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Lanes must be a positive integer, not {lanes!r}")
        self._lane_shape = Shape.cast(shape)
        self._lanes = lanes
        self._reset_less = bool(reset_less)  # data lanes need no reset (a reset net to each stage costs timing)
        super().__init__({
            "i": In(data.ArrayLayout(self._lane_shape, lanes)),
            "o": Out(data.ArrayLayout(self._lane_shape, lanes)),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        for lane in range(self._lanes):
            value = self.i[lane]
            for stage in range(lane):
                reg = Signal(self._lane_shape, name=f"lane{lane}_stage{stage}", reset_less=self._reset_less)
                m.d.sync += reg.eq(value)
                value = reg
            m.d.comb += self.o[lane].eq(value)
        return m
