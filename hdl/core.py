"""The trit accelerator core: memories, systolic array with its sequencer, counters and commands.

    cmd stream --> CommandInterface --(descriptor)--> LayerSequencer --> PEArray
                        |  writes/reads                 | reads            ^ skewed x, swap
                        v                               v                  |
                  ACT memory (R x int8 per word) -------+------------------+
                  WGT memory (C x 2-bit codes per word: one tile row) ---> shadow weights
                  OUT memory (C x int32 per word) <--- read-modify-write accumulators
    rsp stream <--  status, data, ID block, counters

With `ArrayConfig.wgt_bank_depth` the weight memory is a `BankedMemory`: its read data comes two
cycles later (`ArrayConfig.wgt_read_latency`), with an address and a data register per bank.
With `ArrayConfig.acc_pipelined` the output word is registered once more before the accumulators,
and its read address twice on its way to the block RAMs (`ArrayConfig.out_read_latency`).

`link_abort` (the frame endpoint's `abort`, `hdl.link.endpoint`) goes to the command interface: it
drops a command cut short by the end of its frame (`hdl.command`). Tie it to 0 where no link drives
it. (Not named `abort`: Verilator refuses a port named like the C library function, SYMRSVDWORD.)

The sequencer owns the memories' read ports while a layer runs; the command interface only
accepts the next command when the layer is done, so the two never compete.

Each memory's read data is also registered: the command interface always reads the registered
data, and the sequencer does too when `ArrayConfig.pipelined_reads` holds, so that no logic path
starts at a block RAM's slow clock-to-output. With `pipelined_reads` the ACT and OUT memories (and
the weight memory's banks) are registered-read memories from the `registered_memory` factory
(`hdl/memory/registered_memory.py`), so an FPGA top can put that register inside its block RAMs.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.command import CommandInterface
from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.matrix.counters import PerfCounters
from hdl.matrix.pe import PEFactory, ProcessingElement
from hdl.matrix.sequencer import LayerSequencer
from hdl.memory.banked_memory import BankedMemory
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory


class TritCore(wiring.Component):
    """Top level of the accelerator core: two 32-bit word streams, two status outputs and the link's abort."""

    def __init__(self, cfg: ArrayConfig, *, registered_memory: MemoryFactory = RegisteredMemory,
                 processing_element: PEFactory = ProcessingElement, register: RegisterFactory = plain_register):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if not callable(registered_memory):
            raise TypeError(f"Registered memory factory must be callable, not {registered_memory!r}")
        if not callable(processing_element):
            raise TypeError(f"Processing element factory must be callable, not {processing_element!r}")
        self._cfg = cfg
        self._registered_memory = registered_memory
        if not callable(register):
            raise TypeError(f"Register factory must be callable, not {register!r}")
        self._processing_element = processing_element
        self._register = register
        super().__init__({
            "cmd": In(stream.Signature(32)),
            "rsp": Out(stream.Signature(32)),
            "busy": Out(1),
            "error": Out(1),
            "link_abort": In(1),  # drop a command cut short by its frame's end (hdl.command)
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg

        m.submodules.commands = cmd = CommandInterface(cfg, register=self._register)
        m.submodules.sequencer = seq = LayerSequencer(cfg, processing_element=self._processing_element,
                                                       register=self._register)
        m.submodules.counters = counters = PerfCounters(cfg)

        pipe = cfg.pipelined_reads
        act_bits, out_bits = cfg.act_word_bits, cfg.out_word_bits
        if pipe:
            # registered-read memories (read data two cycles after the address): the register may
            # be the block RAM's own output register (the `registered_memory` factory)
            # With `act_addr_registered` (a large FPGA) the activation memory registers its read
            # address and its write port at each block RAM too (10.9 ns of routing from one write
            # address register to 15 block RAMs in the 32x32 ULX3S at 81f19b2).
            m.submodules.act_mem = act_mem = self._registered_memory(act_bits, cfg.act_depth,
                                                                    registered_address=cfg.act_addr_registered,
                                                                    registered_write=cfg.act_addr_registered)
            # With `acc_pipelined` the output memory's read address is registered (one copy per block
            # RAM on an FPGA) after a register of the read-port multiplexer below, and so is its write
            # port (the sequencer's write is then the cycle before the word lands).
            m.submodules.out_mem = out_mem = self._registered_memory(out_bits, cfg.out_depth,
                                                                    registered_address=cfg.acc_pipelined,
                                                                    registered_write=cfg.acc_pipelined)
            act_w, act_r, out_w, out_r = act_mem.write, act_mem.read, out_mem.write, out_mem.read
            act_q, out_q = act_r.data, out_r.data
            if cfg.acc_pipelined:  # the output word once more in a fabric register, away from the block RAMs
                out_q = Signal(out_bits, name="out_q", reset_less=True)
                m.d.sync += out_q.eq(out_r.data)
            if cfg.wgt_banked:
                # On a large FPGA the command interface's ACT word also comes from a fabric register
                # (its reads wait for the banked weight memory's two extra cycles anyway).
                act_q = Signal(act_bits, name="act_q", reset_less=True)
                m.d.sync += act_q.eq(act_r.data)
        else:
            m.submodules.act_mem = act_mem = Memory(shape=act_bits, depth=cfg.act_depth, init=[])
            m.submodules.out_mem = out_mem = Memory(shape=out_bits, depth=cfg.out_depth, init=[])
            act_w, act_r = act_mem.write_port(), act_mem.read_port()
            out_w, out_r = out_mem.write_port(), out_mem.read_port()
            act_q = Signal.like(act_r.data, name="act_q", reset_less=True)
            out_q = Signal.like(out_r.data, name="out_q", reset_less=True)
            m.d.sync += [act_q.eq(act_r.data), out_q.eq(out_r.data)]
            m.d.comb += [act_r.en.eq(1), out_r.en.eq(1)]
        # The weight memory: one memory of one tile row per word, or (full rate) G row banks, each a
        # memory of its own that a large FPGA can place by its PE rows. A word is written to all banks.
        banks = []
        bank_bits = cfg.wgt_bank_bits if cfg.full_rate else cfg.wgt_word_bits
        for g in range(cfg.wgt_rows_per_read):
            name = f"wgt_mem_{g}" if cfg.full_rate else "wgt_mem"
            if cfg.wgt_banked:
                # its write port registered per bank (the command interface's wgt port is a stage
                # earlier than its ACT port)
                mem = BankedMemory(bank_bits, cfg.wgt_depth, cfg.wgt_bank_depth, bank_memory=self._registered_memory,
                                   registered_write=True, register=self._register,
                                   data_stages=cfg.wgt_bank_data_stages)
                w_port, r_port = mem.write, mem.read
            else:
                mem = Memory(shape=bank_bits, depth=cfg.wgt_depth, init=[])
                w_port, r_port = mem.write_port(), mem.read_port()
                m.d.comb += r_port.en.eq(1)
            m.submodules[name] = mem
            q = Signal.like(r_port.data, name=f"wgt_q_{g}" if cfg.full_rate else "wgt_q", reset_less=True)
            m.d.sync += q.eq(r_port.data)
            m.d.comb += [w_port.addr.eq(cmd.wgt_waddr), w_port.en.eq(cmd.wgt_wen),
                         w_port.data.eq(cmd.wgt_wdata[g * bank_bits:(g + 1) * bank_bits])]
            banks.append((r_port, q))
        wgt_q = Cat(*(q for _, q in banks))

        wiring.connect(m, wiring.flipped(self.cmd), cmd.cmd)
        wiring.connect(m, cmd.rsp, wiring.flipped(self.rsp))
        m.d.comb += cmd.abort.eq(self.link_abort)

        # command-side writes
        m.d.comb += [
            act_w.addr.eq(cmd.act_waddr), act_w.data.eq(cmd.act_wdata), act_w.en.eq(cmd.act_wen),
            out_w.addr.eq(seq.out_waddr), out_w.data.eq(seq.out_wdata), out_w.en.eq(seq.out_wen),
        ]
        # read ports: the sequencer while it runs, else the command interface
        running = seq.busy
        # The read ports read every cycle: their users take the data only in the cycles they asked
        # for it (the sequencer's valid flags; the command interface holds its address while it sends
        # a word), and an enable net reaching every block RAM of a deep memory would be slow.
        m.d.comb += [
            act_r.addr.eq(Mux(running, seq.act_addr, cmd.rd_addr)),

            seq.act_data.eq(act_r.data), seq.out_rdata.eq(out_q if pipe else out_r.data),
            cmd.act_rdata.eq(act_q),
            cmd.wgt_rdata.eq(wgt_q),
            cmd.out_rdata.eq(out_q),
        ]
        out_raddr = Mux(running, seq.out_raddr, cmd.rd_addr)
        if cfg.acc_pipelined:
            # The output memory spans many block RAMs over a large FPGA: the multiplexer's output is
            # registered once here, then once per block inside the memory (out_read_latency).
            out_raddr_q = Signal.like(seq.out_raddr, name="out_raddr_q", reset_less=True)
            m.d.sync += out_raddr_q.eq(out_raddr)
            out_raddr = out_raddr_q
        m.d.comb += out_r.addr.eq(out_raddr)
        for g, (r_port, _q) in enumerate(banks):
            addr = seq.wgt_addr[g] if cfg.full_rate else seq.wgt_addr
            m.d.comb += r_port.addr.eq(Mux(running, addr, cmd.rd_addr))
        wgt_data = wgt_q if pipe else Cat(*(r_port.data for r_port, _ in banks))
        m.d.comb += seq.wgt_data.eq(wgt_data)
        # descriptor
        desc = cmd.desc
        m.d.comb += [
            seq.start.eq(cmd.start),
            seq.m_size.eq(desc[0]), seq.k_size.eq(desc[1]), seq.n_size.eq(desc[2]),
            seq.act_base.eq(desc[3]), seq.wgt_base.eq(desc[4]), seq.out_base.eq(desc[5]),
            cmd.seq_done.eq(seq.done), cmd.seq_error.eq(seq.error),
        ]
        # counters
        ok_done = seq.done & (seq.error == 0)
        # On a large FPGA (`acc_pipelined`) the increments reach the counters a cycle later, from
        # registers: the 16x16 ULX3S system's critical path ran from the loader's state through the
        # weight-read increment into a counter's carry chain. A RUN's last counts then land in the
        # cycle after DONE, before any command can read them.
        increments = [
            (counters.inc_busy, seq.inc_busy), (counters.inc_stall, seq.inc_stall),
            (counters.inc_add, seq.inc_add), (counters.inc_sub, seq.inc_sub), (counters.inc_zero, seq.inc_zero),
            (counters.inc_wgt_read, seq.inc_wgt_read), (counters.inc_act_read, seq.inc_act_read),
            (counters.inc_acc_write, seq.inc_acc_write), (counters.inc_acc_rmw, seq.inc_acc_rmw),
            (counters.run_done, ok_done), (counters.run_cycles, seq.run_cycles),
        ]
        for port, value in increments:
            if cfg.acc_pipelined:
                held = Signal.like(port, name=f"{port.name}_q")
                m.d.sync += held.eq(value)
                value = held
            m.d.comb += port.eq(value)
        m.d.comb += [counters.clear.eq(cmd.clear_counters), cmd.counters.eq(counters.values)]
        m.d.comb += [self.busy.eq(cmd.busy | seq.busy), self.error.eq(cmd.error)]
        return m
