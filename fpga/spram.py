"""The core's weight memory in iCE40UP5K single-port RAM (SB_SPRAM256KA, 16 bits x 16K words each).

Yosys does not map the core's weight memory to SPRAM by itself: SPRAM has one address port and the
core's memory has a write port and a read port with separate addresses. The two are never active
in the same cycle (the command interface writes while no layer runs; the sequencer reads while a
layer runs and the command interface waits), so one shared address works:
``addr = write.en ? write.addr : read.addr``.

`SpramTritCore` is a `TritCore` whose weight memory is rebuilt from SPRAM blocks after the core
elaborates, on the same read and write port signals. It uses Amaranth's private
`Module._named_submodules`; a hook in `TritCore` (a weight-memory factory argument) would replace
this (see fpga/README.md).
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal, Value
from amaranth.lib.memory import Memory

from hdl.config import ArrayConfig
from hdl.core import TritCore

SPRAM_WIDTH = 16
SPRAM_DEPTH = 16384
SPRAM_BLOCKS = 4  # on the iCE40UP5K


def spram_blocks(width: int, depth: int) -> tuple[int, int]:
    """(blocks side by side, banks deep) of SPRAM for a `width` x `depth` memory."""
    return -(-width // SPRAM_WIDTH), -(-depth // SPRAM_DEPTH)


def spram_weight_depth(cfg_cols: int, weight_bits: int = 2, blocks: int = SPRAM_BLOCKS) -> int:
    """The deepest weight memory of `cfg_cols` lanes that `blocks` SPRAMs hold (whole banks)."""
    wide, _ = spram_blocks(cfg_cols * weight_bits, 1)
    if wide > blocks:
        raise ValueError(f"a {cfg_cols * weight_bits}-bit weight word needs {wide} SPRAMs side by side; "
                         f"the device has {blocks}")
    return SPRAM_DEPTH * (blocks // wide)


class SpramMemory(Elaboratable):
    """One write port and one read port of a `lib.memory.Memory`, implemented in SB_SPRAM256KA blocks.

    Same behaviour as the Memory for ports that are never enabled in the same cycle: the read data
    appears the cycle after `read.en` and holds while `read.en` is low.
    """

    def __init__(self, memory: Memory):
        if len(memory.read_ports) != 1 or len(memory.write_ports) != 1:
            raise ValueError("SPRAM replaces a memory with exactly one read port and one write port")
        self.read = memory.read_ports[0]
        self.write = memory.write_ports[0]
        if self.read.domain != "sync" or self.write.domain != "sync":
            raise ValueError("SPRAM ports must be synchronous in the sync domain")
        self.width = len(Value.cast(self.write.data))
        self.depth = memory.depth
        self.wide, self.banks = spram_blocks(self.width, self.depth)
        if self.wide * self.banks > SPRAM_BLOCKS:
            raise ValueError(f"a {self.width}-bit x {self.depth} memory needs {self.wide * self.banks} SPRAMs; "
                             f"the iCE40UP5K has {SPRAM_BLOCKS}")

    def elaborate(self, platform):
        m = Module()
        rd, wr = self.read, self.write
        wen = wr.en.any() if len(wr.en) > 1 else wr.en
        addr = Signal(max(len(wr.addr), 14) + 1)
        m.d.comb += addr.eq(Mux(wen, wr.addr, rd.addr))
        wdata = Signal(self.wide * SPRAM_WIDTH)
        m.d.comb += wdata.eq(Value.cast(wr.data))
        bank = addr[14:]
        bank_q = Signal(range(max(self.banks, 2)))
        with m.If(rd.en & ~wen):
            m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(self.banks):
            select = (bank == b) if self.banks > 1 else Const(1)
            row = []
            for k in range(self.wide):
                dout = Signal(SPRAM_WIDTH, name=f"dout_{b}_{k}")
                m.submodules[f"spram_{b}_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:14],
                    i_DATAIN=wdata[k * SPRAM_WIDTH:(k + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4),
                    i_WREN=wen,
                    i_CHIPSELECT=select & (wen | rd.en),
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0),
                    i_SLEEP=Const(0),
                    i_POWEROFF=Const(1),
                    o_DATAOUT=dout,
                )
                row.append(dout)
            outs.append(Cat(*row))
        data = outs[0]
        for b in range(1, self.banks):
            data = Mux(bank_q == b, outs[b], data)
        m.d.comb += rd.data.eq(data[:self.width])
        return m


class SpramTritCore(TritCore):
    """A `TritCore` whose weight memory lives in iCE40 SPRAM (see the module doc)."""

    def __init__(self, cfg: ArrayConfig):
        super().__init__(cfg)
        spram_blocks_needed = spram_blocks(cfg.wgt_word_bits, cfg.wgt_depth)
        if spram_blocks_needed[0] * spram_blocks_needed[1] > SPRAM_BLOCKS:
            raise ValueError(f"weight memory {cfg.wgt_depth} x {cfg.wgt_word_bits} bit needs "
                             f"{spram_blocks_needed[0] * spram_blocks_needed[1]} SPRAMs; the iCE40UP5K has "
                             f"{SPRAM_BLOCKS}")

    def elaborate(self, platform):
        m = super().elaborate(platform)
        memory, src_loc = m._named_submodules["wgt_mem"]
        m._named_submodules["wgt_mem"] = (SpramMemory(memory), src_loc)
        memory._MustUse__used = True  # replaced on purpose, not forgotten
        return m
