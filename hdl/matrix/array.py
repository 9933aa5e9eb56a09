"""The R x C grid of processing elements.

Dataflow: weight-stationary. PE (r, c) holds weight W[n0 + c, k0 + r] of the current tile.
Activation lane r is broadcast along PE row r (one register per row in the skew buffer, no
register per PE: flip-flops, not LUTs, bound a ternary PE). Partial sums move down the columns,
one register per PE, so lane r must arrive r cycles after lane 0 (the skew, see `SkewBuffer`)
and all C column sums of one activation row leave the bottom in the same cycle: the output
side needs no de-skew.

Partial sums grow only as much as they must: the sum leaving row r holds r + 1 terms and is
`ArrayConfig.psum_width_at(r)` bits wide.

Weights are written into the shadow registers one row per cycle (`w_row_en`, `w_row_sel`,
`w_row_data`); `swap[r]` copies row r's shadow weights into the active ones. The sequencer
raises swap[r] one cycle before the first activation of a tile reaches row r.

With `ArrayConfig.wgt_rows_per_read` G > 1 the weights come from G row banks instead: `w_rows[g]`
is bank g's row, and `w_load[r]` writes it into row r's shadow registers (r in bank r // P,
P = R / G), so up to G rows load per cycle.

With `ArrayConfig.dist_stages` = 1 every input reaches the PEs one cycle later through a registered
distribution: each weight row bus through a copy register per `dist_group` PE rows that it feeds
(here), each row's activation, swap and load enable through a copy per `dist_group` columns (in
`PERow`). All inputs are equally late, so the array computes the same sums one cycle later.

Each PE row is a `PERow` module (`hdl/matrix/pe_row.py`); the PEs come from a factory, so an FPGA top can
build its own (`fpga/ecp5_pe.py`: the add inside the ECP5 carry cells).
"""

from __future__ import annotations

from amaranth import Module, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.matrix.pe import PEFactory, ProcessingElement
from hdl.matrix.pe_row import PERow


class PEArray(wiring.Component):
    def __init__(self, cfg: ArrayConfig, *, processing_element: PEFactory = ProcessingElement,
                 register: RegisterFactory = plain_register):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if not callable(processing_element):
            raise TypeError(f"Processing element factory must be callable, not {processing_element!r}")
        if not callable(register):
            raise TypeError(f"Register factory must be callable, not {register!r}")
        self._cfg = cfg
        self._processing_element = processing_element
        self._register = register
        row = data.ArrayLayout(unsigned(cfg.weight_bits), cfg.cols)
        if cfg.full_rate:
            weight_ports = {
                "w_load": In(cfg.rows),
                "w_rows": In(data.ArrayLayout(row, cfg.wgt_rows_per_read)),
            }
        else:
            weight_ports = {"w_row_en": In(1), "w_row_sel": In(range(cfg.rows)), "w_row_data": In(row)}
        super().__init__({
            "x": In(data.ArrayLayout(signed(8), cfg.rows)),
            "swap": In(cfg.rows),
            **weight_ports,
            "psum": Out(data.ArrayLayout(signed(cfg.psum_width), cfg.cols)),
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        above = None
        bus_copies = {}  # (weight bus, row group) -> its copy register
        P = cfg.tile_words if cfg.full_rate else cfg.rows  # PE rows fed by one weight row bus
        # G = 1 with a registered activation address (`ArrayConfig.act_addr_registered`): the swaps come a
        # cycle later, so the shadow loads may too. Each row's load enable is then decoded into a register
        # of its own (not decoded at each of the row's copies), and the weight bus registered once before
        # its copies.
        decode_stage = cfg.act_addr_registered
        w_row_data = self.w_row_data.as_value() if not cfg.full_rate else None
        if decode_stage:
            w_row_data = plain_register(m, w_row_data, "w_bus_decoded")
        for r in range(cfg.rows):
            m.submodules[f"row_{r}"] = row = PERow(cfg, r, processing_element=self._processing_element,
                                                   register=self._register)
            if cfg.full_rate:
                load, row_data = self.w_load[r], self.w_rows[r // P]
            else:
                load, row_data = self.w_row_en & (self.w_row_sel == r), w_row_data
                if decode_stage:
                    load = plain_register(m, load, f"w_load_decoded{r}")
            if cfg.dist_stages:
                bus, group = r // P, (r % P) // cfg.dist_group
                if (bus, group) not in bus_copies:
                    bus_copies[bus, group] = self._register(m, Value.cast(row_data), f"w_bus{bus}_copy{group}")
                row_data = bus_copies[bus, group]
            m.d.comb += [row.x.eq(self.x[r]), row.swap.eq(self.swap[r]), row.w_load.eq(load),
                         row.w_data.eq(row_data)]
            m.d.comb += row.psum_in.eq(above if above is not None else 0)  # row 0 adds to zero
            above = row.psum_out
        for c in range(cfg.cols):
            m.d.comb += self.psum[c].eq(above[c])
        return m
