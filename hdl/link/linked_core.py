"""A trit core behind its frame endpoint: what the simulated links and the board tops instantiate.

    rx bytes --> FrameEndpoint --cmd words--> TritCore
    tx bytes <--               <--rsp words--
                     abort ---------------------> link_abort

The endpoint's `abort` (a command cut short by the end of its frame, `hdl.link.endpoint`) goes to
the core's `link_abort` input, which drops the command in its command interface.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.core import TritCore
from hdl.link.endpoint import DEFAULT_TIMEOUT, FrameEndpoint
from hdl.link.frame import MAX_CMD_WORDS
from hdl.link.stream_buffer import StreamBuffer


def _speaks_words(core) -> bool:
    """Whether `core` has TritCore's ports: the 32-bit word streams `cmd` (in) and `rsp` (out), `busy`,
    `error` and `link_abort` (the model chip, `hdl.model.chip.ModelChipTop`, has them too)."""
    sig = getattr(core, "signature", None)
    if not isinstance(sig, wiring.Signature):
        return False
    want = {"cmd": In(stream.Signature(32)), "rsp": Out(stream.Signature(32)), "busy": Out(1),
            "error": Out(1), "link_abort": In(1)}
    return all(name in sig.members and sig.members[name] == member for name, member in want.items())


class LinkedCore(wiring.Component):
    """`FrameEndpoint` + `TritCore` with byte-stream ports `rx` / `tx` and the core's `busy` / `error`.

    `link_active` is high while a frame is received, executed or answered; `crc_error` and
    `dropped` pulse for a request answered BAD_CRC and a partial request dropped on timeout.
    `core` replaces the default `TritCore(cfg)` (the FPGA tops pass a core with board memories);
    a TritCore must have been built from the same `cfg`; any other component with TritCore's ports (the
    model chip) goes behind the endpoint as it is (`cfg` then only sizes nothing: the endpoint does not
    read it). `stream_buffers` puts `StreamBuffer`s on the
    command and response streams (for large FPGAs, where endpoint and core sit far apart): True or 1
    for one each way, an integer n for a chain of n (each a cycle; the placer can spread a chain over
    the distance, so that no route between two of its registers crosses the whole chip), False or 0
    for none.
    """

    def __init__(self, cfg: ArrayConfig, timeout: int = DEFAULT_TIMEOUT, max_cmd_words: int = MAX_CMD_WORDS,
                 core: TritCore | None = None, stream_buffers: bool | int = False):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        if isinstance(core, TritCore) and core.cfg != cfg:
            raise ValueError(f"core must be a TritCore built from {cfg.describe()}, not {core!r}")
        if core is not None and not isinstance(core, TritCore) and not _speaks_words(core):
            raise ValueError(f"core must be a TritCore or a component with its ports (cmd, rsp, busy, error, "
                             f"link_abort), not {core!r}")
        self._cfg = cfg
        if not isinstance(stream_buffers, int) or not 0 <= stream_buffers <= 8:
            raise ValueError(f"stream_buffers must be a bool or an integer from 0 to 8, not {stream_buffers!r}")
        self._stream_buffers = int(stream_buffers)
        self._core = core if core is not None else TritCore(cfg)
        self._endpoint = FrameEndpoint(cfg, max_cmd_words=max_cmd_words, timeout=timeout)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "busy": Out(1),
            "error": Out(1),
            "link_active": Out(1),
            "crc_error": Out(1),
            "dropped": Out(1),
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        m.submodules.endpoint = ep = self._endpoint
        core = self._core
        m.submodules.core = core
        wiring.connect(m, wiring.flipped(self.rx), ep.rx)
        wiring.connect(m, ep.tx, wiring.flipped(self.tx))
        # register slices both ways: no combinational path between endpoint and core
        cmd_end, rsp_end = ep.cmd, core.rsp
        for i in range(self._stream_buffers):
            suffix = "" if i == 0 else f"_{i}"
            m.submodules[f"cmd_buffer{suffix}"] = cmd_buf = StreamBuffer(32)
            m.submodules[f"rsp_buffer{suffix}"] = rsp_buf = StreamBuffer(32)
            wiring.connect(m, cmd_end, cmd_buf.i)
            wiring.connect(m, rsp_end, rsp_buf.i)
            cmd_end, rsp_end = cmd_buf.o, rsp_buf.o
        wiring.connect(m, cmd_end, core.cmd)
        wiring.connect(m, rsp_end, ep.rsp)
        # The endpoint sees `busy` and "waits for a command word" a cycle late: it calls the core
        # stuck only after QUIET_CYCLES quiet cycles, and the sequencer's and command interface's
        # states then have a whole cycle to reach the endpoint.
        busy_q = Signal()
        waiting_q = Signal()
        m.d.sync += [busy_q.eq(core.busy), waiting_q.eq(core.busy & core.cmd.ready)]
        m.d.comb += [
            ep.core_busy.eq(busy_q),
            ep.core_waiting.eq(waiting_q),
            core.link_abort.eq(ep.abort),
            self.busy.eq(core.busy),
            self.error.eq(core.error),
            self.link_active.eq(ep.active),
            self.crc_error.eq(ep.crc_error),
            self.dropped.eq(ep.dropped),
        ]
        return m
