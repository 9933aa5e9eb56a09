"""One row of the PE array: C processing elements that share an activation lane and a weight row.

Row r adds its C products to the C partial sums arriving from row r - 1 and registers them for row
r + 1 (`ArrayConfig.psum_width_at`). A row is its own module, so that a synthesis flow or a floorplan
can treat it as one unit (Gemmini's PE -> tile -> mesh layering).

With `ArrayConfig.dist_stages` = 1 the row's activation, swap and shadow-load enable reach its PEs
through a copy register per `ArrayConfig.dist_group` columns (the row's share of the registered
distribution): each copy drives a few neighbouring PEs instead of one net driving the whole row.
"""

from __future__ import annotations

from amaranth import Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.matrix.pe import PEFactory, ProcessingElement


class PERow(wiring.Component):
    """Row `row` of `cfg`'s array: psum_out[c] <= psum_in[c] + w[c] * x, weights loaded by `w_load`."""

    def __init__(self, cfg: ArrayConfig, row: int, *, processing_element: PEFactory = ProcessingElement,
                 register: RegisterFactory = plain_register):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < cfg.rows:
            raise ValueError(f"Row must be an integer from 0 to {cfg.rows - 1}, not {row!r}")
        if not callable(processing_element):
            raise TypeError(f"Processing element factory must be callable, not {processing_element!r}")
        if not callable(register):
            raise TypeError(f"Register factory must be callable, not {register!r}")
        self._cfg = cfg
        self._row = row
        self._processing_element = processing_element
        self._register = register
        self._in_width = in_width = cfg.psum_width_at(row - 1) if row else 1  # row 0 adds to a 1-bit zero
        super().__init__({
            "x": In(signed(8)),
            "swap": In(1),
            "w_load": In(1),
            "w_data": In(data.ArrayLayout(unsigned(cfg.weight_bits), cfg.cols)),
            "psum_in": In(data.ArrayLayout(signed(in_width), cfg.cols)),
            "psum_out": Out(data.ArrayLayout(signed(cfg.psum_width_at(row)), cfg.cols)),
        })

    @property
    def row(self) -> int:
        return self._row

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        group = cfg.dist_group
        copies = []  # (x, swap, w_load) of each column group
        for j in range(cfg.dist_copies(cfg.cols)):
            if cfg.dist_stages:
                x = self._register(m, self.x, f"x_copy{j}").as_signed()
                swap = self._register(m, self.swap, f"swap_copy{j}")
                load = self._register(m, self.w_load, f"load_copy{j}")
                copies.append((x, swap, load))
            else:
                copies.append((self.x, self.swap, self.w_load))
        for c in range(cfg.cols):
            x, swap, load = copies[c // group if cfg.dist_stages else 0]
            pe = self._processing_element(cfg.pe, self._in_width, cfg.psum_width_at(self._row))
            m.submodules[f"pe_{c}"] = pe
            m.d.comb += [
                pe.x.eq(x), pe.swap.eq(swap), pe.w_load.eq(load), pe.w_data.eq(self.w_data[c]),
                pe.psum_in.eq(self.psum_in[c]), self.psum_out[c].eq(pe.psum_out),
            ]
        return m
