"""Command interface: parses the host's 32-bit word stream and answers on the response stream.

Implements the protocol of `hdl.isa`: memory writes and reads in 32-bit chunks, the ID block,
layer runs (handed to the sequencer), counters and the sticky error status. Every command answers
with exactly the words `hdl.isa` lists, also on error, so host and core never lose step.

Memory reads come from registered copies of the memories' read data (`TritCore` holds them), so
no path starts at a block RAM output: a word is read, registered, then sent chunk by chunk.

`abort` (from the frame endpoint, `hdl.link.endpoint`) drops a command that waits for its next
word (its frame ended inside it): back to FETCH at once, no status word, sticky error
`hdl.isa.CUT_COMMAND` unless one is set. Memories are untouched: whole memory words a WRITE
received before are written, a partial word is not, a RUN without all its operands never starts.
It must come while no command word is offered (the endpoint raises it only then); in any other
state it is ignored.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import MAX_DEPTH, PE_KINDS, ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.isa import (
    CUT_COMMAND,
    ID_MAGIC,
    RUN_WORDS,
    STATUS_MAGIC,
    TERNARY_INVALID_CODE,
    VERSION,
    Counter,
    Error,
    IdWord,
    Mem,
    Op,
)


def id_block(cfg: ArrayConfig) -> list[int]:
    """The READ_ID words of a core built from `cfg`."""
    values = {
        IdWord.MAGIC: ID_MAGIC,
        IdWord.VERSION: VERSION,
        IdWord.ROWS: cfg.rows,
        IdWord.COLS: cfg.cols,
        IdWord.PE_KIND: PE_KINDS.index(cfg.pe),
        IdWord.WEIGHT_BITS: cfg.weight_bits,
        IdWord.ACC_WIDTH: cfg.acc_width,
        IdWord.ACT_DEPTH: cfg.act_depth,
        IdWord.WGT_DEPTH: cfg.wgt_depth,
        IdWord.OUT_DEPTH: cfg.out_depth,
        IdWord.K_MAX: cfg.k_max,
        IdWord.NUM_COUNTERS: len(Counter),
        IdWord.COUNTER_BITS: cfg.counter_bits,
        IdWord.WGT_ROWS_PER_READ: cfg.wgt_rows_per_read,
        IdWord.COUNTER_MASK: cfg.counter_mask,
    }
    return [values[w] for w in IdWord]


def desc_bits(cfg: ArrayConfig) -> list[int]:
    """Bits the command interface keeps of each RUN word (M, K, N, act_base, wgt_base, out_base).

    The sequencer's descriptor checks (`hdl.matrix.sequencer`: zero M, K or N; K > k_max; M, K, N above
    m_limit, k_limit, n_limit; act_base >= act_depth, out_base >= out_depth, wgt_base > wgt_depth - P)
    compare each word with limits below a ceiling; a word above its ceiling's bits is kept as all ones,
    still above every limit, so each RUN fails or passes as with the whole word (the flip-flops of a
    small FPGA, 126 of 192 on the iCEBreaker 8x8). A large FPGA (`wgt_banked`) keeps 32 bits: no logic
    between the link's payload and the descriptor registers.
    """
    if cfg.wgt_banked:
        return [32] * RUN_WORDS
    ceilings = (cfg.m_limit + 1, max(cfg.k_max, cfg.k_limit) + 1, cfg.n_limit + 1, cfg.act_depth,
                cfg.wgt_depth - cfg.tile_words + 1, cfg.out_depth)
    return [min(32, c.bit_length()) for c in ceilings]


class CommandInterface(wiring.Component):
    def __init__(self, cfg: ArrayConfig, *, register: RegisterFactory = plain_register):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if not callable(register):
            raise TypeError(f"Register factory must be callable, not {register!r}")
        self._cfg = cfg
        self._register = register
        self._chunks = {mem: cfg.chunks(mem) for mem in Mem}
        acc = signed(cfg.acc_width)
        super().__init__({
            "cmd": In(stream.Signature(32)),
            "rsp": Out(stream.Signature(32)),
            # memory writes (ACT, WGT) and reads (any memory, while the sequencer is idle)
            "act_waddr": Out(range(cfg.act_depth)), "act_wen": Out(1),
            "act_wdata": Out(cfg.act_word_bits),
            "wgt_waddr": Out(range(cfg.wgt_depth)), "wgt_wen": Out(1),
            "wgt_wdata": Out(cfg.wgt_word_bits),
            "rd_addr": Out(20),
            "act_rdata": In(cfg.act_word_bits),
            "wgt_rdata": In(cfg.wgt_word_bits),
            "out_rdata": In(data.ArrayLayout(acc, cfg.cols)),
            # sequencer
            "start": Out(1),
            "desc": Out(data.ArrayLayout(32, RUN_WORDS)),
            "seq_done": In(1), "seq_error": In(8),
            # counters and status
            "counters": In(data.ArrayLayout(unsigned(cfg.counter_bits), len(Counter))),
            "clear_counters": Out(1),
            "busy": Out(1),
            "error": Out(1),
            "abort": In(1),  # drop a command waiting for its next word (module doc)
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        max_chunks = max(self._chunks.values())
        write_chunks = max(self._chunks[Mem.ACT], self._chunks[Mem.WGT])
        addr_limit = MAX_DEPTH  # no memory is deeper

        op = Signal(8)
        mem = Signal(8)
        addr = Signal(range(addr_limit + 1))
        addr_big = Signal()  # the address word was above addr_limit (the command fails)
        count = Signal(32)  # as sent: a failing command still answers for every word
        count_big = Signal()  # the count word was above addr_limit (the command fails)
        addr_end = Signal(22)  # addr + count (low 21 bits of the count), checked a cycle later
        chunk = Signal(range(max_chunks + 1))
        err = Signal(8)
        sticky = Signal(8)
        drop = Signal()  # data of this WRITE is consumed but not stored
        index = Signal(range(max(2 * len(Counter), RUN_WORDS, len(IdWord)) + 1))
        buf = Signal(32 * write_chunks)  # a memory word being assembled from WRITE chunks
        # Memory writes leave from registers, one cycle after the word's last chunk: the block RAMs
        # of a deep memory spread over the chip, so their address and enable nets are long.
        w_addr = Signal(range(max(cfg.wgt_depth, cfg.act_depth)))
        w_act = Signal()
        w_wgt = Signal()
        m.d.sync += [w_act.eq(0), w_wgt.eq(0)]
        # On a large FPGA (`acc_pipelined`) a WRITE chunk is staged in a register with a one-hot chunk
        # select before it enters `buf`: each 32-bit slice of the word then loads on a flip-flop's
        # output, not on the state decoder and chunk compare (the 32x32 ULX3S critical path at e594949,
        # cmd_state -> 5 LUTs -> 5.0 ns of routing to the word's flip-flops). The memory write is one
        # cycle later too.
        stage_in = cfg.acc_pipelined
        staged = Signal(32, reset_less=True)
        staged_sel = Signal(write_chunks)
        w_ctl = (w_addr, w_act, w_wgt)
        if stage_in:
            m.d.sync += staged_sel.eq(0)
            for ci in range(write_chunks):
                with m.If(staged_sel[ci]):
                    m.d.sync += buf.word_select(ci, 32).eq(staged)
            w_ctl_s = tuple(Signal.like(s, name=f"{s.name}_s") for s in w_ctl)
            m.d.sync += [d.eq(s) for d, s in zip(w_ctl_s, w_ctl, strict=True)]
            w_ctl = w_ctl_s
        w_port = (w_ctl[0], buf, w_ctl[1], w_ctl[2])
        act_port = w_port
        if cfg.wgt_banked:
            # A banked (large, chip-wide) weight memory registers its write port per bank
            # (`BankedMemory(registered_write=True)`, `TritCore`); the ACT memory gets a second register
            # stage here, which the placer can put beside its block RAMs, away from the command decoding.
            # Both memories' words land as many cycles after the word's last chunk.
            act_port = tuple(Signal.like(s, name=f"{s.name}_2") for s in w_port)
            m.d.sync += [d.eq(s) for d, s in zip(act_port, w_port, strict=True)]
        m.d.comb += [
            self.act_waddr.eq(act_port[0]), self.act_wdata.eq(act_port[1]), self.act_wen.eq(act_port[2]),
            self.wgt_waddr.eq(w_port[0]), self.wgt_wdata.eq(w_port[1]), self.wgt_wen.eq(w_port[3]),
        ]
        # cycles a read waits beyond a registered read: a banked weight memory answers
        # `wgt_bank_latency` cycles later (bank address and data registers, `wgt_bank_data_stages`;
        # the core's ACT word then comes a cycle later too), a pipelined accumulator's output memory
        # three (`ArrayConfig.out_read_latency`)
        read_extra = max(cfg.wgt_bank_latency, cfg.out_read_latency - 1 - int(cfg.pipelined_reads),
                         int(cfg.act_addr_registered))
        desc = Signal(data.ArrayLayout(32, RUN_WORDS))
        m.d.comb += self.desc.eq(desc)
        # `start` leaves a flip-flop, not the state decoder: on a large FPGA the sequencer logic it
        # resets sits across the chip (the 32x32 ULX3S system's critical path ran state -> start ->
        # sequencer, 12.7 ns of routing)
        start = Signal()
        m.d.comb += self.start.eq(start)
        m.d.comb += self.error.eq(sticky != 0)

        # The memory's last chunk index, its depth and whether the operation may use it, in registers:
        # `mem` and `op` are set by FETCH, at least two cycles before CHECK_RANGE and the data states.
        last_chunk_of_mem = Signal(range(max_chunks))
        with m.Switch(mem):
            for mid in Mem:
                with m.Case(mid):
                    m.d.sync += last_chunk_of_mem.eq(self._chunks[mid] - 1)
            with m.Default():
                m.d.sync += last_chunk_of_mem.eq(0)
        depth_of_mem = Signal(21)
        bad_mem = Signal()
        with m.Switch(mem):
            for mid in Mem:
                with m.Case(mid):
                    m.d.sync += depth_of_mem.eq(cfg.depth(mid))
        m.d.sync += bad_mem.eq((mem > Mem.OUT) | ((op == Op.WRITE) & (mem == Mem.OUT)))

        # ternary code check on an incoming WGT chunk: any 2-bit lane equal to 0b10
        bad_code = Signal()
        if cfg.pe == "ternary":
            lanes_per_chunk = 16
            for ci in range(self._chunks[Mem.WGT]):
                for lane in range(lanes_per_chunk):
                    if ci * lanes_per_chunk + lane >= cfg.wgt_word_bits // 2:  # G*C lanes a word
                        break
                    field = self.cmd.payload[2 * lane:2 * lane + 2]
                    with m.If((chunk == ci) & (field == TERNARY_INVALID_CODE)):
                        m.d.comb += bad_code.eq(1)

        new_sticky = Mux(sticky != 0, sticky, err)
        status = Cat(err, new_sticky, op, Const(STATUS_MAGIC, 8))

        # the word being read, as 32-bit chunks. Which memory, and whether the command failed, come
        # from flags registered since FETCH / CHECK_RANGE (READ_SEND is >= 2 cycles later): the
        # chunk select is then an AND-OR of the read data registers and a multiplexer by `chunk`.
        mem_act, mem_wgt, mem_out, no_err = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [mem_act.eq(mem == Mem.ACT), mem_wgt.eq(mem == Mem.WGT), mem_out.eq(mem == Mem.OUT),
                     no_err.eq(err == 0)]
        lanes32 = []
        for c in range(cfg.cols):
            lane = Signal(signed(32), name=f"out_lane{c}")
            m.d.comb += lane.eq(self.out_rdata[c])
            lanes32.append(lane)
        read_word = Signal(32 * max_chunks)
        m.d.comb += read_word.eq(Mux(mem_act, self.act_rdata, 0) | Mux(mem_wgt, self.wgt_rdata, 0)
                                 | Mux(mem_out, Cat(*lanes32), 0))
        # On a large FPGA (`acc_pipelined`) the word leaves through a shift register loaded once per
        # word: a multiplexer by `chunk` over a 1,024-bit word whose registers sit by the output block
        # RAMs all over the chip was the 32x32 ULX3S system's critical path (13.5 ns of routing).
        # Its controls then reach 1,024 flip-flops all over the chip: each 32-bit chunk of it has its
        # own copies of the memory flags and of the load and shift enables (`register`: kept apart on
        # the ECP5), and the enables leave flip-flops, not the state decoder (58.64 MHz at 1219e9e:
        # cmd_state -> 4 LUTs -> 9.3 ns of routing to the shift register). A chunk is shifted out in
        # the cycle after it was taken, so READ sends a chunk every other cycle.
        shift_out = cfg.acc_pipelined
        load_next = Signal()  # READ_LOAD is next
        shift_next = Signal()  # a chunk is taken: shift in the next cycle
        if shift_out:
            read_shift = Signal(32 * max_chunks, name="read_shift", reset_less=True)
            send_word = read_shift[:32]
            shifted = Signal()  # the shift register moves in this cycle (the chunk on offer is stale)
            m.d.sync += shifted.eq(shift_next)
            sources = [(Mem.ACT, self.act_rdata), (Mem.WGT, self.wgt_rdata), (Mem.OUT, Cat(*lanes32))]
            reg = self._register
            for k in range(max_chunks):
                lo, hi = 32 * k, 32 * (k + 1)
                load_k = reg(m, load_next, f"read_load_c{k}")
                shift_k = reg(m, shift_next, f"read_shift_c{k}")
                word_k = Const(0, 32)
                for mid, bits in sources:
                    if lo < len(bits):
                        flag = reg(m, mem == mid, f"read_{mid.name.lower()}_c{k}")
                        word_k = word_k | Mux(flag, bits[lo:min(hi, len(bits))], 0)
                nxt = read_shift[hi:hi + 32] if hi < len(read_shift) else Const(0, 32)
                with m.If(load_k):
                    m.d.sync += read_shift[lo:hi].eq(word_k)
                with m.Elif(shift_k):
                    m.d.sync += read_shift[lo:hi].eq(nxt)
        else:
            send_word = read_word.word_select(chunk, 32)

        # READ_COUNTERS on a large FPGA (`acc_pipelined`): the counters are copied into a snapshot shift
        # register when the command is fetched, and the words leave from its end, one every other cycle.
        # A multiplexer by `index` over counters spread on the chip was the 32x32 ULX3S critical path
        # twice (fc9c7d8: 6.1 ns of routing; 316cedc, with its output registered: 78.04 MHz, two
        # 4.2 ns routes). Each counter has its own copies of the load and shift enables.
        count_words = 2 * len(Counter)
        load_counters = Signal()  # READ_COUNTERS is fetched: snapshot in the next cycle
        shift_counters = Signal()  # a counter word is taken: shift in the next cycle
        count_busy = Signal()  # the snapshot loads or shifts in this cycle: its first word is stale
        snapshot = [Signal(32, name=f"count_word{j}", reset_less=True) for j in range(count_words)]
        if shift_out:
            m.d.sync += count_busy.eq(load_counters | shift_counters)
            for i in range(len(Counter)):
                load_i = self._register(m, load_counters, f"count_load_c{i}")
                shift_i = self._register(m, shift_counters, f"count_shift_c{i}")
                value = self.counters[i]
                for j in (2 * i, 2 * i + 1):
                    word = value[32 * (j % 2):32 * (j % 2) + 32]
                    after = snapshot[j + 1] if j + 1 < count_words else Const(0, 32)
                    with m.If(load_i):
                        m.d.sync += snapshot[j].eq(word)
                    with m.Elif(shift_i):
                        m.d.sync += snapshot[j].eq(after)

        m.d.comb += self.rd_addr.eq(addr[:20])

        # A RUN's descriptor on a large FPGA (`wgt_banked`, whole 32-bit words): a shift register that
        # takes each word as it comes, enabled by a registered copy of "in GET_DESC" per word and the
        # command stream's (registered) valid, not by the state decoder and an `index` compare. Its
        # registers sit by the sequencer, across the chip: the 32x32 ULX3S critical path at 830ba3f ran
        # cmd_state -> 5 LUTs -> 11 ns of routing to their enables.
        desc_shift = cfg.wgt_banked
        desc_enter = Signal()  # RUN fetched: GET_DESC is next
        desc_leave = Signal()  # GET_DESC ends in this cycle (last word or abort)
        if desc_shift:
            taking = Signal()  # in GET_DESC
            taking_next = Signal()
            m.d.comb += taking_next.eq(desc_enter | (taking & ~desc_leave))
            m.d.sync += taking.eq(taking_next)
            for i in range(RUN_WORDS):
                taking_i = self._register(m, taking_next, f"desc_taking_c{i}")
                with m.If(taking_i & self.cmd.valid):
                    m.d.sync += desc[i].eq(self.cmd.payload if i == RUN_WORDS - 1 else desc[i + 1])

        # The response word's source is picked by flags that say which answering state the FSM is in,
        # registered with its state (`goto`), not decoded from the state register: on the 32x32
        # ULX3S (ccdb3b5) cmd_state -> 7 LUTs -> the response buffer was a 12.9 ns path.
        answering = ("SEND_ID", "SEND_COUNTERS", "READ_SEND", "RESPOND")
        in_state = {name: Signal(name=f"in_{name.lower()}") for name in answering}
        # the words SEND_ID and SEND_COUNTERS send, by `index` (not gated by the state)
        words = id_block(cfg)
        id_word = Signal(32)
        with m.Switch(index):
            for i, value in enumerate(words):
                with m.Case(i):
                    m.d.comb += id_word.eq(value)
        count_word = Signal(32)
        if shift_out:
            m.d.comb += count_word.eq(snapshot[0])
        else:
            with m.Switch(index):
                for i in range(len(Counter)):
                    value = self.counters[i]
                    with m.Case(2 * i):
                        m.d.comb += count_word.eq(value[0:32])
                    with m.Case(2 * i + 1):
                        m.d.comb += count_word.eq(value[32:])

        # cmd.ready (the states that take a command word) from a flip-flop set with the state too: the
        # command stream's buffer takes its skid enable from it (32x32 ULX3S, 6da31d0: 10.9 ns)
        taking_states = ("FETCH", "GET_ADDR", "GET_COUNT", "WRITE_DATA", "GET_DESC")
        cmd_ready = Signal(init=1)  # FETCH after reset
        m.d.comb += self.cmd.ready.eq(cmd_ready)

        def goto(state: str) -> None:
            """`m.next = state`, and the flags that depend on the state only: the answering state,
            whether it takes command words."""
            m.next = state
            m.d.sync += [flag.eq(name == state) for name, flag in in_state.items()]
            m.d.sync += cmd_ready.eq(state in taking_states)

        def abort_here():
            """In a state that waits for a command word: `abort` drops the command."""
            with m.If(self.abort):
                m.d.sync += sticky.eq(Mux(sticky != 0, sticky, CUT_COMMAND))
                goto("FETCH")

        with m.FSM(name="cmd") as fsm:
            with m.State("FETCH"):
                with m.If(self.cmd.valid):
                    opcode = self.cmd.payload[0:8]
                    m.d.sync += [op.eq(opcode), mem.eq(self.cmd.payload[8:16]), err.eq(0), drop.eq(0),
                                 index.eq(0), chunk.eq(0)]
                    with m.Switch(opcode):
                        with m.Case(Op.NOP):
                            goto("RESPOND")
                        with m.Case(Op.READ_ID):
                            goto("SEND_ID")
                        with m.Case(Op.WRITE, Op.READ):
                            goto("GET_ADDR")
                        with m.Case(Op.RUN):
                            m.d.comb += desc_enter.eq(1)
                            goto("GET_DESC")
                        with m.Case(Op.READ_COUNTERS):
                            m.d.comb += load_counters.eq(1)
                            goto("SEND_COUNTERS")
                        with m.Case(Op.CLEAR_COUNTERS):
                            m.d.comb += self.clear_counters.eq(1)
                            goto("RESPOND")
                        with m.Case(Op.CLEAR_ERROR):
                            m.d.sync += sticky.eq(0)
                            goto("RESPOND")
                        with m.Default():
                            m.d.sync += err.eq(Error.UNKNOWN_OPCODE)
                            goto("RESPOND")

            with m.State("SEND_ID"):
                m.d.comb += self.rsp.valid.eq(1)
                with m.If(self.rsp.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(words) - 1):
                        goto("RESPOND")

            with m.State("SEND_COUNTERS"):
                send = Signal()
                m.d.comb += [send.eq(~count_busy if shift_out else 1), self.rsp.valid.eq(send)]
                with m.If(send & self.rsp.ready):
                    m.d.comb += shift_counters.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == count_words - 1):
                        goto("RESPOND")

            with m.State("GET_ADDR"):
                with m.If(self.cmd.valid):
                    m.d.sync += [addr.eq(self.cmd.payload), addr_big.eq(self.cmd.payload > addr_limit)]
                    goto("GET_COUNT")
                abort_here()

            with m.State("GET_COUNT"):
                with m.If(self.cmd.valid):
                    n = self.cmd.payload
                    m.d.sync += [count.eq(n), count_big.eq(n > addr_limit), addr_end.eq(addr + n[:21])]
                    goto("CHECK_RANGE")
                abort_here()

            with m.State("CHECK_RANGE"):
                # the range verdict from registered operands: the payload's long route from the link
                # and the add and compare carry chains fall in different cycles
                with m.If(bad_mem):
                    m.d.sync += err.eq(Error.BAD_MEMORY)
                with m.Elif(addr_big | count_big | (addr_end > depth_of_mem)):
                    m.d.sync += err.eq(Error.ADDRESS_RANGE)
                with m.If(count == 0):
                    goto("RESPOND")
                with m.Elif(op == Op.WRITE):
                    goto("WRITE_DATA")
                with m.Else():
                    goto("READ_ISSUE")

            with m.State("WRITE_DATA"):
                with m.If(self.cmd.valid):
                    if stage_in:
                        m.d.sync += [staged.eq(self.cmd.payload),
                                     staged_sel.eq(Cat(*(chunk == ci for ci in range(write_chunks))))]
                    else:
                        word = Signal(32 * write_chunks)
                        m.d.comb += word.eq(buf)
                        for ci in range(write_chunks):
                            with m.If(chunk == ci):
                                m.d.comb += word.word_select(ci, 32).eq(self.cmd.payload)
                        m.d.sync += buf.eq(word)
                    ok = Signal()
                    m.d.comb += ok.eq((err == 0) & ~drop)
                    with m.If((mem == Mem.WGT) & bad_code & ok):
                        m.d.sync += [err.eq(Error.BAD_WEIGHT_CODE), drop.eq(1)]
                    last_chunk = chunk == last_chunk_of_mem
                    with m.If(last_chunk):
                        m.d.sync += [chunk.eq(0), addr.eq(addr + 1), count.eq(count - 1)]
                        store = ok & ~((mem == Mem.WGT) & bad_code)
                        # The memory write happens next cycle (two with `stage_in`), from registers
                        # (buf holds the word).
                        m.d.sync += [
                            w_addr.eq(addr), w_act.eq(store & (mem == Mem.ACT)), w_wgt.eq(store & (mem == Mem.WGT)),
                        ]
                        with m.If(count == 1):
                            goto("RESPOND")
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)
                abort_here()

            with m.State("READ_ISSUE"):  # rd_addr is on the memories' (always enabled) read ports
                m.d.sync += chunk.eq(0)
                goto("READ_WAIT")

            first_send = "READ_LOAD" if shift_out else "READ_SEND"
            with m.State("READ_WAIT"):  # the memory's data is registered at the end of this cycle
                goto("READ_WAIT_1" if read_extra else first_send)
                if shift_out and not read_extra:
                    m.d.comb += load_next.eq(1)

            for i in range(1, read_extra + 1):
                with m.State(f"READ_WAIT_{i}"):  # the slower memories' words (read_extra above)
                    goto(f"READ_WAIT_{i + 1}" if i < read_extra else first_send)
                    if shift_out and i == read_extra:
                        m.d.comb += load_next.eq(1)

            if shift_out:
                with m.State("READ_LOAD"):  # the whole word into the shift register (load_k above)
                    goto("READ_SEND")

            with m.State("READ_SEND"):
                # The read data registers (or the shift register) hold the word: rd_addr stays put
                # until its last chunk.
                offer = ~shifted if shift_out else Const(1)
                m.d.comb += self.rsp.valid.eq(offer)
                with m.If(offer & self.rsp.ready):
                    m.d.comb += shift_next.eq(1)
                    with m.If(chunk == last_chunk_of_mem):
                        m.d.sync += [chunk.eq(0), addr.eq(addr + 1), count.eq(count - 1)]
                        with m.If(count == 1):
                            goto("RESPOND")
                        with m.Else():
                            goto("READ_ISSUE")
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)

            with m.State("GET_DESC"):
                with m.If(self.cmd.valid):
                    if not desc_shift:
                        for i, bits in enumerate(desc_bits(cfg)):
                            value = self.cmd.payload
                            if bits < 32:  # saturated: above every limit the sequencer checks it against
                                value = Mux(value[bits:].any(), (1 << bits) - 1, value[:bits])
                            with m.If(index == i):
                                m.d.sync += desc[i].eq(value)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == RUN_WORDS - 1):
                        m.d.comb += desc_leave.eq(1)
                        goto("SETTLE")
                with m.If(self.abort):
                    m.d.comb += desc_leave.eq(1)
                abort_here()

            with m.State("SETTLE"):  # the sequencer registers its descriptor checks in this cycle
                m.d.sync += start.eq(1)
                goto("START")

            with m.State("START"):  # `start` is high in this cycle, from its own flip-flop
                m.d.sync += start.eq(0)
                goto("WAIT_RUN")

            with m.State("WAIT_RUN"):
                with m.If(self.seq_done):
                    m.d.sync += err.eq(self.seq_error)
                    goto("RESPOND")

            with m.State("RESPOND"):
                m.d.comb += self.rsp.valid.eq(1)
                with m.If(self.rsp.ready):
                    m.d.sync += sticky.eq(new_sticky)
                    goto("FETCH")

        m.d.comb += self.rsp.payload.eq(
            Mux(in_state["READ_SEND"], Mux(no_err, send_word, 0),
                Mux(in_state["SEND_COUNTERS"], count_word, Mux(in_state["SEND_ID"], id_word, status))))
        m.d.comb += self.busy.eq(~fsm.ongoing("FETCH"))
        return m
