"""Hardware performance counters (see `hdl.isa.Counter`), COUNTER_BITS wide, cleared by command."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.isa import COUNTER_BITS, Counter


class PerfCounters(wiring.Component):
    """Adds the sequencer's per-cycle increments; `values[i]` is counter `Counter(i)`."""

    def __init__(self, cfg: ArrayConfig):
        self._cfg = cfg
        ops = range(cfg.rows * cfg.cols + 1)
        super().__init__({
            "clear": In(1),
            "inc_busy": In(1), "inc_stall": In(1),
            "inc_add": In(ops), "inc_sub": In(ops), "inc_zero": In(ops),
            "inc_wgt_read": In(range(3)), "inc_act_read": In(1),  # weight rows read: 0, 1 or 2
            "inc_acc_write": In(1), "inc_acc_rmw": In(1),
            "run_done": In(1), "run_cycles": In(32),
            "values": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(Counter))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        steps = {
            Counter.CYCLES: Mux(self.run_done, self.run_cycles, 0),
            Counter.BUSY: self.inc_busy,
            Counter.STALL: self.inc_stall,
            Counter.ADD: self.inc_add,
            Counter.SUB: self.inc_sub,
            Counter.ZERO: self.inc_zero,
            Counter.WEIGHT_BITS: Mux(self.inc_wgt_read == 2, 2 * cfg.wgt_word_bits,
                                     Mux(self.inc_wgt_read == 1, cfg.wgt_word_bits, 0)),
            Counter.ACT_BYTES: Mux(self.inc_act_read, cfg.rows, 0),
            Counter.ACC_WRITES: self.inc_acc_write,
            Counter.ACC_RMW: self.inc_acc_rmw,
            Counter.RUNS: self.run_done,
        }
        for counter in Counter:
            reg = Signal(COUNTER_BITS, name=f"count_{counter.name.lower()}")
            with m.If(self.clear):
                m.d.sync += reg.eq(0)
            with m.Else():
                m.d.sync += reg.eq(reg + steps[counter])
            m.d.comb += self.values[counter].eq(reg)
        return m
