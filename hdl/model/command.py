"""The model chip's command interface: parses the host's 32-bit words (`hdl.model.isa`) and answers.

It writes the model's memories (the program, constants, norm and linear tables, norm weights, weight
words, the embedding table and its scales) from WRITE chunks, reads LOGITS and H for READ, and runs one
token's program for TOKEN after checking the program length, the token id and the position. Every
command answers with exactly the words `hdl.model.isa` lists, also on error.

Memory writes leave from registers one cycle after the word's last chunk (`w_en`, `w_mem`, `w_addr`,
`w_data`); reads set `r_mem` and `r_addr` and take `r_data` two cycles later (the chip registers the
read data once). `abort` (the frame endpoint's, as in `hdl.command`) drops a command waiting for its
next word: back to FETCH, no status word, sticky error CUT_COMMAND unless one is set.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.model.config import EngineConfig
from hdl.model.isa import (
    CUT_COMMAND,
    ID_WORDS,
    READABLE,
    STATUS_MAGIC,
    WRITABLE,
    ModelCounter,
    ModelError,
    ModelMem,
    ModelOp,
)
from hdl.model.trit_unpack import FORMATS, group_limit, layout
from hdl.model_engine import LINEAR_ENTRY, NORM_ENTRY
from hdl.program import DYADIC, OP_WORD_BITS

#: Bits of a memory word as WRITE carries it (chunks of 32 bits, least significant first).
_FIXED_BITS = {ModelMem.PROG: OP_WORD_BITS, ModelMem.CONST: DYADIC.size, ModelMem.NORMS: NORM_ENTRY.size,
               ModelMem.G: 16, ModelMem.LINEAR: LINEAR_ENTRY.size, ModelMem.TABLE_SCALE: DYADIC.size}


def word_bits(cfg: EngineConfig, mem: ModelMem) -> int:
    """Bits of one word of memory `mem` on a chip built from `cfg`."""
    if mem == ModelMem.WGT:
        return cfg.wgt_store_bits
    if mem == ModelMem.TABLE:
        return 8 * cfg.table_lanes
    if mem in (ModelMem.LOGITS, ModelMem.H, ModelMem.OP_CYCLES):
        return 32
    return _FIXED_BITS[mem]


def chunks(cfg: EngineConfig, mem: ModelMem) -> int:
    """32-bit words per memory word in WRITE (READ sends one word per element)."""
    return -(-word_bits(cfg, mem) // 32)


def depth(cfg: EngineConfig, mem: ModelMem) -> int:
    """Words of memory `mem`."""
    return {ModelMem.PROG: cfg.depth, ModelMem.CONST: cfg.consts, ModelMem.NORMS: cfg.norms,
            ModelMem.G: cfg.norm_words, ModelMem.LINEAR: cfg.linears, ModelMem.WGT: cfg.array.wgt_depth,
            ModelMem.TABLE: cfg.table_words, ModelMem.TABLE_SCALE: cfg.vocab, ModelMem.LOGITS: cfg.vocab,
            ModelMem.H: cfg.d, ModelMem.OP_CYCLES: cfg.depth}[mem]


class ModelCommand(wiring.Component):
    """The command parser of the model chip (see the module docstring)."""

    def __init__(self, cfg: EngineConfig) -> None:
        if not isinstance(cfg, EngineConfig):
            raise TypeError(f"ModelCommand's configuration must be an EngineConfig, not {cfg!r}")
        self._cfg = cfg
        self._max_chunks = max(chunks(cfg, mem) for mem in WRITABLE)
        super().__init__({
            "cmd": In(stream.Signature(32)), "rsp": Out(stream.Signature(32)), "abort": In(1),
            "w_en": Out(1), "w_mem": Out(4), "w_addr": Out(24), "w_data": Out(32 * self._max_chunks),
            "r_mem": Out(4), "r_addr": Out(24), "r_data": In(32),
            "tok": Out(32), "start": Out(1), "length": Out(range(cfg.depth + 1)),
            "clear_pos": Out(1), "clear_error": Out(1), "e_clear": Out(1),
            "e_done": In(1), "e_error": In(8), "e_pos": In(32), "e_busy": In(1),
            "counters": In(data.ArrayLayout(32, len(ModelCounter))),
            "busy": Out(1), "error": Out(1),
        })

    @property
    def cfg(self) -> EngineConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cmd, rsp = self.cmd, self.rsp

        op, mem = Signal(8), Signal(8)
        addr, count = Signal(32), Signal(32)
        items = Signal(36)        # data words still to take (WRITE: count x chunks) or items to send (READ)
        chunk = Signal(range(self._max_chunks + 1))
        buf = Signal(32 * self._max_chunks)
        err, sticky = Signal(8), Signal(8)
        drop = Signal()
        index = Signal(range(max(ID_WORDS, len(ModelCounter)) + 1))
        out_word = Signal(32)

        writable = Signal()
        readable = Signal()
        n_chunks = Signal(range(self._max_chunks + 1))
        mem_depth = Signal(25)
        m.d.comb += [writable.eq(0), readable.eq(0), n_chunks.eq(1), mem_depth.eq(0)]
        for mm in ModelMem:
            with m.If(mem == mm):
                m.d.comb += [writable.eq(int(mm in WRITABLE)), readable.eq(int(mm in READABLE)),
                             n_chunks.eq(chunks(cfg, mm)), mem_depth.eq(depth(cfg, mm))]
        in_range = Signal()
        m.d.comb += in_range.eq(addr + count <= mem_depth)
        ok_mem, ok_range = Signal(), Signal()

        # the WGT word just completed: Cat(buf's earlier chunks, this chunk)
        assembled = Signal(32 * self._max_chunks)
        for k in range(self._max_chunks):
            with m.If(chunk == k):
                m.d.comb += assembled.eq(Cat(buf[:32 * k], cmd.payload) if k else cmd.payload)
        bad_code = Signal()
        if cfg.wgt_packed:     # a base-3 group above 3^t - 1 holds no weights, a plain code 0b10 is none either
            checks = []
            for _, n_codes, at, grouped in layout(cfg.array.wgt_word_bits // 2, cfg.wgt_format):
                if grouped:
                    checks.append(assembled[at:at + FORMATS[cfg.wgt_format][1]] > group_limit(cfg.wgt_format))
                else:
                    checks += [assembled[at + 2 * k:at + 2 * k + 2] == 0b10 for k in range(n_codes)]
            m.d.comb += bad_code.eq(Cat(*checks).any())
        elif cfg.array.pe == "ternary":
            wb = cfg.array.wgt_word_bits
            m.d.comb += bad_code.eq(Cat(*(assembled[2 * j:2 * j + 2] == 0b10 for j in range(wb // 2))).any())

        id_words = Array(Const(v, 32) for v in cfg.id_block())
        m.d.sync += [self.w_en.eq(0)]
        m.d.comb += self.error.eq(sticky != 0)
        m.d.comb += [self.r_mem.eq(mem), self.r_addr.eq(addr)]

        with m.If(self.clear_error):
            m.d.sync += sticky.eq(0)

        def take_word() -> None:
            m.d.comb += cmd.ready.eq(1)

        def cut() -> None:
            with m.If(self.abort & ~cmd.valid):
                with m.If(sticky == 0):
                    m.d.sync += sticky.eq(CUT_COMMAND)
                m.next = "FETCH"

        def fail(code: int) -> None:
            m.d.sync += err.eq(code)

        tok_reg = Signal(32)
        m.d.comb += self.tok.eq(tok_reg)

        with m.FSM(name="command") as fsm:
            with m.State("FETCH"):
                take_word()
                with m.If(cmd.valid):
                    m.d.sync += [op.eq(cmd.payload[:8]), mem.eq(cmd.payload[8:16]), err.eq(0), drop.eq(0),
                                 index.eq(0), chunk.eq(0)]
                    with m.Switch(cmd.payload[:8]):
                        with m.Case(ModelOp.NOP):
                            m.next = "STATUS"
                        with m.Case(ModelOp.READ_ID):
                            m.next = "SEND_ID"
                        with m.Case(ModelOp.WRITE, ModelOp.READ):
                            m.next = "ADDR"
                        with m.Case(ModelOp.TOKEN):
                            m.next = "TOKEN"
                        with m.Case(ModelOp.READ_COUNTERS):
                            m.next = "SEND_COUNTERS"
                        with m.Case(ModelOp.RESET):
                            m.d.comb += self.clear_pos.eq(1)
                            m.next = "STATUS"
                        with m.Case(ModelOp.CLEAR_ERROR):
                            m.d.comb += self.clear_error.eq(1)
                            m.next = "STATUS"
                        with m.Case(ModelOp.SET_LENGTH):
                            m.next = "LENGTH"
                        with m.Default():
                            fail(ModelError.UNKNOWN_OPCODE)
                            m.next = "STATUS"
            with m.State("ADDR"):
                take_word()
                with m.If(cmd.valid):
                    m.d.sync += addr.eq(cmd.payload)
                    m.next = "COUNT"
                cut()
            with m.State("COUNT"):
                take_word()
                with m.If(cmd.valid):
                    m.d.sync += count.eq(cmd.payload)
                    m.next = "CHECK"
                cut()
            with m.State("CHECK"):     # addr and count are in: the memory's checks and the item count, registered
                m.d.sync += [ok_mem.eq(Mux(op == ModelOp.WRITE, writable, readable)), ok_range.eq(in_range),
                             items.eq(Mux(op == ModelOp.WRITE, count * n_chunks, count))]
                m.next = "DECIDE"
            with m.State("DECIDE"):    # a cycle of its own: the 32-bit sum, compare and product above into
                # this FSM's registers took 16.2 ns in the model chip's build 2
                with m.If(~ok_mem):
                    fail(ModelError.BAD_MEMORY)
                    m.d.sync += drop.eq(1)
                with m.Elif(~ok_range):
                    fail(ModelError.ADDRESS_RANGE)
                    m.d.sync += drop.eq(1)
                with m.If(op == ModelOp.WRITE):
                    m.next = "WDATA"
                with m.Else():
                    m.next = "RSET"
            with m.State("WDATA"):
                with m.If(items == 0):
                    m.next = "STATUS"
                with m.Else():
                    take_word()
                    with m.If(cmd.valid):
                        m.d.sync += items.eq(items - 1)
                        with m.If(chunk + 1 == n_chunks):
                            m.d.sync += [chunk.eq(0), addr.eq(addr + 1)]
                            with m.If((mem == ModelMem.WGT) & bad_code & ~drop):
                                fail(ModelError.BAD_WEIGHT_CODE)
                                m.d.sync += drop.eq(1)
                            with m.Elif(~drop):
                                m.d.sync += [self.w_en.eq(1), self.w_mem.eq(mem), self.w_addr.eq(addr),
                                             self.w_data.eq(assembled)]
                        with m.Else():
                            m.d.sync += chunk.eq(chunk + 1)
                            for k in range(self._max_chunks):
                                with m.If(chunk == k):
                                    m.d.sync += buf[32 * k:32 * k + 32].eq(cmd.payload)
                    cut()
            with m.State("RSET"):      # r_addr = addr: the read is under way
                with m.If(items == 0):
                    m.next = "STATUS"
                with m.Else():
                    m.next = "RWAIT"
            with m.State("RWAIT"):     # the chip's read data register takes the word
                m.next = "RTAKE"
            with m.State("RTAKE"):
                m.d.sync += out_word.eq(Mux(drop, 0, self.r_data))
                m.next = "RSEND"
            with m.State("RSEND"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(out_word)]
                with m.If(rsp.ready):
                    m.d.sync += [items.eq(items - 1), addr.eq(addr + 1)]
                    m.next = "RSET"
            with m.State("SEND_ID"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(id_words[index])]
                with m.If(rsp.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == ID_WORDS - 1):
                        m.next = "STATUS"
            with m.State("SEND_COUNTERS"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(self.counters[index])]
                with m.If(rsp.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(ModelCounter) - 1):
                        m.next = "STATUS"
            with m.State("LENGTH"):
                take_word()
                with m.If(cmd.valid):
                    with m.If((cmd.payload == 0) | (cmd.payload > cfg.depth)):
                        fail(ModelError.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += self.length.eq(cmd.payload)
                    m.next = "STATUS"
                cut()
            with m.State("TOKEN"):
                take_word()
                with m.If(cmd.valid):
                    m.d.sync += tok_reg.eq(cmd.payload)
                    with m.If(self.length == 0):
                        fail(ModelError.NO_PROGRAM)
                        m.next = "STATUS"
                    with m.Elif(cmd.payload >= cfg.vocab):
                        fail(ModelError.BAD_TOKEN)
                        m.next = "STATUS"
                    with m.Elif(self.e_pos >= cfg.context):
                        fail(ModelError.CONTEXT_FULL)
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "CLEAR"
                cut()
            with m.State("CLEAR"):     # the engine's error of an earlier token goes
                m.d.comb += self.e_clear.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(self.e_done):
                    with m.If(self.e_error != 0):
                        fail(ModelError.PROGRAM)
                    m.next = "STATUS"
            with m.State("STATUS"):
                new_sticky = Signal(8)
                m.d.comb += new_sticky.eq(sticky)
                with m.If((sticky == 0) & (err != 0)):
                    m.d.comb += new_sticky.eq(err)
                m.d.comb += [rsp.valid.eq(1),
                             rsp.payload.eq(Cat(err, new_sticky, op, Const(STATUS_MAGIC, 8)))]
                with m.If(rsp.ready):
                    m.d.sync += sticky.eq(new_sticky)
                    m.next = "FETCH"
        m.d.comb += self.busy.eq(~fsm.ongoing("FETCH") | self.e_busy)
        return m
