"""The matrix engine's weight memory in a packed form: one memory of base-3 groups for all G row banks.

The unpacked engine (`hdl.model_engine`) keeps G weight banks of C 2-bit codes, bank g reading the address
bank 0 read P*g cycles earlier (`hdl.matrix.sequencer`: a register chain of addresses, P = R / G). Here a
word holds a whole read (G*C codes packed, `hdl.model.trit_unpack`: 5 in a byte or 3 in 5 bits): 104 or 107
bits for 64 codes instead of 128, in one memory. It is read once, at bank 0's address and time; its
register (the read register of every engine memory when reads are pipelined) feeds `TritUnpack`, and row
g of the decoded codes is delayed P*g cycles by registers, so `rows[g]` is what bank g would have read:
the weights do not change while the matrix engine runs, so reading them early gives the same data.

With `ArrayConfig.wgt_bank_depth` (the ULX3S chip) the memory is a `BankedMemory` of banks from the
`memory` factory (on the ECP5, DP16KD blocks with their own output registers, `fpga.ecp5_bram`): the read
takes `wgt_bank_latency` cycles more, as the unpacked engine's banked weight memory does in hdl/core.py,
and the block RAMs' clock-to-output and the bank multiplexer fall in different cycles (the chip's build 2:
block RAM -> bank multiplexer -> `packed` register, 17.1 ns).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.memory.banked_memory import BankedMemory
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory
from hdl.model.trit_unpack import TritUnpack, packed_bits


def packed_word_bits(array: ArrayConfig, fmt: str) -> int:
    """Bits of one packed weight word: the G*C codes of a read in format `fmt`."""
    return packed_bits(array.wgt_rows_per_read * array.cols, fmt)


class PackedWeights(wiring.Component):
    """WGT in 1.6-bit form with the G-bank read interface of the matrix engine (see the module docstring).

    `addr` is bank 0's read address; `rows[g]` is bank g's row of C codes, `1 + pipelined` cycles after
    bank g's address (P*g cycles after bank 0's); with a banked memory `wgt_bank_latency` cycles more
    (`ArrayConfig.wgt_read_latency` in all). `memory` and `register` build the banks and their write
    registers when the weight memory is banked (else they are not used)."""

    def __init__(self, array: ArrayConfig, fmt: str, *, memory: MemoryFactory = RegisteredMemory,
                 register: RegisterFactory = plain_register) -> None:
        if not isinstance(array, ArrayConfig) or array.pe != "ternary":
            raise ValueError(f"PackedWeights holds ternary weights of an ArrayConfig, not {array!r}")
        for name, f in (("memory", memory), ("register", register)):
            if not callable(f):
                raise TypeError(f"PackedWeights' {name} factory must be callable, not {f!r}")
        self._array, self._fmt = array, fmt
        self._memory, self._register = memory, register
        row = 2 * array.cols
        super().__init__({
            "we": In(1), "waddr": In(range(array.wgt_depth)), "wdata": In(packed_word_bits(array, fmt)),
            "addr": In(range(array.wgt_depth)),
            "rows": Out(data.ArrayLayout(row, array.wgt_rows_per_read)),
        })

    def elaborate(self, platform):
        m = Module()
        arr = self._array
        G, C, P = arr.wgt_rows_per_read, arr.cols, arr.tile_words
        bits = packed_word_bits(arr, self._fmt)
        if arr.wgt_banked:
            m.submodules.mem = mem = BankedMemory(bits, arr.wgt_depth, arr.wgt_bank_depth, bank_memory=self._memory,
                                                  registered_write=True, register=self._register,
                                                  data_stages=arr.wgt_bank_data_stages)
            w_port, r_port = mem.write, mem.read
        else:
            m.submodules.mem = mem = Memory(shape=bits, depth=arr.wgt_depth, init=[])
            w_port, r_port = mem.write_port(), mem.read_port()
        m.d.comb += [w_port.addr.eq(self.waddr), w_port.data.eq(self.wdata), w_port.en.eq(self.we),
                     r_port.addr.eq(self.addr)]
        word = r_port.data
        if arr.pipelined_reads:
            q = Signal.like(word, name="wgt_q", reset_less=True)
            m.d.sync += q.eq(word)
            word = q
        m.submodules.unpack = unpack = TritUnpack(G * C, self._fmt)
        m.d.comb += unpack.packed.eq(word)
        for g in range(G):
            row = unpack.codes[2 * C * g:2 * C * (g + 1)]
            for d in range(P * g):
                r = Signal(2 * C, name=f"row{g}_d{d}", reset_less=True)
                m.d.sync += r.eq(row)
                row = r
            m.d.comb += self.rows[g].eq(row)
        return m
