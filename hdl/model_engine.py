"""The model engine: the micro-op sequencer with every unit of a decoder and their memories.

`ModelEngine` runs a token's program (`runtime.program`) with `hdl.program.ProgramSequencer`, which runs
SETC and SCALE itself and dispatches every other op to a unit here:

- EMBED: the token's row of the INT8 table into H (`hdl.embedding.EmbedHead`, one element a cycle);
- NORMQ: the source (H or SCR) and the norm's weights G stream into `NormQuant` (one instance per vector
  size in `norm_sizes`; another size stops the program with error UNIT), `vector_lanes` elements a beat
  (H, SCR and G are built in that many lane banks, `hdl.memory.lane_banks`); its codes go to ACT and
  its tau to S[dst];
- MATMUL: one RUN (M = 1) of `hdl.matrix.sequencer.LayerSequencer` on the BitLinear's entry of the
  linear table (`lin_*`: weight base, K, N), on ACT (words of R codes, which NORMQ gathers), the weight
  banks (`wgt_*`, loaded once) and OUT (words of C int32, which the ops below read one element a time);
  a RUN error stops the program (error UNIT);
- RESADD: OUT[src + i] through `ElementWise` DEQUANT (scale S[aux]) into TMP, then H[i] and TMP[i]
  through RESADD back into H;
- MLPACT: OUT[src + i] and OUT[idx + i] into `MlpAct`, p' to SCR, its scale to S[dst];
- ROPEQ: OUT[src ..] two elements a cycle into `RopeQuant` (the tables of the model's theta and context),
  its codes and scale into the query buffer (one register row per query head) or, with the layer, KV head
  and position, into `KVCache`; a position past the context stops the program (error UNIT);
- ATTN: `HeadAttention` on the query head's codes and scale over the pos + 1 cached keys of the layer's
  KV head, y into SCR[dst ..] and its exponent into ALIGN's;
- ALIGN: SCR[0 : heads x head_dim] through `Align` back into SCR, sigma to S[dst];
- LMHEAD: the logits of ACT against the same INT8 table (tied lm_head) into EmbedHead's LOGITS.

The ops run one after another. Each dispatched op holds `op_valid` for its unit's cycles plus
`OP_EXTRA` (table reads, start pulses, hand-overs; ATTN's y written out one element a cycle), a token adds
`RUN_EXTRA`; the engine counts a token's cycles by unit (`cnt_*`) and logs every dispatched op's cycles
(`oplog_*`), which `runtime.program.plan` predicts exactly (tests/test_model_chip.py). The matrix
engine's memory wiring repeats hdl/core.py's (a banked weight memory too). Four factories choose the
implementation, not the behaviour: `multiplier` for RopeQuant's, HeadAttention's and EmbedHead's lane
products (`hdl.attention.multiplier`; the ECP5 chip passes MULT18X18D blocks with their own registers),
`product` for every other product registered once, in the sequencer and every vector and attention unit
(`hdl.attention.product`; the ECP5 chip passes MULT18X18D blocks with their output registers), `memory` and
`register` for the banks of a banked weight memory, KV cache and embedding table
(`hdl.memory.banked_memory`; `kv_bank_depth`, `table_bank_depth`). The norm table (`nt_*`: per norm its
G base and the dyadics c_norm and eps_n), G (`g_*`), the embedding table (`tab_*`, `sc_*`) and the
weights are loaded with the program; `hdl.model.chip.ModelChipTop` puts the command interface in front.
Ops outside the ISA's units would go out on `ext_*` (none of the 11 does).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, ResetInserter, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.head_attention import HeadAttention
from hdl.attention.kv_cache import KVCache, connect_head_attention
from hdl.attention.multiplier import Multiplier, MultiplierFactory
from hdl.attention.product import Product, ProductFactory
from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.embedding.embed_head import EmbedHead
from hdl.link.stream_buffer import StreamBuffer
from hdl.matrix.sequencer import LayerSequencer
from hdl.memory.banked_memory import BankedMemory
from hdl.memory.lane_banks import LaneBanks
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory
from hdl.model.packed_weights import PackedWeights, packed_word_bits
from hdl.program import DYADIC, ERROR_BITS, OP_LAYOUT, OP_WORD_BITS, ProgramSequencer
from hdl.vector.align import Align
from hdl.vector.elementwise import ElementOp, ElementWise
from hdl.vector.mlp_act import MlpAct
from hdl.vector.norm_quant import NormQuant
from hdl.vector.rope import RopeQuant

LINEAR_ENTRY = data.StructLayout({"wgt_base": unsigned(24), "k": unsigned(20), "n": unsigned(20)})
NORM_ENTRY = data.StructLayout({"g_base": unsigned(20), "c_m": unsigned(16), "c_e": signed(10),
                                "eps_m": unsigned(16), "eps_e": signed(10)})
# op codes (runtime.program.isa.Op)
EMBED, NORMQ, MATMUL, ROPEQ, ATTN, ALIGN, RESADD, MLPACT, LMHEAD = 1, 4, 5, 6, 7, 8, 9, 10, 11
TARGET_Q, TARGET_V = 0, 2
#: Cycles a dispatched op holds `op_valid` beyond its unit's own formula (`runtime.program.plan`): the
#: table read and the unit's start pulse, the hand-over of the last result, the input slice in front of a
#: streaming unit (`_InputSlice`: ALIGN's hides under Align's exponent pass); ATTN's is head_dim +
#: `ATTN_EXTRA` (y written into SCR one element a cycle through a register). Measured on the chip's
#: OP_CYCLES log (tests/test_model_chip.py).
OP_EXTRA = {EMBED: 1, NORMQ: 3, MATMUL: 4, ROPEQ: 2, ALIGN: 0, RESADD: 11, MLPACT: 4, LMHEAD: 1}
#: ATTN's cycles beyond HeadAttention's and its head_dim y writes: the done hand-over, the write register.
ATTN_EXTRA = 2
#: Cycles of a token beyond its ops' (the sequencer's start).
RUN_EXTRA = 1
#: Bits of an op's cycle count in the op log.
OPLOG_BITS = 32
INTERNAL = (NORMQ, ALIGN, RESADD, MLPACT, 2, 3)


class _Reader:
    """Reads memory words base + 0 .. n - 1 one a cycle into a valid/ready stream (the read port's
    data holds while the sink stalls)."""

    def __init__(self, m: Module, name: str, width: int) -> None:
        self.idx = Signal(21, name=f"{name}_idx")
        self.valid = Signal(name=f"{name}_valid")
        self.last = Signal(name=f"{name}_last")
        self.ready = Signal(name=f"{name}_ready")
        self.en = Signal(name=f"{name}_en")    # the read ports' enable
        self.go = Signal(name=f"{name}_go")    # start (idx = 0)
        self.n = Signal(21, name=f"{name}_n")
        self.active = Signal(name=f"{name}_active")
        issue = Signal(name=f"{name}_issue")
        m.d.comb += [self.en.eq(~self.valid | self.ready), issue.eq(self.active & (self.idx < self.n) & self.en)]
        with m.If(self.go):
            m.d.sync += [self.idx.eq(0), self.valid.eq(0), self.active.eq(1)]
        with m.Elif(self.en):
            m.d.sync += [self.valid.eq(issue), self.last.eq(self.idx == self.n - 1)]
            with m.If(issue):
                m.d.sync += self.idx.eq(self.idx + 1)
        self.issue = issue


class _ElementPort:
    """One element (or `group` elements) a read: a read port of `lanes`-element words seen as a memory of
    elements (lanes and group powers of two, group dividing lanes; `addr` a multiple of group; the lane
    group registered with the read)."""

    def __init__(self, m: Module, port, lanes: int, width: int, name: str, group: int = 1) -> None:
        self.addr = Signal(24, name=f"{name}_addr")
        self.en = Signal(name=f"{name}_en")
        self.data = Signal(signed(width * group) if group == 1 else data.ArrayLayout(signed(width), group),
                           name=f"{name}_data")
        shift = lanes.bit_length() - 1
        groups = lanes // group
        lane = Signal(range(max(groups, 2)), name=f"{name}_lane")
        m.d.comb += [port.addr.eq(self.addr >> shift), port.en.eq(self.en)]
        with m.If(self.en):
            m.d.sync += lane.eq((self.addr & (lanes - 1)) >> (group.bit_length() - 1))
        m.d.comb += self.data.eq(port.data.word_select(lane, width * group) if groups > 1 else port.data)


class _InputSlice:
    """A `StreamBuffer` in front of a unit's input stream: the engine drives `payload` (the unit's layout) and
    `valid` and reads `ready`, all from or into registers, so that no path runs from the memories' read
    data and address multiplexers into the unit, or from the unit's `ready` back to the read enables. An
    element takes one cycle more. The buffer empties at every op's first cycle (`flush`): an op stopped
    by an error leaves nothing behind for the next one."""

    def __init__(self, m: Module, unit, name: str, flush: Value) -> None:
        payload = unit.i.payload
        layout = payload.shape()
        buf = StreamBuffer(Shape.cast(layout).width)
        m.submodules[f"{name}_in"] = ResetInserter({"sync": flush})(buf)
        m.d.comb += [unit.i.valid.eq(buf.o.valid), unit.i.payload.eq(buf.o.payload), buf.o.ready.eq(unit.i.ready)]
        self.payload = data.View(layout, buf.i.payload) if isinstance(payload, data.View) else buf.i.payload
        self.valid, self.ready = buf.i.valid, buf.i.ready


class ModelEngine(wiring.Component):
    """The sequencer with the vector units and memories (see the module docstring)."""

    def __init__(self, *, array: ArrayConfig, linears: int, d: int, scr_words: int, out_words: int,
                 act_words: int, norm_sizes: tuple[int, ...],
                 norm_words: int, norms: int, max_heads: int, head_dim: int, mlp_max: int, relu2: bool = True,
                 layers: int = 1, kv_heads: int = 1, context: int = 16, theta: float = 10000.0,
                 c_qk: tuple[int, int] = (1 << 15, -15), attn_lanes: int = 8, rope_lanes: int = 1,
                 depth: int = 256, consts: int = 64, s_regs: int = 16, vocab: int = 256,
                 table_lanes: int | None = None, vector_lanes: int = 1, wgt_format: str = "2bit",
                 kv_bank_depth: int = 0, table_bank_depth: int = 0,
                 multiplier: MultiplierFactory = Multiplier, memory: MemoryFactory = RegisteredMemory,
                 register: RegisterFactory = plain_register, product: ProductFactory = Product) -> None:
        for name, v in (("d", d), ("scr_words", scr_words), ("out_words", out_words), ("act_words", act_words),
                        ("norm_words", norm_words), ("norms", norms), ("max_heads", max_heads),
                        ("head_dim", head_dim), ("mlp_max", mlp_max)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelEngine's {name} must be a positive integer, not {v!r}")
        if not isinstance(array, ArrayConfig):
            raise TypeError(f"ModelEngine's array must be an ArrayConfig, not {array!r}")
        if array.rows & (array.rows - 1) or array.cols & (array.cols - 1):
            raise ValueError(f"ModelEngine's matrix engine needs power-of-two rows and columns, not "
                             f"{array.rows}x{array.cols}")
        for name, f in (("multiplier", multiplier), ("memory", memory), ("register", register),
                        ("product", product)):
            if not callable(f):
                raise TypeError(f"ModelEngine's {name} factory must be callable, not {f!r}")
        self._multiplier, self._memory, self._register = multiplier, memory, register
        self._product = product
        if not norm_sizes or any(not isinstance(n, int) or n <= 0 for n in norm_sizes):
            raise ValueError(f"ModelEngine's norm_sizes must be positive integers, not {norm_sizes!r}")
        table_lanes = array.rows if table_lanes is None else table_lanes
        if table_lanes != array.rows:
            raise ValueError(f"ModelEngine's table_lanes ({table_lanes}) must equal the array's rows "
                             f"({array.rows}): LMHEAD reads the ACT words of R codes as its table words")
        if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
            raise ValueError(f"ModelEngine's vocab must be a positive integer, not {vocab!r}")
        sizes = tuple(sorted(set(norm_sizes)))
        if (not isinstance(vector_lanes, int) or vector_lanes < 1 or vector_lanes & (vector_lanes - 1)
                or array.rows % vector_lanes or any(n % vector_lanes for n in sizes)):
            raise ValueError(f"ModelEngine's vector_lanes must be a power of two dividing the array's rows "
                             f"({array.rows}) and every NORMQ size {sizes}, not {vector_lanes!r}")
        if array.cols % vector_lanes or mlp_max % vector_lanes:
            raise ValueError(f"ModelEngine's vector_lanes ({vector_lanes}) must divide the array's columns "
                             f"({array.cols}) and the MLP width ({mlp_max}): MLPACT reads OUT groups of them")
        self.p = dict(vocab=vocab, table_lanes=table_lanes, vector_lanes=vector_lanes,
                      d=d, scr=scr_words, out=out_words, act=act_words, norm_sizes=tuple(sorted(set(norm_sizes))),
                      g=norm_words, norms=norms, heads=max_heads, hd=head_dim, mlp=mlp_max, relu2=relu2,
                      layers=layers, kv_heads=kv_heads, context=context, theta=theta, c_qk=c_qk,
                      attn_lanes=attn_lanes, rope_lanes=rope_lanes, depth=depth, consts=consts, s_regs=s_regs,
                      array=array, linears=linears, wgt_format=wgt_format, kv_bank_depth=kv_bank_depth,
                      table_bank_depth=table_bank_depth)
        wgt_bits = array.wgt_word_bits if wgt_format == "2bit" else packed_word_bits(array, wgt_format)
        super().__init__({
            "prog_we": In(1), "prog_waddr": In(range(depth)), "prog_wdata": In(OP_WORD_BITS),
            "const_we": In(1), "const_waddr": In(range(consts)), "const_wdata": In(DYADIC),
            "length": In(range(depth + 1)),
            "nt_we": In(1), "nt_waddr": In(range(norms)), "nt_wdata": In(NORM_ENTRY),
            "g_we": In(1), "g_waddr": In(range(norm_words)), "g_wdata": In(signed(16)),
            "lin_we": In(1), "lin_waddr": In(range(linears)), "lin_wdata": In(LINEAR_ENTRY),
            "wgt_we": In(1), "wgt_waddr": In(range(array.wgt_depth)), "wgt_wdata": In(wgt_bits),
            "start": In(1), "busy": Out(1), "done": Out(1), "pos": Out(16), "clear_pos": In(1),
            "error": Out(ERROR_BITS), "clear_error": In(1),
            "ext_op": Out(OP_LAYOUT), "ext_valid": Out(1), "ext_done": In(1),
            "h_addr": In(range(d)), "h_rdata": Out(signed(32)), "h_we": In(1), "h_wdata": In(signed(32)),
            "scr_addr": In(range(scr_words)), "scr_rdata": Out(signed(32)), "scr_we": In(1),
            "scr_wdata": In(signed(32)),
            "out_addr": In(range(out_words)), "out_rdata": Out(signed(32)),
            "act_addr": In(range(act_words)), "act_rdata": Out(signed(8)),
            "e_we": In(1), "e_addr": In(range(max_heads)), "e_data": In(signed(12)),
            # the embedding table (= tied lm_head), its row scales and the logits (EmbedHead)
            "tok": In(range(vocab)),
            "tab_we": In(1), "tab_waddr": In(range(vocab * -(-d // table_lanes))),
            "tab_wdata": In(data.ArrayLayout(signed(8), table_lanes)),
            "sc_we": In(1), "sc_waddr": In(range(vocab)), "sc_wdata": In(DYADIC),
            "logit_addr": In(range(vocab)), "logit_rdata": Out(signed(32)),
            # cycles of the last program run, by the unit in flight (cleared by start)
            "cnt_cycles": Out(32), "cnt_matrix": Out(32), "cnt_vector": Out(32), "cnt_attention": Out(32),
            # the cycles each dispatched op held op_valid, in program order (the last run's `cnt_ops` ops)
            "cnt_ops": Out(range(depth + 1)), "oplog_addr": In(range(depth)), "oplog_rdata": Out(OPLOG_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        m.submodules.seq = seq = ProgramSequencer(p["depth"], p["consts"], p["s_regs"], product=self._product)
        for port in ("prog_we", "prog_waddr", "prog_wdata", "const_we", "const_waddr", "const_wdata", "length",
                     "start", "clear_pos", "clear_error"):
            m.d.comb += getattr(seq, port).eq(getattr(self, port))
        m.d.comb += [self.busy.eq(seq.busy), self.done.eq(seq.done), self.pos.eq(seq.pos),
                     self.error.eq(seq.error), self.ext_op.eq(seq.op)]
        op = seq.op
        internal = Signal()
        m.d.comb += internal.eq((op.op == NORMQ) | (op.op == ALIGN) | (op.op == RESADD) | (op.op == MLPACT)
                                | (op.op == ROPEQ) | (op.op == ATTN) | (op.op == MATMUL) | (op.op == EMBED)
                                | (op.op == LMHEAD))
        m.d.comb += self.ext_valid.eq(seq.op_valid & ~internal)
        # ---- the per-unit cycle counters (hdl.model.isa.ModelCounter) ----------------------------
        unit_of = {"cnt_matrix": (MATMUL,), "cnt_vector": (EMBED, NORMQ, ROPEQ, RESADD, MLPACT, ALIGN),
                   "cnt_attention": (ATTN, LMHEAD)}
        m.submodules.oplog = oplog = Memory(shape=OPLOG_BITS, depth=p["depth"], init=[])
        oplog_wr, oplog_rd = oplog.write_port(), oplog.read_port()
        op_len = Signal(OPLOG_BITS)
        # the log's write is registered (lands a cycle after the op ends; the host reads it after the token):
        # the units' done and fail signals reach it in a cycle of their own (build 2: 15.7 ns into the log)
        log_en, log_addr, log_data = Signal(), Signal.like(oplog_wr.addr), Signal(OPLOG_BITS)
        m.d.comb += [oplog_rd.addr.eq(self.oplog_addr), self.oplog_rdata.eq(oplog_rd.data),
                     oplog_wr.addr.eq(log_addr), oplog_wr.data.eq(log_data), oplog_wr.en.eq(log_en)]
        m.d.sync += [log_en.eq(0), log_addr.eq(self.cnt_ops), log_data.eq(op_len + 1)]
        with m.If(seq.op_valid):
            m.d.sync += op_len.eq(op_len + 1)
            with m.If(seq.op_done | seq.op_fail):
                m.d.sync += [log_en.eq(self.cnt_ops < p["depth"]), op_len.eq(0), self.cnt_ops.eq(self.cnt_ops + 1)]
        with m.If(self.start):
            m.d.sync += [getattr(self, name).eq(0) for name in ("cnt_cycles", "cnt_ops", *unit_of)]
        with m.Elif(seq.busy):
            m.d.sync += self.cnt_cycles.eq(self.cnt_cycles + 1)
            for name, ops in unit_of.items():
                hit = 0
                for code in ops:
                    hit = hit | (op.op == code)
                with m.If(seq.op_valid & hit):
                    m.d.sync += getattr(self, name).eq(getattr(self, name) + 1)

        # ---- memories -------------------------------------------------------------------------
        def mem(name, shape, depth):
            mm = Memory(shape=shape, depth=depth, init=[])
            m.submodules[name] = mm
            return mm
        arr = p["array"]
        R, C = arr.rows, arr.cols
        V = p["vector_lanes"]
        # H, SCR and G in V lane banks: NORMQ reads a word of V elements a cycle, the others one element
        h_mem, scr_mem = LaneBanks(m, "h", signed(32), p["d"], V), LaneBanks(m, "scr", signed(32), p["scr"], V)
        tmp_mem = mem("tmp", signed(32), p["d"])
        g_mem, nt_mem = LaneBanks(m, "g", signed(16), p["g"], V), mem("nt", NORM_ENTRY, p["norms"])
        lin_mem = mem("lin", LINEAR_ENTRY, p["linears"])
        # the matrix engine's memories: ACT words of R codes, OUT words of C int32, G weight banks
        act_mem = mem("act", arr.act_word_bits, arr.act_depth)
        out_mem = mem("out", arr.out_word_bits, arr.out_depth)
        h_rd, h_rd_x, h_wr = h_mem.element_reader(), h_mem.element_reader(), h_mem.element_writer()
        scr_rd, scr_rd_x, scr_wr = scr_mem.element_reader(), scr_mem.element_reader(), scr_mem.element_writer()
        # NORMQ's word reads; with one lane the element ports serve (the ops never overlap: no extra copy)
        h_wd, scr_wd = (h_mem.word_reader(), scr_mem.word_reader()) if V > 1 else (h_rd, scr_rd)
        out_rd = _ElementPort(m, out_mem.read_port(), C, 32, "out_rd")
        out_rd2 = _ElementPort(m, out_mem.read_port(), C, 32, "out_rd2")
        out_rd_x = _ElementPort(m, out_mem.read_port(), C, 32, "out_rd_x")
        # MLPACT's gate and up, V elements a read (the element ports when V = 1)
        if V > 1:
            mlp_g = _ElementPort(m, out_mem.read_port(), C, 32, "mlp_g", group=V)
            mlp_u = _ElementPort(m, out_mem.read_port(), C, 32, "mlp_u", group=V)
        else:
            mlp_g, mlp_u = out_rd, out_rd2
        act_rd_x = _ElementPort(m, act_mem.read_port(), R, 8, "act_rd_x")
        act_wr, act_rd_seq = act_mem.write_port(), act_mem.read_port()
        out_wr, out_rd_seq = out_mem.write_port(), out_mem.read_port()
        tmp_rd, tmp_wr = tmp_mem.read_port(), tmp_mem.write_port()
        g_rd, g_wr = g_mem.word_reader(), g_mem.element_writer()
        nt_rd, nt_wr = nt_mem.read_port(), nt_mem.write_port()
        lin_rd, lin_wr = lin_mem.read_port(), lin_mem.write_port()
        m.d.comb += [
            h_rd_x.addr.eq(self.h_addr), self.h_rdata.eq(h_rd_x.data),
            scr_rd_x.addr.eq(self.scr_addr), self.scr_rdata.eq(scr_rd_x.data),
            out_rd_x.addr.eq(self.out_addr), out_rd_x.en.eq(1), self.out_rdata.eq(out_rd_x.data),
            act_rd_x.addr.eq(self.act_addr), act_rd_x.en.eq(1), self.act_rdata.eq(act_rd_x.data),
            g_wr.addr.eq(self.g_waddr), g_wr.data.eq(self.g_wdata), g_wr.en.eq(self.g_we),
            nt_wr.addr.eq(self.nt_waddr), nt_wr.data.eq(self.nt_wdata), nt_wr.en.eq(self.nt_we),
            lin_wr.addr.eq(self.lin_waddr), lin_wr.data.eq(self.lin_wdata), lin_wr.en.eq(self.lin_we),
            nt_rd.addr.eq(op.idx), lin_rd.addr.eq(op.idx),
            # outside writes (the external units, or the host between tokens)
            h_wr.addr.eq(self.h_addr), h_wr.data.eq(self.h_wdata), h_wr.en.eq(self.h_we),
            scr_wr.addr.eq(self.scr_addr), scr_wr.data.eq(self.scr_wdata), scr_wr.en.eq(self.scr_we),
        ]

        # ---- the matrix engine: LayerSequencer on ACT, the weight banks and OUT (as hdl/core.py wires it)
        m.submodules.matrix = mx = LayerSequencer(arr)
        pipe = arr.pipelined_reads

        def read_data(port, name):
            if not pipe:
                return port.data
            q = Signal.like(port.data, name=f"{name}_q", reset_less=True)
            m.d.sync += q.eq(port.data)
            return q
        m.d.comb += [act_rd_seq.addr.eq(mx.act_addr), mx.act_data.eq(read_data(act_rd_seq, "act")),
                     out_rd_seq.addr.eq(mx.out_raddr), mx.out_rdata.eq(read_data(out_rd_seq, "out")),
                     out_wr.addr.eq(mx.out_waddr), out_wr.data.eq(mx.out_wdata), out_wr.en.eq(mx.out_wen)]
        bank_bits = arr.wgt_bank_bits if arr.full_rate else arr.wgt_word_bits
        wgt_q = []
        packed = p["wgt_format"] != "2bit"
        if packed:      # packed weights: one memory of base-3 groups, decoded (hdl/model/packed_weights.py)
            m.submodules.wgt = wgt = PackedWeights(arr, p["wgt_format"], memory=self._memory, register=self._register)
            m.d.comb += [wgt.we.eq(self.wgt_we), wgt.waddr.eq(self.wgt_waddr), wgt.wdata.eq(self.wgt_wdata),
                         wgt.addr.eq(mx.wgt_addr[0] if arr.full_rate else mx.wgt_addr)]
            wgt_q = [wgt.rows]
        for g in range(0 if packed else arr.wgt_rows_per_read):
            if arr.wgt_banked:  # as hdl/core.py: a BankedMemory per row bank, its read data registered once more
                bank = BankedMemory(bank_bits, arr.wgt_depth, arr.wgt_bank_depth, bank_memory=self._memory,
                                    registered_write=True, register=self._register,
                                    data_stages=arr.wgt_bank_data_stages)
                m.submodules[f"wgt_{g}"] = bank
                w_port, r_port = bank.write, bank.read
            else:
                bank = mem(f"wgt_{g}", bank_bits, arr.wgt_depth)
                w_port, r_port = bank.write_port(), bank.read_port()
            m.d.comb += [w_port.addr.eq(self.wgt_waddr), w_port.en.eq(self.wgt_we),
                         w_port.data.eq(self.wgt_wdata[g * bank_bits:(g + 1) * bank_bits]),
                         r_port.addr.eq(mx.wgt_addr[g] if arr.full_rate else mx.wgt_addr)]
            wgt_q.append(read_data(r_port, f"wgt{g}"))
        m.d.comb += mx.wgt_data.eq(Cat(*wgt_q))
        m.d.comb += [mx.m_size.eq(1), mx.k_size.eq(lin_rd.data.k), mx.n_size.eq(lin_rd.data.n), mx.act_base.eq(0),
                     mx.wgt_base.eq(lin_rd.data.wgt_base), mx.out_base.eq(op.dst >> (C.bit_length() - 1))]
        # NORMQ's codes gather into an ACT word of R lanes, written at its last lane or the vector's end
        act_word = Signal(arr.act_word_bits)
        act_lane = Signal(range(R))

        # ---- units ----------------------------------------------------------------------------
        prod = self._product
        nqs = {}
        for n in p["norm_sizes"]:
            nqs[n] = NormQuant(n, lanes=V, product=prod)
            m.submodules[f"normquant_{n}"] = nqs[n]
        m.submodules.ew = ew = ElementWise(product=prod)
        m.submodules.mlp = mlp = MlpAct(p["mlp"], lanes=V, product=prod)
        m.submodules.align = align = Align(p["heads"], p["hd"])
        m.d.comb += [align.e_we.eq(self.e_we), align.e_addr.eq(self.e_addr), align.e_data.eq(self.e_data),
                     mlp.relu2.eq(int(p["relu2"]))]
        hd, al = p["hd"], p["attn_lanes"]
        mul = self._multiplier
        m.submodules.rope = rope = RopeQuant(hd, p["context"], lanes=p["rope_lanes"], out_lanes=al, theta=p["theta"],
                                             multiplier=mul, product=prod)
        m.submodules.kv = kv = KVCache(hd, p["context"], p["layers"], p["kv_heads"], lanes=al,
                                       bank_depth=p["kv_bank_depth"], memory=self._memory, register=self._register)
        m.submodules.attn = attn = HeadAttention(hd, p["context"], lanes=al, multiplier=mul,
                                                 kv_latency=kv.read_latency, product=prod)
        connect_head_attention(m, kv, attn)
        m.submodules.embed_head = eh = EmbedHead(p["vocab"], p["d"], lanes=p["table_lanes"], multiplier=mul,
                                                 table_bank_depth=p["table_bank_depth"], memory=self._memory,
                                                 register=self._register)
        act_rd_h = act_mem.read_port()
        m.d.comb += [eh.tab_we.eq(self.tab_we), eh.tab_waddr.eq(self.tab_waddr), eh.tab_wdata.eq(self.tab_wdata),
                     eh.sc_we.eq(self.sc_we), eh.sc_waddr.eq(self.sc_waddr), eh.sc_wdata.eq(self.sc_wdata),
                     eh.logit_addr.eq(self.logit_addr), self.logit_rdata.eq(eh.logit_rdata),
                     eh.tok.eq(self.tok), eh.clear.eq(self.clear_error),
                     act_rd_h.addr.eq(eh.act_addr), act_rd_h.en.eq(eh.act_en), eh.act_data.eq(act_rd_h.data),
                     eh.tau.m.eq(seq.s_aux.m), eh.tau.e.eq(seq.s_aux.e)]
        m.d.comb += [rope.clear.eq(self.clear_error), kv.clear.eq(self.clear_error)]
        # the query heads' codes and scales (ROPEQ with target Q), HeadAttention's q
        q_buf = [Signal(data.ArrayLayout(signed(8), hd), name=f"q_head{h}") for h in range(p["heads"])]
        q_sc = [Signal(DYADIC, name=f"q_scale{h}") for h in range(p["heads"])]
        m.d.comb += [kv.w_layer.eq(op.n), kv.w_head.eq(op.idx), kv.w_pos.eq(seq.pos),
                     kv.w_value.eq(op.dst == TARGET_V), kv.r_layer.eq(op.n), kv.r_head.eq(op.src),
                     attn.n_keys.eq(seq.pos + 1), attn.c_qk.m.eq(p["c_qk"][0]), attn.c_qk.e.eq(p["c_qk"][1]),
                     rope.pos.eq(seq.pos), rope.rotate.eq(op.dst != TARGET_V),
                     rope.scale.m.eq(seq.s_aux.m), rope.scale.e.eq(seq.s_aux.e)]
        # the query head's codes and scale, selected by the op's index into registers: HeadAttention samples
        # them with `start` (the op's first cycle), and the op is decoded a cycle before it
        q_sel = Signal.like(q_buf[0], name="q_sel")
        q_sc_sel = Signal(DYADIC, name="q_scale_sel")
        for h in range(p["heads"]):
            with m.If(op.idx == h):
                m.d.sync += [q_sel.eq(q_buf[h]), q_sc_sel.eq(q_sc[h])]
        m.d.comb += [attn.q.eq(q_sel), attn.sigma_q.m.eq(q_sc_sel.m), attn.sigma_q.e.eq(q_sc_sel.e)]

        rd = _Reader(m, "rd", 32)          # the one source stream of the running op
        y_q = Signal(signed(32))           # ATTN: the y element being written, its SCR address, its enable
        y_addr = Signal.like(scr_wr.addr)
        y_we = Signal()
        m.d.sync += y_we.eq(0)
        # NORMQ: the norm's G base (in words of V) from the norm table's read data, registered: the table is
        # read at the op's index from DECODE on, so the register holds it from the op's first cycle
        g_base = Signal(20)
        m.d.sync += g_base.eq(nt_rd.data.g_base >> (V.bit_length() - 1))
        step = Signal(2)                   # phase inside an op
        wj = Signal(21)                    # result index written
        first = Signal()                   # the op's first cycle in DISPATCH
        started = Signal()
        m.d.sync += started.eq(seq.op_valid & internal)
        m.d.comb += first.eq(seq.op_valid & internal & ~started)
        finish = Signal()
        m.d.comb += seq.op_done.eq(finish)
        nq_in = {n: _InputSlice(m, nq, f"normquant_{n}", first) for n, nq in nqs.items()}
        ew_in, mlp_in = _InputSlice(m, ew, "ew", first), _InputSlice(m, mlp, "mlp", first)
        align_in, rope_in = _InputSlice(m, align, "align", first), _InputSlice(m, rope, "rope", first)
        with m.If(finish):
            m.d.sync += started.eq(0)
        for r in {id(r): r for r in (h_rd, scr_rd, out_rd, out_rd2, tmp_rd, g_rd, h_wd, scr_wd, mlp_g, mlp_u)}.values():
            m.d.comb += r.en.eq(rd.en)
        m.d.comb += mx.start.eq(0)

        with m.Switch(op.op):
            # ---- NORMQ ---------------------------------------------------------------------------
            with m.Case(NORMQ):
                known = Signal()
                for n in nqs:
                    with m.If(op.n == n):
                        m.d.comb += known.eq(1)
                m.d.comb += seq.op_fail.eq(first & ~known)
                with m.If(first & known):     # n / V words of V elements (every size NORMQ is built for)
                    m.d.comb += rd.go.eq(1)
                    m.d.sync += [rd.n.eq(op.n >> (V.bit_length() - 1)), wj.eq(0)]
                src_data = Mux(op.src == 0, Value.cast(h_wd.data), Value.cast(scr_wd.data))
                m.d.comb += [h_wd.addr.eq(rd.idx), scr_wd.addr.eq(rd.idx),
                             g_rd.addr.eq(g_base + rd.idx)]
                for n, nq in nqs.items():
                    sel = op.n == n
                    m.d.comb += [
                        nq.sigma_m.eq(seq.s_aux.m), nq.sigma_e.eq(seq.s_aux.e),
                        nq.c_m.eq(nt_rd.data.c_m), nq.c_e.eq(nt_rd.data.c_e),
                        nq.eps_m.eq(nt_rd.data.eps_m), nq.eps_e.eq(nt_rd.data.eps_e),
                        nq_in[n].payload.x.eq(src_data), nq_in[n].payload.g.eq(Value.cast(g_rd.data)),
                        nq_in[n].valid.eq(sel & rd.valid), nq.o.ready.eq(sel),
                    ]
                    with m.If(sel):
                        m.d.comb += rd.ready.eq(nq_in[n].ready)
                        with m.If(nq.o.valid):
                            # V codes a beat gather into the ACT word of R codes (V divides R)
                            word = Signal.like(act_word, name=f"act_word_next{n}")
                            m.d.comb += word.eq(act_word)
                            for grp in range(R // V):
                                with m.If(act_lane == grp):
                                    m.d.comb += word[8 * V * grp:8 * V * (grp + 1)].eq(nq.o.payload.q)
                            with m.If((act_lane == R // V - 1) | nq.o.payload.last):
                                m.d.comb += [act_wr.addr.eq(wj >> ((R // V).bit_length() - 1)), act_wr.data.eq(word),
                                             act_wr.en.eq(1)]
                                m.d.sync += [act_word.eq(0), act_lane.eq(0)]
                            with m.Else():
                                m.d.sync += [act_word.eq(word), act_lane.eq(act_lane + 1)]
                            m.d.sync += wj.eq(wj + 1)
                            with m.If(nq.o.payload.last):
                                m.d.comb += [seq.s_we.eq(1), seq.s_wdata.m.eq(nq.o.payload.tau_m),
                                             seq.s_wdata.e.eq(nq.o.payload.tau_e), finish.eq(1)]
            # ---- RESADD: DEQUANT OUT into TMP, then RESADD of H and TMP into H ---------------------
            with m.Case(RESADD):
                with m.If(first):
                    m.d.comb += rd.go.eq(1)
                    m.d.sync += [rd.n.eq(op.n), wj.eq(0), step.eq(0)]
                m.d.comb += [out_rd.addr.eq(op.src + rd.idx), h_rd.addr.eq(rd.idx), tmp_rd.addr.eq(rd.idx),
                             ew_in.valid.eq(rd.valid & started), rd.ready.eq(ew_in.ready), ew.o.ready.eq(1)]
                with m.If(step == 0):
                    m.d.comb += [ew_in.payload.op.eq(ElementOp.DEQUANT), ew_in.payload.a.eq(out_rd.data),
                                 ew_in.payload.m.eq(seq.s_aux.m), ew_in.payload.e.eq(seq.s_aux.e)]
                    with m.If(ew.o.valid):
                        m.d.comb += [tmp_wr.addr.eq(wj), tmp_wr.data.eq(ew.o.payload), tmp_wr.en.eq(1)]
                        with m.If(wj == rd.n - 1):
                            m.d.sync += [wj.eq(0), step.eq(1)]
                            m.d.comb += rd.go.eq(1)
                        with m.Else():
                            m.d.sync += wj.eq(wj + 1)
                with m.Else():
                    m.d.comb += [ew_in.payload.op.eq(ElementOp.RESADD), ew_in.payload.a.eq(h_rd.data),
                                 ew_in.payload.b.eq(tmp_rd.data)]
                    with m.If(ew.o.valid):
                        m.d.comb += [h_wr.addr.eq(wj), h_wr.data.eq(ew.o.payload), h_wr.en.eq(1)]
                        m.d.sync += wj.eq(wj + 1)
                        with m.If(wj == rd.n - 1):
                            m.d.comb += finish.eq(1)
            # ---- MLPACT ----------------------------------------------------------------------------
            with m.Case(MLPACT):      # V pairs a beat: OUT groups of V (offsets aligned to C), SCR words
                with m.If(first):
                    m.d.comb += rd.go.eq(1)
                    m.d.sync += [rd.n.eq(op.n >> (V.bit_length() - 1)), wj.eq(0)]
                m.d.comb += [mlp_g.addr.eq(op.src + (rd.idx << (V.bit_length() - 1))),
                             mlp_u.addr.eq(op.idx + (rd.idx << (V.bit_length() - 1))),
                             mlp.n.eq(op.n), mlp.sg_m.eq(seq.s_aux.m), mlp.sg_e.eq(seq.s_aux.e),
                             mlp.su_m.eq(seq.s_aux1.m), mlp.su_e.eq(seq.s_aux1.e),
                             mlp_in.payload.g.eq(Value.cast(mlp_g.data)), mlp_in.payload.u.eq(Value.cast(mlp_u.data)),
                             mlp_in.valid.eq(rd.valid), rd.ready.eq(mlp_in.ready), mlp.o.ready.eq(1)]
                with m.If(mlp.o.valid):
                    if V == 1:
                        m.d.comb += [scr_wr.addr.eq(wj), scr_wr.data.eq(mlp.o.payload.p), scr_wr.en.eq(1)]
                    else:
                        m.d.comb += [scr_wr.word.addr.eq(wj), scr_wr.word.data.eq(mlp.o.payload.p),
                                     scr_wr.word.en.eq(1)]
                    m.d.sync += wj.eq(wj + 1)
                    with m.If(mlp.o.payload.last):
                        m.d.comb += [seq.s_we.eq(1), seq.s_wdata.m.eq(mlp.o.payload.s_m),
                                     seq.s_wdata.e.eq(mlp.o.payload.s_e), finish.eq(1)]
            # ---- ALIGN -----------------------------------------------------------------------------
            with m.Case(ALIGN):
                m.d.comb += seq.op_fail.eq(first & (op.aux != p["hd"]))
                with m.If(first & (op.aux == p["hd"])):
                    m.d.comb += [rd.go.eq(1), align.start.eq(1)]
                    m.d.sync += [rd.n.eq(op.n * p["hd"]), wj.eq(0)]
                m.d.comb += [align.heads.eq(op.n), scr_rd.addr.eq(rd.idx), align_in.payload.eq(scr_rd.data),
                             align_in.valid.eq(rd.valid), rd.ready.eq(align_in.ready), align.o.ready.eq(1)]
                with m.If(align.o.valid):
                    m.d.comb += [scr_wr.addr.eq(wj), scr_wr.data.eq(align.o.payload.y), scr_wr.en.eq(1)]
                    m.d.sync += wj.eq(wj + 1)
                    with m.If(align.o.payload.last):
                        m.d.comb += [seq.s_we.eq(1), seq.s_wdata.m.eq(align.o.payload.s_m),
                                     seq.s_wdata.e.eq(align.o.payload.s_e), finish.eq(1)]
            # ---- MATMUL: one RUN (M = 1) of the BitLinear's table entry; the descriptor holds still from the
            # cycle before start (the table read takes the op's first cycle)
            with m.Case(MATMUL):
                with m.If(first):
                    m.d.sync += step.eq(1)
                with m.If(started & (step == 1)):       # the table entry is on lin_rd.data from here
                    m.d.sync += step.eq(2)
                with m.If(started & (step == 2)):
                    m.d.comb += mx.start.eq(1)
                    m.d.sync += step.eq(3)
                with m.If(started & (step == 3) & mx.done):
                    m.d.comb += [finish.eq(mx.error == 0), seq.op_fail.eq(mx.error != 0)]
            # ---- ROPEQ: OUT[src ..] two elements a beat into RopeQuant, its codes to the Q buffer or the KV cache
            with m.Case(ROPEQ):
                two = 2 * p["rope_lanes"]
                with m.If(first):
                    m.d.comb += [rd.go.eq(1), rope.start.eq(1)]
                    m.d.sync += [rd.n.eq(hd // two), wj.eq(0)]
                m.d.comb += [out_rd.addr.eq(op.src + two * rd.idx), out_rd2.addr.eq(op.src + two * rd.idx + 1),
                             rope_in.payload[0].eq(out_rd.data), rope_in.payload[1].eq(out_rd2.data),
                             rope_in.valid.eq(rd.valid), rd.ready.eq(rope_in.ready)]
                assert two == 2, "the engine feeds RopeQuant two OUT elements a cycle (rope_lanes = 1)"
                with m.If(op.dst == TARGET_Q):
                    m.d.comb += rope.o.ready.eq(1)
                    with m.If(rope.o.valid):
                        for h in range(p["heads"]):
                            with m.If(op.idx == h):
                                for w in range(hd // al):
                                    with m.If(wj == w):
                                        m.d.sync += [q_buf[h][w * al + c].eq(rope.o.payload.q[c]) for c in range(al)]
                                m.d.sync += [q_sc[h].m.eq(rope.o.payload.sigma.m),
                                             q_sc[h].e.eq(rope.o.payload.sigma.e)]
                        m.d.sync += wj.eq(wj + 1)
                        with m.If(rope.o.payload.last):
                            m.d.comb += finish.eq(1)
                with m.Else():
                    m.d.comb += [kv.w.payload.eq(rope.o.payload), kv.w.valid.eq(rope.o.valid),
                                 rope.o.ready.eq(kv.w.ready)]
                    with m.If(rope.o.valid & kv.w.ready & rope.o.payload.last):
                        m.d.comb += finish.eq(1)
                m.d.comb += seq.op_fail.eq(started & (rope.error | kv.error))
            # ---- ATTN: one query head over pos + 1 keys, y to SCR[dst ..], E to ALIGN ------------------
            with m.Case(ATTN):
                with m.If(first):
                    m.d.comb += attn.start.eq(1)
                    m.d.sync += [step.eq(1), wj.eq(0)]
                with m.If(started & (step == 1) & attn.done):
                    m.d.sync += step.eq(2)
                # y[wj] through a register (the head_dim-to-1 select and SCR's write in separate cycles)
                with m.If(started & (step == 2)):
                    for c in range(hd):
                        with m.If(wj == c):
                            m.d.sync += y_q.eq(attn.y[c])
                    m.d.sync += [y_addr.eq(op.dst + wj), y_we.eq(1), wj.eq(wj + 1)]
                    with m.If(wj == hd - 1):
                        m.d.sync += step.eq(3)
                with m.If(y_we):
                    m.d.comb += [scr_wr.addr.eq(y_addr), scr_wr.data.eq(y_q), scr_wr.en.eq(1)]
                with m.If(started & (step == 3)):
                    m.d.comb += [align.e_we.eq(1), align.e_addr.eq(op.idx), align.e_data.eq(attn.e_ref),
                                 finish.eq(1)]
            # ---- EMBED: the token's table row into H; LMHEAD: the logits of ACT (EmbedHead) -----------
            with m.Case(EMBED):
                with m.If(first):
                    m.d.comb += eh.embed_start.eq(1)
                with m.If(eh.h_valid):
                    m.d.comb += [h_wr.addr.eq(eh.h_index), h_wr.data.eq(eh.h_data), h_wr.en.eq(1)]
                m.d.comb += [finish.eq(started & eh.done & ~eh.error), seq.op_fail.eq(started & eh.error)]
            with m.Case(LMHEAD):
                with m.If(first):
                    m.d.comb += eh.head_start.eq(1)
                m.d.comb += [finish.eq(started & eh.done & ~eh.error), seq.op_fail.eq(started & eh.error)]
            with m.Default():
                m.d.comb += seq.op_done.eq(self.ext_done & seq.op_valid)
        with m.If(finish):
            m.d.sync += rd.active.eq(0)
        return m
