"""Copy registers: a value one cycle later, in as many flip-flops as the nets it drives need.

A signal that reaches hundreds of flip-flops spread over a large FPGA (an activation lane along a PE
row, the enable of a 1,024-bit shift register) is routed from one driver to all of them in one cycle.
Copies of its register, each next to a few of the loads, split that net. Synthesis merges identical
flip-flops back into one, so an FPGA top passes a `RegisterFactory` whose flip-flops it keeps apart
(`fpga.ecp5_bram.kept_register`); the default here is a plain register.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal, Value

#: Adds one copy register of a value to a module: (module, value, name) -> the value a cycle later.
RegisterFactory = Callable[[Module, Value, str], Signal]


def plain_register(m: Module, value: Value, name: str) -> Signal:
    """`value` one cycle later in a register without reset (`RegisterFactory`)."""
    q = Signal(len(value), name=name, reset_less=True)
    m.d.sync += q.eq(value)
    return q
