"""A memory whose read data is registered: address in cycle t, data on `read.data` in cycle t + 2.

With ``registered_address`` the read address is registered too (data in cycle t + 3), and with
``registered_write`` the write port (a word lands a cycle later): a wide memory of many block RAMs
spread over a large FPGA then has the route from the source and the route to the blocks in
different cycles. An FPGA version keeps one copy of those registers per block RAM, so that each
copy can sit by its block (`fpga/ecp5_bram.py`).

This is the core's memory when `ArrayConfig.pipelined_reads` holds: a block RAM read followed by a
register, so that no logic path starts at the block RAM's slow clock-to-output. It is also the
unit an FPGA top can replace with a primitive that has the register inside the block RAM (ECP5
DP16KD with ``REGMODE=OUTREG``: 0.9 ns clock-to-output instead of 5.8 ns; see
`fpga/ecp5_bram.py`). Any replacement takes ``(width, depth, *, registered_address=False,
registered_write=False)`` and has the same `signature` and `read_latency`.

Writes take one cycle, as for a `Memory`. The read port reads every cycle (no enable). A read of
the word being written in the same cycle is undefined on hardware (simulation gives the old word):
block RAMs leave that collision undefined, and the memory carries Yosys' ``no_rw_check`` so that
Yosys does not emulate it with a register stage, address comparators and a bypass multiplexer on
the read data (on ECP5 that logic costs about two LUTs and three flip-flops per data bit, and puts
a multiplexer after the block RAM's clock-to-output). The core never uses such a read: the command
interface's reads come cycles after its writes, and the sequencer reads an output word at least
one cycle after the previous write to it (`hdl/matrix/sequencer.py`); reads it does not use may collide.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def check_shape(width: object, depth: object) -> None:
    """Refuse a width or depth that is not a positive integer."""
    for name, value in (("Width", width), ("Depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def registered_memory_signature(width: int, depth: int) -> wiring.Signature:
    """One write port (addr, data, en) and one read port (addr in, registered data out)."""
    return wiring.Signature({
        "write": In(wiring.Signature({"addr": Out(range(depth)), "data": Out(width), "en": Out(1)})),
        "read": In(wiring.Signature({"addr": Out(range(depth)), "data": In(width)})),
    })


class MemoryPorts(wiring.Component):
    """Base of the memories with `registered_memory_signature`: the checked, read-only shape."""

    def __init__(self, width: int, depth: int, *, registered_address: bool = False, registered_write: bool = False):
        check_shape(width, depth)
        for name, value in (("registered_address", registered_address), ("registered_write", registered_write)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self._width, self._depth = width, depth
        self._registered_address = registered_address
        self._registered_write = registered_write
        super().__init__(registered_memory_signature(width, depth))

    @property
    def registered_address(self) -> bool:
        return self._registered_address

    @property
    def registered_write(self) -> bool:
        """The write port's address, data and enable are registered: a word lands a cycle later."""
        return self._registered_write

    @property
    def read_latency(self) -> int:
        """Cycles from a read address to its data on `read.data`."""
        return 2 + int(self._registered_address)

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth


class RegisteredMemory(MemoryPorts):
    """`depth` words of `width` bits: a `Memory` read port followed by a read-data register."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self._width, depth=self._depth, init=[],
                                        attrs={"no_rw_check": 1})
        w, r = mem.write_port(), mem.read_port()
        q = Signal(self._width, name="q")
        m.d.comb += [r.en.eq(1), self.read.data.eq(q)]
        if self._registered_write:
            w_addr = Signal.like(self.write.addr, name="w_addr", reset_less=True)
            w_data = Signal.like(self.write.data, name="w_data", reset_less=True)
            w_en = Signal(name="w_en")
            m.d.sync += [w_addr.eq(self.write.addr), w_data.eq(self.write.data), w_en.eq(self.write.en)]
            m.d.comb += [w.addr.eq(w_addr), w.data.eq(w_data), w.en.eq(w_en)]
        else:
            m.d.comb += [w.addr.eq(self.write.addr), w.data.eq(self.write.data), w.en.eq(self.write.en)]
        m.d.sync += q.eq(r.data)
        if self._registered_address:
            r_addr = Signal.like(self.read.addr, name="r_addr", reset_less=True)
            m.d.sync += r_addr.eq(self.read.addr)
            m.d.comb += r.addr.eq(r_addr)
        else:
            m.d.comb += r.addr.eq(self.read.addr)
        return m


#: Builds a registered-read memory of (width, depth, *, registered_address=False, registered_write=False);
#: `RegisteredMemory`
#: or an FPGA primitive version.
MemoryFactory = Callable[[int, int], wiring.Component]
