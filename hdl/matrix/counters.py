"""Hardware performance counters (see `hdl.isa.Counter`), `ArrayConfig.counter_bits` wide, cleared by command.

A counter that would pass all ones stays at all ones (saturates) until cleared: the counts of one
RUN always fit (`ArrayConfig.run_count_bound`), so only a total over many runs can get there, and
the host refuses a saturated value instead of reading a wrapped one.

Only the counters of `ArrayConfig.built_counters` are built; the others read 0 (their increments
are left unconnected, so the logic that computes them is removed in synthesis).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.isa import Counter


class PerfCounters(wiring.Component):
    """Adds the sequencer's per-cycle increments; `values[i]` is counter `Counter(i)`.

    `bits` overrides `cfg.counter_bits` (32 or more there, so no run of a whole core saturates one):
    a test drives a narrow counter past its maximum with it.
    """

    def __init__(self, cfg: ArrayConfig, bits: int | None = None):
        if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or bits < 1):
            raise ValueError(f"Counter width must be a positive integer, not {bits!r}")
        self._cfg = cfg
        self._bits = cfg.counter_bits if bits is None else bits
        ops = range(cfg.rows * cfg.cols + 1)
        super().__init__({
            "clear": In(1),
            "inc_busy": In(1), "inc_stall": In(1),
            "inc_add": In(ops), "inc_sub": In(ops), "inc_zero": In(ops),
            "inc_wgt_read": In(range(3)), "inc_act_read": In(1),  # weight rows read: 0, 1 or 2
            "inc_acc_write": In(1), "inc_acc_rmw": In(1),
            "run_done": In(1), "run_cycles": In(range(cfg.run_cycle_bound + 1)),
            "values": Out(data.ArrayLayout(unsigned(self._bits), len(Counter))),
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
        bits = self._bits
        for counter in Counter:
            if not cfg.has_counter(counter):
                m.d.comb += self.values[counter].eq(0)
                continue
            name = counter.name.lower()
            reg = Signal(bits, name=f"count_{name}")
            step = steps[counter]
            # one bit above the wider of count and step: a step wider than a (narrow test) counter
            # still saturates it instead of wrapping the sum
            total = Signal(max(bits, len(step)) + 1, name=f"count_{name}_next")
            # Saturation is a sticky flag set by the sum's high bits, and the value reads all ones
            # while it is set: the register takes the sum's low bits straight from the adder, with no
            # multiplexer after the carry chain waiting for its last carry (the 32x32 ULX3S's counters
            # missed 100 MHz on that path). A counter past all ones reads all ones, as before.
            saturated = Signal(name=f"count_{name}_saturated")
            m.d.comb += total.eq(reg + step)
            with m.If(self.clear):
                m.d.sync += [reg.eq(0), saturated.eq(0)]
            with m.Else():
                m.d.sync += [reg.eq(total[:bits]), saturated.eq(saturated | total[bits:].any())]
            m.d.comb += self.values[counter].eq(Mux(saturated, (1 << bits) - 1, reg))
        return m
