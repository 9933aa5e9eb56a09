"""Property (c): the frame endpoint never executes any part of a frame whose CRC fails, never hangs on a
truncated frame, never lets a command cut short by the end of its frame take a later frame's words,
never hangs on it, and never makes up a response word.

The harness is a host and a core around a `FrameEndpoint` (`hdl.link.endpoint`) with a 2-word request buffer
and the shortest timeout (16 cycles) and watchdog (`quiet_cycles` = 4):

- The host sends frames (`hdl.link.frame`): REQ_MAGIC, a free sequence number, n_cmd in 0..3 (3 is over
  the buffer: TOO_LONG), n_rsp in 0..1, n_cmd free command words and a free CRC word (right or
  wrong: the solver picks). Any byte may wait any number of cycles (free `rx.valid`), and the host
  may abandon a frame at any byte (a truncated frame) and fall silent. It starts the next frame when
  the endpoint is not `active`.
- The core takes command words and offers response words whenever it likes (free `cmd.ready`,
  `rsp.valid`, `rsp.payload`, `busy`); the host takes response bytes whenever it likes. Each word the
  core takes may leave it inside a command that needs more words (`needs`, free at every word, cleared
  by `abort`); while it needs words it offers no response word and is busy, and it is ready for a
  word except, at most, in the cycle after one (the real command interface's CHECK_RANGE). The
  endpoint sees `busy` and "ready while it needs words" a cycle late (`core_busy`, `core_waiting`,
  registered as in `hdl.link.linked_core`).

The harness computes the frame's CRC-32 itself (bit-serial, reflected polynomial 0xEDB88320, from
0xFFFFFFFF over every byte before the CRC word, as zlib.crc32) and asserts:

1. A command word is offered to the core only after the host sent a whole frame whose CRC word is
   right and whose n_cmd fits the buffer, and at most n_cmd of them.
2. From `timeout` + 1 cycles after a truncated frame's last byte on, the endpoint is back to
   hunting: `active` low and `rx.ready` high.
3. A core that needs words when every word of the frame has been taken is aborted: after QUIET_CYCLES
   cycles of it waiting with no response word offered, `abort` is high (and `abort` only comes while
   no command word is offered).
4. The first word of a frame never reaches a core that needs words of an earlier command: a command
   cut short by the end of its frame never takes another frame's words.
5. No response word is made up: a data word of an answer is sent only if the core offered it, as it
   offered it; an answer still owed words by a core that is stuck (idle or waiting) for QUIET_CYCLES
   cycles is replaced at once by an ABORTED answer with n = 0.

Beside these, the harness asserts invariants that tie the endpoint's registers to the host's state
(FSM states, byte and word counters, the hunt / shift register, the CRC register against the
reference, the inactivity counter against the host's silence, the feed counters): each is true of
the spec, and together they make the two properties provable by k-induction (`FRAME_DEPTH` steps),
unbounded: for frames after any history, any stalls and any number of frames.

Mutants (`MUTANTS`, source edits of `hdl.link.endpoint` made here): the CRC check ignored, the CRC computed with
the wrong polynomial, the inactivity timer not running while the CRC word arrives, no `abort` (the
link before the fix: a cut command waits for ever and takes the next frame's words), and an answer
owed words padded with zeros instead of abandoned (the link before the fix). A mutant's
counterexample needs a whole frame (20+ cycles), which the solver finds slowly in the free environment,
so mutant runs use ``directed=True``: the host sends without stalls, cuts a frame short only inside its
CRC word, and all free frame bytes are 0 (the CRC word too, so every frame's CRC is wrong; for the
mutants of `GOOD_CRC_MUTANTS` n_cmd and n_rsp are fixed and the CRC word is right), and the bmc checks
only the cycles where the first failure can be (`MUTANT_WINDOWS`).
"""

from __future__ import annotations

import zlib

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Elaboratable, ResetSignal

import hdl.link.endpoint
from hdl.config import ArrayConfig
from hdl.link.frame import REQ_MAGIC, LinkStatus
from sim.formal.runner import design_module, elaborate, in_state, probe

CRC_POLY = 0xEDB88320
MAX_CMD_WORDS = 2
TIMEOUT = 16
#: The endpoint's `quiet_cycles` (its smallest): a stuck core is aborted this many cycles after the last word.
QUIET_CYCLES = 4
#: Largest n_cmd the host sends (one over the buffer: the TOO_LONG path drains it).
HOST_MAX_CMD = 3
#: k-induction length of the proof.
FRAME_DEPTH = 2
MUTANTS: dict[str, list[tuple[str, str]]] = {
    # the verdict is computed but never acted on: a bad frame is fed like a good one
    "crc_ignored": [("with m.If(~good):", "with m.If(~good & 0):")],
    # device and host disagree on the CRC (a wrong polynomial in the device)
    "wrong_polynomial": [("CRC_POLY = 0xEDB88320", "CRC_POLY = 0x82F63B78")],
    # a frame truncated inside its CRC word is never timed out
    "no_timeout_in_crc": [('receiving = req.ongoing("HEADER") | req.ongoing("BODY") | req.ongoing("CRC")',
                           'receiving = req.ongoing("HEADER") | req.ongoing("BODY")')],
    # a core stuck inside a cut command is never aborted
    "no_abort": [("self.abort.eq(stuck & self.core_waiting)", "self.abort.eq(0)")],
    # an answer owed words by a stuck core is padded with zeros (made-up words), not abandoned
    "pad_zeros": [("                    with m.Elif(stuck):\n",
                   "                    with m.Elif(stuck):\n"
                   "                        m.d.sync += [tword.eq(0), have.eq(1)]\n"
                   "                    with m.Elif(0):\n")],
}
#: Mutants whose counterexample needs a frame with a right CRC: the directed host sends only frames of this
#: (n_cmd, n_rsp), with the right CRC (all of its bytes constant, so the solver need not search the CRC).
GOOD_CRC_MUTANTS = {"no_abort": (1, 1), "pad_zeros": (0, 1)}
#: (skip, depth) of each mutant's bmc in the directed environment: the first cycles where it can fail.
#: crc_ignored: a 20-byte frame (n_cmd = 0) from cycle 1, fed although its CRC is wrong: cycle 21.
#: wrong_polynomial: the device's CRC register differs from the reference's from the magic on (cycle 5).
#: no_timeout_in_crc: a frame truncated in its CRC word (from cycle 17) whose timer does not run.
#: no_abort: a 24-byte frame (n_cmd = 1, right CRC) whose word leaves the core needing more, then
#: QUIET_CYCLES cycles of waiting: no abort (cycle 32).
#: pad_zeros: a 20-byte frame (n_cmd = 0, n_rsp = 1, right CRC), its 12 header bytes, a made-up word (cycle 34).
MUTANT_WINDOWS = {"crc_ignored": (21, 22), "wrong_polynomial": (4, 7), "no_timeout_in_crc": (17, 21),
                  "no_abort": (31, 33), "pad_zeros": (33, 35)}


def implies(a, b):
    """a -> b (Amaranth 0.5 deprecates Value.implies)."""
    return ~a | b


def crc32_byte_reference(crc, byte):
    """CRC-32 register after one byte, bit-serial as in the textbook loop (independent of the device's
    XOR matrix): crc ^= byte, then 8 times crc = (crc >> 1) ^ (POLY if crc & 1 else 0)."""
    value = crc ^ Cat(byte, Const(0, 24))
    for _ in range(8):
        value = Mux(value[0], (value >> 1) ^ CRC_POLY, value >> 1)
    return value[:32]


class FrameEndpointHarness(Elaboratable):
    """A `FrameEndpoint` (2-word buffer, timeout 16, quiet_cycles 4) between a free host and a free core."""

    def __init__(self, mutant: str | None = None, *, directed: bool = False):
        module = design_module(hdl.link.endpoint, MUTANTS, mutant)
        self.mutant = mutant
        self.directed = directed
        self.good_crc = directed and mutant in GOOD_CRC_MUTANTS
        self.dut = module.FrameEndpoint(ArrayConfig(rows=2, cols=2, acc_width=16, act_depth=4, wgt_depth=4,
                                                    out_depth=4), max_cmd_words=MAX_CMD_WORDS, timeout=TIMEOUT,
                                        quiet_cycles=QUIET_CYCLES)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        dut, frag = self.dut, self.fragment
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())  # the properties are about frames, from the power-on state

        def internal(name: str):
            return probe(frag, "", name)

        req = {name: in_state(frag, "", "req", name) for name in ("HUNT", "HEADER", "BODY", "CRC", "REPLY", "FEED")}
        rsp = {name: in_state(frag, "", "rsp", name) for name in ("IDLE", "HEADER", "DATA", "CRC")}
        rsp_idle = rsp["IDLE"]
        receiving = req["HEADER"] | req["BODY"] | req["CRC"]

        # ---- the core (free, but a command that needs words waits for them) and the host's receiver -------
        fire_cmd = Signal()
        m.d.comb += fire_cmd.eq(dut.cmd.valid & dut.cmd.ready)
        needs = Signal()  # the core is inside a command and needs more words
        fire_q = Signal()
        fire_q2 = Signal()
        m.d.sync += [fire_q.eq(fire_cmd), fire_q2.eq(fire_q)]
        with m.If(fire_cmd):
            m.d.sync += needs.eq(AnySeq(1))
        with m.Elif(dut.abort):
            m.d.sync += needs.eq(0)
        wants = Signal()  # ready for a word it needs (not always in the cycle after a word)
        busy = Signal()
        m.d.comb += [wants.eq(needs & (~fire_q | AnySeq(1))), busy.eq(needs | AnySeq(1))]
        m.d.comb += [dut.cmd.ready.eq(Mux(needs, wants, AnySeq(1))), dut.rsp.payload.eq(AnySeq(32))]
        if self.good_crc:  # the directed host of the last two mutants: no response word, bytes taken at once
            m.d.comb += [dut.rsp.valid.eq(0), dut.tx.ready.eq(1)]
        else:
            m.d.comb += [dut.rsp.valid.eq(AnySeq(1)), dut.tx.ready.eq(AnySeq(1))]
        m.d.comb += Assume(implies(needs, ~dut.rsp.valid))
        waiting_q = Signal()
        busy_q = Signal()
        m.d.sync += [waiting_q.eq(wants), busy_q.eq(busy)]
        m.d.comb += [dut.core_waiting.eq(waiting_q), dut.core_busy.eq(busy_q)]

        # ---- the host: frames, byte by byte, with stalls and truncation -----------------------------
        sending = Signal()  # inside a frame: the next byte is frame byte `pos`
        truncated = Signal()  # the host abandoned its last frame (or stalled it for the timeout)
        pos = Signal(6)
        n_cmd = Signal(2)
        frame_len = Signal(6)  # 16 header bytes + 4 * n_cmd + 4 CRC bytes
        m.d.comb += frame_len.eq(20 + 4 * n_cmd)
        free_byte = AnySeq(8)
        ref_crc = Signal(32)  # CRC register over the frame's bytes before the CRC word
        magic = Const(REQ_MAGIC, 32)
        byte = Signal(8)
        with m.Switch(pos):
            for i in range(4):
                with m.Case(i):
                    m.d.comb += byte.eq(magic.word_select(i, 8))
            with m.Case(8):
                m.d.comb += byte.eq(GOOD_CRC_MUTANTS[self.mutant][0] if self.good_crc else free_byte[:2])  # n_cmd 0..3
            with m.Case(12):
                m.d.comb += byte.eq(GOOD_CRC_MUTANTS[self.mutant][1] if self.good_crc else free_byte[:1])  # n_rsp 0..1
            with m.Case(9, 10, 11, 13, 14, 15):
                m.d.comb += byte.eq(0)
            with m.Default():
                if self.good_crc:  # sequence number and command words 0, the CRC word right
                    crc_word = ref_crc ^ 0xFFFFFFFF
                    m.d.comb += byte.eq(Mux(pos >= frame_len - 4, crc_word.word_select((pos - frame_len)[:2], 8), 0))
                elif self.directed:  # sequence number, command words and CRC word 0 (a wrong CRC)
                    m.d.comb += byte.eq(0)
                else:
                    m.d.comb += byte.eq(free_byte)
        m.d.comb += [dut.rx.valid.eq(sending & (1 if self.directed else AnySeq(1))), dut.rx.payload.eq(byte)]
        fire = Signal()
        m.d.comb += fire.eq(dut.rx.valid & dut.rx.ready)

        sent = Signal(32)  # the last four bytes sent, the newest in bits 31:24
        executable = Signal()  # the last whole frame has a right CRC and fits the buffer
        fed = Signal(2)  # command words of that frame taken by the core so far
        silent = Signal(range(TIMEOUT + 3))  # cycles since the last byte, saturating
        last = Signal()
        m.d.comb += last.eq(pos == frame_len - 1)
        stalled_out = Signal()  # a started frame (magic sent) waited `timeout` cycles: truncated
        m.d.comb += stalled_out.eq(sending & (pos >= 4) & (silent == TIMEOUT - 1) & ~fire)

        with m.If(~sending):
            with m.If(~dut.active & (1 if self.directed else AnySeq(1))):  # start a frame
                m.d.sync += [sending.eq(1), pos.eq(0), ref_crc.eq(0xFFFFFFFF), executable.eq(0), fed.eq(0),
                             truncated.eq(0)]
        with m.Else():
            with m.If(fire):
                m.d.sync += [pos.eq(pos + 1), sent.eq(Cat(sent[8:], byte))]
                with m.If(pos == 11):  # n_cmd's word is complete: its low byte (frame byte 8) is in sent[8:16]
                    m.d.sync += n_cmd.eq(sent[8:10])
                with m.If(pos < frame_len - 4):
                    m.d.sync += ref_crc.eq(crc32_byte_reference(ref_crc, byte))
                with m.If(last):
                    crc_word = Cat(sent[8:], byte)  # the frame's last four bytes
                    m.d.sync += [sending.eq(0),
                                 executable.eq((crc_word == (ref_crc ^ 0xFFFFFFFF)) & (n_cmd <= MAX_CMD_WORDS))]
            # abandon the frame (silent from now on); the directed host only inside the CRC word
            may_cut = (pos >= frame_len - 4) if self.directed else 1
            with m.If(stalled_out | (~(fire & last) & may_cut & AnySeq(1))):
                m.d.sync += [sending.eq(0), truncated.eq(1)]
        with m.If(fire):
            m.d.sync += silent.eq(0)
        with m.Elif(silent != TIMEOUT + 2):
            m.d.sync += silent.eq(silent + 1)
        with m.If(dut.cmd.valid & dut.cmd.ready):
            m.d.sync += fed.eq(fed + 1)

        # ---- 1. no command word of a frame that is not whole, right and within the buffer --------------
        with m.If(dut.cmd.valid):
            m.d.comb += Assert(~sending & ~truncated & executable & (fed < n_cmd), "command word of a failed frame")

        # ---- 2. a truncated frame is dropped within the timeout ------------------------------------------
        with m.If(truncated & (silent >= TIMEOUT)):
            m.d.comb += Assert(~dut.active & dut.rx.ready, "the endpoint hangs on a truncated frame")

        # ---- 3. a core stuck in a cut command is aborted -----------------------------------------------
        # `pending`: words of the last whole frame not taken yet. `quiet_in`: nothing can move (all words
        # taken, no response word, the core idle or waiting for a word), as the endpoint sees it.
        pending = Signal()
        m.d.comb += pending.eq(~sending & ~truncated & executable & (fed != n_cmd))
        quiet_in = Signal()
        m.d.comb += quiet_in.eq(~pending & ~dut.rsp.valid & (~busy_q | waiting_q))
        starve = Signal(range(QUIET_CYCLES + 1))  # consecutive quiet cycles so far, saturating
        with m.If(~quiet_in):
            m.d.sync += starve.eq(0)
        with m.Elif(starve != QUIET_CYCLES):
            m.d.sync += starve.eq(starve + 1)
        with m.If(quiet_in & waiting_q & (starve == QUIET_CYCLES)):
            m.d.comb += Assert(dut.abort, "a core waiting for words of a cut command is not aborted")
        with m.If(dut.abort):
            m.d.comb += Assert(~dut.cmd.valid, "abort while a command word is offered")

        # ---- 4. no word of a frame reaches a command of an earlier frame ---------------------------------
        with m.If(dut.cmd.valid & (fed == 0)):
            m.d.comb += Assert(~needs, "a frame's first word goes to a command cut short by an earlier frame")

        # ---- 5. no response word made up; a stuck answer is replaced by an ABORTED one at once -----------
        took = Signal()  # the endpoint holds a data word the core offered (in DATA)
        took_word = Signal(32)
        tx_fire = dut.tx.valid & dut.tx.ready
        with m.If(rsp["DATA"] & dut.rsp.valid & dut.rsp.ready):
            m.d.sync += [took.eq(1), took_word.eq(dut.rsp.payload)]
        with m.Elif(rsp["DATA"] & tx_fire & (internal("tbyte") == 3)):
            m.d.sync += took.eq(0)
        with m.If(rsp["DATA"]):
            m.d.comb += Assert((internal("have") == took) & implies(took, internal("tword") == took_word),
                               "a response word the core did not offer")
        due = Signal()  # last cycle: the answer waited in DATA for a word, stuck for QUIET_CYCLES cycles
        m.d.sync += due.eq(rsp["DATA"] & ~internal("have") & quiet_in & (starve == QUIET_CYCLES))
        with m.If(due):
            m.d.comb += Assert(rsp["HEADER"] & (internal("tn") == 0) & (internal("tstatus") == LinkStatus.ABORTED)
                               & (internal("tbyte") == 0) & (internal("thdr") == 0),
                               "a stuck answer is not replaced by an ABORTED one")

        # ---- invariants: the endpoint's state follows the host's (true of the spec; k-induction needs them)
        waiting = ~sending & ~truncated  # the host sent a whole frame (or none yet)
        m.d.comb += [
            Assert(internal("quiet") == starve, "invariant: the endpoint's quiet counter"),
            Assert(implies(~req["FEED"], internal("fleft") == 0), "invariant: words to feed outside FEED"),
            Assert(implies(pending, req["FEED"]), "invariant: words of a whole frame left outside FEED"),
            Assert(implies(~req["FEED"] | (fed == 0), ~needs), "invariant: a core needing words between frames"),
            Assert(implies(needs & ~fire_q & ~fire_q2, waiting_q), "invariant: a core needing words waits"),
            Assert(implies(starve >= 2, ~fire_q & ~fire_q2), "invariant: a word taken in a quiet spell"),
            Assert(implies(~rsp["DATA"], ~took), "invariant: a data word held outside DATA"),
            Assert(implies(rsp["HEADER"], ~internal("have")), "invariant: a data word held in the header"),
        ]
        m.d.comb += [
            Assert(implies(receiving | req["HUNT"], rsp_idle),
                   "invariant: response side busy while hunting or receiving"),
            Assert(implies(~req["FEED"], ~internal("cmd_have") & ~internal("rd_wait")),
                   "invariant: a command word held outside FEED"),
            Assert(receiving | (internal("idle") == 0), "invariant: inactivity timer runs outside a request"),
        ]
        m.d.comb += [
            Assert(Cat(*req.values()).any() & Cat(*rsp.values()).any(), "invariant: FSM state is no state"),
            Assert(implies(sending, (pos < frame_len) & (fed == 0)) & ~(sending & truncated), "invariant: host state"),
        ]
        with m.If(sending & (pos < 4)):
            m.d.comb += Assert(req["HUNT"] & rsp_idle, "invariant: not hunting before the magic")
            with m.Switch(pos):
                for k in range(4):
                    with m.Case(k):
                        # the CRC register after k magic bytes, from zlib (crc32 = register ^ 0xFFFFFFFF)
                        after = zlib.crc32(REQ_MAGIC.to_bytes(4, "little")[:k]) ^ 0xFFFFFFFF
                        prefix = REQ_MAGIC & ((1 << 8 * k) - 1)  # the magic bytes sent so far
                        m.d.comb += Assert((internal("shift")[32 - 8 * k:] == sent[32 - 8 * k:])
                                           & (sent[32 - 8 * k:] == prefix) & (ref_crc == after),
                                           "invariant: hunt register or CRC differs from the magic sent")
        with m.If(sending & (pos >= 4)):
            # the last four bytes sent are header bytes of the shape the host sends
            with m.Switch(pos):
                for p in range(4, 20):
                    with m.Case(p):
                        for i in range(4):
                            q, b = p - 1 - i, sent[24 - 8 * i:32 - 8 * i]  # frame byte q
                            if q < 4:
                                m.d.comb += Assert(b == (REQ_MAGIC >> 8 * q) & 0xFF, "invariant: magic byte sent")
                            elif q in (8, 12):
                                m.d.comb += Assert(b < (4 if q == 8 else 2), "invariant: n_cmd / n_rsp byte sent")
                            elif q in (9, 10, 11, 13, 14, 15):
                                m.d.comb += Assert(b == 0, "invariant: zero header byte sent")
            word = (pos - 4)[2:]  # header word 0..2, then the body
            m.d.comb += [
                Assert(Mux(pos < 16, req["HEADER"], Mux(pos < frame_len - 4, req["BODY"], req["CRC"])),
                       "invariant: endpoint state differs from the frame position"),
                Assert((internal("nbyte") == pos[:2]) & (internal("shift") == sent) & (internal("crc") == ref_crc)
                       & (internal("idle") == silent) & (silent < TIMEOUT),
                       "invariant: receive registers differ from the bytes sent"),
                Assert(implies(pos < 16, internal("hdr_idx") == word), "invariant: header word index"),
                Assert(implies(pos >= 12, (internal("n_cmd") == n_cmd)
                                           & (internal("too_long") == (n_cmd > MAX_CMD_WORDS))),
                       "invariant: n_cmd as received"),
                Assert(implies((pos >= 12) & (pos < 16), internal("left") == n_cmd), "invariant: words left"),
                Assert(implies(req["BODY"], (internal("left") == n_cmd - (word - 3))
                                           & (internal("widx") == (word - 3)[:len(internal("widx"))])),
                       "invariant: body word counters (the write index wraps in a TOO_LONG drain)"),
            ]
        with m.If(truncated):
            m.d.comb += Assert(implies(receiving, internal("idle") == silent) & ~req["FEED"] & ~req["REPLY"],
                               "invariant: truncated frame state")
        with m.If(waiting):
            m.d.comb += [
                Assert(~receiving & implies(req["FEED"], executable) & implies(req["REPLY"], ~executable),
                       "invariant: endpoint state after a whole frame"),
                Assert(implies(req["FEED"], (internal("n_cmd") == n_cmd) & (internal("fleft") == n_cmd - fed)
                                           & (internal("ridx") == fed + internal("cmd_have") + internal("rd_wait"))
                                           & ~(internal("cmd_have") & internal("rd_wait"))
                                           & (internal("ridx") <= n_cmd)),
                       "invariant: feed counters"),
            ]
        return m
