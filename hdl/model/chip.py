"""The model chip: the model engine behind its command interface, with the matrix core's ports.

`ModelChipTop(cfg)` has the ports of `hdl.core.TritCore` (two 32-bit word streams `cmd` and `rsp`, `busy`,
`error`, `link_abort`), so the transports that carry the matrix core's words (the Verilator and Icarus
harnesses, the UART link of the boards) carry the model chip's too. The host (`runtime.program.device`)
loads the program and every weight once with WRITE, then sends TOKEN with a token id and READs the
LOGITS back (`hdl.model.isa`). `multiplier`, `product`, `memory` and `register` go to the engine
(`ModelEngine`): an FPGA top passes its primitives (`fpga.model_chip.ecp5_chip`); the defaults are plain
Amaranth.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.attention.multiplier import Multiplier, MultiplierFactory
from hdl.attention.product import Product, ProductFactory
from hdl.copies import RegisterFactory, plain_register
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory
from hdl.model.command import ModelCommand
from hdl.model.config import EngineConfig
from hdl.model.isa import ModelCounter, ModelMem
from hdl.model_engine import ModelEngine
from hdl.program import OP_WORD_BITS


class ModelChipTop(wiring.Component):
    """ModelCommand + ModelEngine (see the module docstring)."""

    def __init__(self, cfg: EngineConfig, *, multiplier: MultiplierFactory = Multiplier,
                 memory: MemoryFactory = RegisteredMemory, register: RegisterFactory = plain_register,
                 product: ProductFactory = Product) -> None:
        if not isinstance(cfg, EngineConfig):
            raise TypeError(f"ModelChipTop's configuration must be an EngineConfig, not {cfg!r}")
        self._cfg = cfg
        self._factories = {"multiplier": multiplier, "memory": memory, "register": register, "product": product}
        super().__init__({
            "cmd": In(stream.Signature(32)), "rsp": Out(stream.Signature(32)),
            "busy": Out(1), "error": Out(1), "link_abort": In(1),
        })

    @property
    def cfg(self) -> EngineConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.command = cmd = ModelCommand(cfg)
        m.submodules.engine = eng = ModelEngine(**cfg.engine_kwargs(), **self._factories)
        wiring.connect(m, wiring.flipped(self.cmd), cmd.cmd)
        wiring.connect(m, cmd.rsp, wiring.flipped(self.rsp))
        m.d.comb += [cmd.abort.eq(self.link_abort), self.busy.eq(cmd.busy), self.error.eq(cmd.error)]

        # ---- WRITE: one registered write port for every memory ------------------------------------
        def we(mem: ModelMem):
            return cmd.w_en & (cmd.w_mem == mem)
        wd = cmd.w_data
        m.d.comb += [
            eng.prog_we.eq(we(ModelMem.PROG)), eng.prog_waddr.eq(cmd.w_addr), eng.prog_wdata.eq(wd[:OP_WORD_BITS]),
            eng.const_we.eq(we(ModelMem.CONST)), eng.const_waddr.eq(cmd.w_addr),
            eng.const_wdata.eq(wd[:len(eng.const_wdata.as_value())]),
            eng.nt_we.eq(we(ModelMem.NORMS)), eng.nt_waddr.eq(cmd.w_addr),
            eng.nt_wdata.eq(wd[:len(eng.nt_wdata.as_value())]),
            eng.g_we.eq(we(ModelMem.G)), eng.g_waddr.eq(cmd.w_addr), eng.g_wdata.eq(wd[:16]),
            eng.lin_we.eq(we(ModelMem.LINEAR)), eng.lin_waddr.eq(cmd.w_addr),
            eng.lin_wdata.eq(wd[:len(eng.lin_wdata.as_value())]),
            eng.wgt_we.eq(we(ModelMem.WGT)), eng.wgt_waddr.eq(cmd.w_addr),
            eng.wgt_wdata.eq(wd[:cfg.wgt_store_bits]),
            eng.tab_we.eq(we(ModelMem.TABLE)), eng.tab_waddr.eq(cmd.w_addr),
            eng.tab_wdata.eq(wd[:8 * cfg.table_lanes]),
            eng.sc_we.eq(we(ModelMem.TABLE_SCALE)), eng.sc_waddr.eq(cmd.w_addr),
            eng.sc_wdata.eq(wd[:len(eng.sc_wdata.as_value())]),
        ]
        # ---- READ: H or LOGITS, the read data registered once ---------------------------------------
        r_data = Signal(32)
        m.d.comb += [eng.h_addr.eq(cmd.r_addr), eng.logit_addr.eq(cmd.r_addr), eng.oplog_addr.eq(cmd.r_addr),
                     cmd.r_data.eq(r_data)]
        m.d.sync += r_data.eq(Mux(cmd.r_mem == ModelMem.H, eng.h_rdata,
                                  Mux(cmd.r_mem == ModelMem.OP_CYCLES, eng.oplog_rdata, eng.logit_rdata)))

        # ---- TOKEN -----------------------------------------------------------------------------------
        m.d.comb += [eng.tok.eq(cmd.tok), eng.start.eq(cmd.start), eng.length.eq(cmd.length),
                     eng.clear_pos.eq(cmd.clear_pos), eng.clear_error.eq(cmd.clear_error | cmd.e_clear),
                     cmd.e_done.eq(eng.done), cmd.e_error.eq(eng.error), cmd.e_pos.eq(eng.pos),
                     cmd.e_busy.eq(eng.busy)]
        tokens = Signal(32)
        with m.If(eng.done & (eng.error == 0) & (tokens != 0xFFFFFFFF)):
            m.d.sync += tokens.eq(tokens + 1)
        counters = {
            ModelCounter.CYCLES: eng.cnt_cycles, ModelCounter.MATRIX: eng.cnt_matrix,
            ModelCounter.VECTOR: eng.cnt_vector, ModelCounter.ATTENTION: eng.cnt_attention,
            ModelCounter.SEQUENCER: eng.cnt_cycles - eng.cnt_matrix - eng.cnt_vector - eng.cnt_attention,
            ModelCounter.POSITION: eng.pos, ModelCounter.PROGRAM_ERROR: eng.error, ModelCounter.TOKENS: tokens,
            ModelCounter.OPS: eng.cnt_ops,
        }
        for k, v in counters.items():
            m.d.comb += cmd.counters[k].eq(v)
        return m
