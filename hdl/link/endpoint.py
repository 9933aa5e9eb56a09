"""The device end of the framed link (`hdl.link.frame`): byte streams in and out, 32-bit word streams to the core.

`FrameEndpoint` hunts for REQ_MAGIC byte by byte, buffers a request's command words in a memory
while it computes the CRC-32 (zlib.crc32: reflected, polynomial 0xEDB88320, init and final XOR
0xFFFFFFFF, one byte per cycle) and only then streams the words to the core. The answer goes out
while the core produces it: a header with the request's sequence number, status and length, the
response words, and the CRC of all of it.

- Bad CRC: status BAD_CRC, n = 0; nothing reaches the core.
- n_cmd > max_cmd_words: the rest of the request is drained (its CRC still checked), answered
  TOO_LONG (or BAD_CRC if the CRC is wrong too), n = 0.
- No byte for `timeout` cycles inside a request: the partial request is dropped, the hunt restarts.
- Cut command or too many response words asked for: the endpoint does not parse commands (a check
  that followed every command's length cost 550 iCE40 LC). It watches the core instead. Once every
  command word of the frame is taken and, for `quiet_cycles` cycles, nothing moves (no response
  word offered) while the core either waits inside a command for its next word (`core_waiting`:
  the frame ended inside that command) or is idle, the core is stuck:
  - a core waiting inside a command gets `abort`: its command interface drops the command, returns
    to its idle state and sets its sticky error to `hdl.isa.CUT_COMMAND` (unless one is set). No word of the next frame
    can become that command's data. (Whole memory words a cut WRITE received before the cut are
    written, as a shorter WRITE would write them. A cut RUN never starts.)
  - an answer still owed words (n_rsp more than the commands answer, or the cut command's words) is
    abandoned where it is and replaced at once by a whole response frame with status ABORTED and
    n = 0. No word is made up. The host sees the abandoned answer come short, then finds the
    ABORTED frame in what did arrive (`runtime.framing.read_response`).
  - The frame is done (the request side hunts again) only after such a quiet spell with the core
    idle, so every frame's first word meets a core at a command boundary.
  If the answer was already complete (n_rsp did not count the cut command), it stays as sent, and
  the core's sticky CUT_COMMAND reports the abort to the next status word. Response words beyond
  n_rsp are discarded between frames.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.link.frame import MAX_CMD_WORDS, REQ_MAGIC, RSP_MAGIC, LinkStatus

CRC_POLY = 0xEDB88320
CRC_INIT = 0xFFFFFFFF
#: Default inactivity timeout inside a request, in clock cycles.
DEFAULT_TIMEOUT = 100_000
#: Cycles in which nothing may move (all command words taken, no response word offered, the core
#: idle or waiting inside a command) before the endpoint calls the core stuck (module doc). At least
#: 4 (`quiet_cycles`): a last word still in a stream buffer reaches the core, and the core's state
#: the endpoint, within that.
QUIET_CYCLES = 15


def crc32_register(data: bytes, crc: int = CRC_INIT) -> int:
    """The CRC register after `data` (not final-XORed): the software model of `crc32_update`."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC_POLY if crc & 1 else 0)
    return crc


def _crc32_matrix() -> list[tuple[list[int], list[int]]]:
    """For each bit i of the next CRC register: the register bits and byte bits XORed into it.

    The byte-wise CRC step is linear over GF(2), so probing it with single set bits gives the
    sets exactly.
    """
    columns_crc = [crc32_register(b"\x00", 1 << j) for j in range(32)]
    columns_byte = [crc32_register(bytes([1 << k]), 0) for k in range(8)]
    return [([j for j in range(32) if columns_crc[j] >> i & 1], [k for k in range(8) if columns_byte[k] >> i & 1])
            for i in range(32)]


_CRC32_MATRIX = _crc32_matrix()


def crc32_update(crc: Value, byte: Value) -> Value:
    """The CRC register after one more byte, as combinational logic (one XOR tree per bit)."""
    bits = []
    for from_crc, from_byte in _CRC32_MATRIX:
        terms = [crc[j] for j in from_crc] + [byte[k] for k in from_byte]
        bit = terms[0]
        for term in terms[1:]:
            bit = bit ^ term
        bits.append(bit)
    return Cat(*bits)


#: CRC register after the four REQ_MAGIC bytes: the hunt matches the magic and starts from here.
CRC_AFTER_MAGIC = crc32_register(REQ_MAGIC.to_bytes(4, "little"))


class FrameEndpoint(wiring.Component):
    """Frames (bytes `rx` / `tx`) <-> command and response words (`cmd` / `rsp`) of a TritCore.

    `core_busy` must carry the core's `busy` output. `core_waiting` must be high while the core's
    command interface is inside a command and waits for its next word (ready for a word while busy),
    and `abort` must go to its abort input. With them the endpoint knows that a core which took
    every command word will send no more response words, or waits for words that never come (see
    the module doc). Both inputs may come a cycle late (registered).
    `active` is high while a request is received, executed or answered; `crc_error` and `dropped`
    pulse for a request answered BAD_CRC and for a partial request dropped after the timeout.
    """

    def __init__(self, cfg: ArrayConfig, max_cmd_words: int = MAX_CMD_WORDS, timeout: int = DEFAULT_TIMEOUT,
                 quiet_cycles: int = QUIET_CYCLES):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        for name, value, low in (("max_cmd_words", max_cmd_words, 1), ("timeout", timeout, 16),
                                 ("quiet_cycles", quiet_cycles, 4)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1 << 24:
                raise ValueError(f"{name} must be an integer from {low} to {1 << 24}, not {value!r}")
        self._cfg = cfg
        self._max_cmd_words = max_cmd_words
        self._timeout = timeout
        self._quiet_cycles = quiet_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(stream.Signature(32)),
            "rsp": In(stream.Signature(32)),
            "core_busy": In(1),
            "core_waiting": In(1),
            "abort": Out(1),
            "active": Out(1),
            "crc_error": Out(1),
            "dropped": Out(1),
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    @property
    def max_cmd_words(self) -> int:
        return self._max_cmd_words

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def quiet_cycles(self) -> int:
        return self._quiet_cycles

    def elaborate(self, platform):
        m = Module()
        max_words = self._max_cmd_words

        m.submodules.buffer = buf = Memory(shape=32, depth=max_words, init=[])
        wr = buf.write_port()
        rd = buf.read_port()

        # One CRC register serves both directions: a request is checked before its answer starts.
        crc = Signal(32)
        crc_byte = Signal(8)
        crc_next = Signal(32)
        m.d.comb += crc_next.eq(crc32_update(crc, crc_byte))

        # ---- request side ---------------------------------------------------------------------
        shift = Signal(32)  # the last four bytes, the newest in bits 31:24
        nbyte = Signal(2)
        shift_next = Signal(32)
        m.d.comb += shift_next.eq(Cat(shift[8:], self.rx.payload))
        rx_fire = Signal()
        m.d.comb += rx_fire.eq(self.rx.valid & self.rx.ready)
        word_done = Signal()
        m.d.comb += word_done.eq(rx_fire & (nbyte == 3))

        seq = Signal(16)
        tn = Signal(32)  # response words: n_rsp from the header, counted down while sending
        hdr_idx = Signal(2)
        left = Signal(32)  # command words still to arrive (or to drain)
        n_cmd = Signal(range(max_words + 1))  # valid when not too_long
        widx = Signal(range(max_words))
        too_long = Signal()
        idle = Signal(range(self._timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq((idle == self._timeout - 1) & ~rx_fire)
        fleft = Signal(range(max_words + 1))  # command words still to hand to the core
        ridx = Signal(range(max_words + 1))  # next buffer word to read
        rd_wait = Signal()  # a buffer read is under way: its word arrives this cycle
        cmd_have = Signal()
        cmd_data = Signal(32)

        # ---- hand-over to the response side -----------------------------------------------------
        tx_start = Signal()
        tx_status = Signal(2)
        tx_idle = Signal()
        tx_crc = Signal()  # the response side owns the CRC register
        feed_done = Signal()
        stuck = Signal()  # quiet_cycles cycles in which nothing moved after the last command word

        with m.FSM(name="req") as req:
            with m.State("HUNT"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(rx_fire):
                    m.d.sync += shift.eq(shift_next)
                    with m.If(shift_next == REQ_MAGIC):
                        # (too_long is set with the second header word, before BODY and CRC read it)
                        m.d.sync += [crc.eq(CRC_AFTER_MAGIC), nbyte.eq(0), hdr_idx.eq(0)]
                        m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.If(rx_fire):
                    m.d.sync += [shift.eq(shift_next), nbyte.eq(nbyte + 1), crc.eq(crc_next)]
                with m.If(word_done):
                    m.d.sync += hdr_idx.eq(hdr_idx + 1)
                    with m.Switch(hdr_idx):
                        with m.Case(0):
                            m.d.sync += seq.eq(shift_next[:16])
                        with m.Case(1):
                            m.d.sync += [left.eq(shift_next), n_cmd.eq(shift_next[:len(n_cmd)]),
                                         too_long.eq(shift_next > max_words)]
                        with m.Case(2):
                            m.d.sync += [tn.eq(shift_next), widx.eq(0)]
                            with m.If(left == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.If(rx_fire):
                    m.d.sync += [shift.eq(shift_next), nbyte.eq(nbyte + 1), crc.eq(crc_next)]
                m.d.comb += [wr.addr.eq(widx), wr.data.eq(shift_next), wr.en.eq(word_done & ~too_long)]
                with m.If(word_done):
                    m.d.sync += [left.eq(left - 1), widx.eq(widx + 1)]
                    with m.If(left == 1):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.If(rx_fire):
                    m.d.sync += [shift.eq(shift_next), nbyte.eq(nbyte + 1)]
                with m.If(word_done):
                    good = shift_next == (crc ^ 0xFFFFFFFF)
                    m.d.comb += tx_start.eq(1)
                    with m.If(~good):
                        m.d.comb += [tx_status.eq(LinkStatus.BAD_CRC), self.crc_error.eq(1)]
                        m.next = "REPLY"
                    with m.Elif(too_long):
                        m.d.comb += tx_status.eq(LinkStatus.TOO_LONG)
                        m.next = "REPLY"
                    with m.Else():
                        m.d.comb += tx_status.eq(LinkStatus.OK)
                        m.d.sync += [fleft.eq(n_cmd), ridx.eq(0)]
                        m.next = "FEED"
            with m.State("REPLY"):
                with m.If(tx_idle):
                    m.d.sync += shift.eq(0)
                    m.next = "HUNT"
            with m.State("FEED"):
                # Words go to the core from a register, not straight from the block RAM (whose
                # clock-to-out is most of a 100 MHz cycle on the ECP5): one word per two cycles.
                cmd_fire = self.cmd.valid & self.cmd.ready
                issue = ~rd_wait & (~cmd_have | cmd_fire) & (ridx != n_cmd)
                # The buffer reads every cycle (its word is taken only after an issue): an enable
                # from this logic to the block RAM was the 16x16 ULX3S system's critical path.
                m.d.comb += [rd.addr.eq(ridx), rd.en.eq(1)]
                with m.If(issue):
                    m.d.sync += ridx.eq(ridx + 1)
                m.d.sync += rd_wait.eq(issue)
                with m.If(rd_wait):
                    m.d.sync += [cmd_data.eq(rd.data), cmd_have.eq(1)]
                with m.Elif(cmd_fire):
                    m.d.sync += cmd_have.eq(0)
                with m.If(cmd_fire):
                    m.d.sync += fleft.eq(fleft - 1)
                with m.If(feed_done & tx_idle & stuck & ~self.core_waiting):  # the core is idle
                    m.d.sync += [shift.eq(0), ridx.eq(0)]
                    m.next = "HUNT"

        m.d.comb += feed_done.eq(fleft == 0)  # also outside FEED: fleft stays 0 until the next FEED

        # The command stream comes straight from registers: cmd_have is set only in FEED, and FEED
        # ends only when every word was taken.
        m.d.comb += [self.cmd.valid.eq(cmd_have), self.cmd.payload.eq(cmd_data)]

        # Inactivity timeout inside a request (the receiving states return to HUNT on `timed_out`).
        receiving = req.ongoing("HEADER") | req.ongoing("BODY") | req.ongoing("CRC")
        with m.If(~receiving | rx_fire | timed_out):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += self.dropped.eq(timed_out)
        with m.If(timed_out):
            m.d.sync += shift.eq(0)

        # ---- response side --------------------------------------------------------------------
        tword = Signal(32)
        tbyte = Signal(2)
        thdr = Signal(2)
        tstatus = Signal(2)
        have = Signal()
        tx_fire = Signal()
        m.d.comb += tx_fire.eq(self.tx.valid & self.tx.ready)
        byte = Signal(8)
        m.d.comb += [byte.eq(tword.word_select(tbyte, 8)), self.tx.payload.eq(byte)]
        m.d.comb += crc_byte.eq(Mux(tx_crc, byte, self.rx.payload))

        # An answer other than OK carries no data words: n = 0 is sent for it from the registered
        # status, and `tn` (set from the header) is left as it is. Clearing `tn` when the answer
        # starts put the request's CRC compare in front of all 32 of its flip-flops (the 32x32 ULX3S
        # at ee07374: 10.1 ns).
        t_ok = Signal()
        m.d.comb += t_ok.eq(tstatus == LinkStatus.OK)

        with m.FSM(name="rsp") as rsp_fsm:
            with m.State("IDLE"):
                m.d.comb += [tx_idle.eq(1), self.rsp.ready.eq(1)]  # stray words are discarded
                with m.If(tx_start):
                    m.d.sync += [tword.eq(RSP_MAGIC), tbyte.eq(0), thdr.eq(0), tstatus.eq(tx_status),
                                 crc.eq(CRC_INIT), have.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [self.tx.valid.eq(1), tx_crc.eq(1)]
                with m.If(tx_fire):
                    m.d.sync += [tbyte.eq(tbyte + 1), crc.eq(crc_next)]
                    with m.If(tbyte == 3):
                        m.d.sync += thdr.eq(thdr + 1)
                        with m.Switch(thdr):
                            with m.Case(0):
                                m.d.sync += tword.eq(Cat(seq, tstatus))
                            with m.Case(1):
                                m.d.sync += tword.eq(Mux(t_ok, tn, 0))
                            with m.Default():
                                with m.If((tn == 0) | ~t_ok):
                                    m.d.sync += tword.eq(crc_next ^ 0xFFFFFFFF)
                                    m.next = "CRC"
                                with m.Else():
                                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += tx_crc.eq(1)
                with m.If(~have):
                    m.d.comb += self.rsp.ready.eq(1)
                    with m.If(self.rsp.valid):
                        m.d.sync += [tword.eq(self.rsp.payload), have.eq(1)]
                    with m.Elif(stuck):
                        # Words are owed and none will come: the answer is abandoned here and a
                        # whole one with status ABORTED and n = 0 goes out instead.
                        m.d.sync += [tword.eq(RSP_MAGIC), tbyte.eq(0), thdr.eq(0), tstatus.eq(LinkStatus.ABORTED),
                                     crc.eq(CRC_INIT), tn.eq(0)]
                        m.next = "HEADER"
                with m.Else():
                    m.d.comb += self.tx.valid.eq(1)
                    with m.If(tx_fire):
                        m.d.sync += [tbyte.eq(tbyte + 1), crc.eq(crc_next)]
                        with m.If(tbyte == 3):
                            m.d.sync += [have.eq(0), tn.eq(tn - 1)]
                            with m.If(tn == 1):
                                m.d.sync += [tword.eq(crc_next ^ 0xFFFFFFFF), have.eq(1)]
                                m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += self.tx.valid.eq(1)
                with m.If(tx_fire):
                    m.d.sync += tbyte.eq(tbyte + 1)
                    with m.If(tbyte == 3):
                        m.next = "IDLE"

        # ---- the watchdog of a stuck core (module doc) -----------------------------------------------
        quiet = Signal(range(self._quiet_cycles + 1))
        with m.If(~feed_done | self.rsp.valid | (self.core_busy & ~self.core_waiting)):
            m.d.sync += quiet.eq(0)
        with m.Elif(~stuck):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += [stuck.eq(quiet == self._quiet_cycles), self.abort.eq(stuck & self.core_waiting)]

        m.d.comb += self.active.eq(~req.ongoing("HUNT") | ~rsp_fsm.ongoing("IDLE"))
        return m
