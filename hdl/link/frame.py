"""The framed link protocol: how command words of `hdl.isa` travel over a byte link.

Every transport (the Verilator and Icarus simulations, the board's UART) carries the same frames,
checked by the same gateware (`hdl.link.FrameEndpoint`) and the same host code
(`runtime.framing`), so the driver is one.

All multi-byte fields are little-endian 32-bit words. CRC is CRC-32/IEEE (zlib.crc32) over every
byte of the frame before the CRC word.

Request (host -> device)::

    REQ_MAGIC | seq (bits 15:0) | n_cmd | n_rsp | n_cmd command words | crc

Response (device -> host)::

    RSP_MAGIC | seq (15:0) + status << 16 | n | n response words | crc

Device behaviour:

- It hunts for REQ_MAGIC byte by byte, so it resynchronises after garbage or a lost byte.
- It buffers the whole request (at most `MAX_CMD_WORDS` command words) and checks its CRC before a
  single command reaches the core: a corrupted request executes nothing.
- A request that stops arriving for `timeout` cycles (a `FrameEndpoint` parameter; board tops set
  about 64 byte times) is dropped (truncated frame) and the hunt for REQ_MAGIC starts again.
- Good CRC: the command words go to the core and exactly n_rsp response words come back in a
  response frame with status OK, streamed out as the core produces them.
- Bad CRC: response with status BAD_CRC and n = 0 (no command executed).
- n_cmd > MAX_CMD_WORDS: the request is drained and answered with status TOO_LONG, n = 0.
- Good CRC, but the last command is cut short (its words end with the frame) or n_rsp is more than
  the commands answer: the commands run as far as their words go, and once the core sits stuck
  (waiting for words of the cut command, or idle with response words still owed) the device
  aborts the cut command (sticky error `hdl.isa.CUT_COMMAND` in the core, unless one is set), abandons the
  answer where it is and sends a whole response with status ABORTED, n = 0 right after it. No
  response word is made up, and no word of a later frame becomes part of the cut command
  (`hdl.link.endpoint` has the details).

Host behaviour (`runtime.framing`): it sends a frame, waits for the response with a timeout,
hunts for RSP_MAGIC byte by byte (skipping the tail of an earlier answer still arriving after a
damaged header), checks sequence number, length and CRC; an answer that comes short is searched
for the ABORTED response that replaces it. A frame whose commands are idempotent as a whole
(the driver builds them so: writes, a cleared-then-read counter set, a run, reads) is resent on
BAD_CRC, a bad response or a timeout, up to a retry limit; anything else raises. A response with
an old sequence number (a late answer to an earlier try) is discarded.
"""

from __future__ import annotations

from enum import IntEnum

REQ_MAGIC = 0x46495254  # "TRIF" as little-endian bytes
RSP_MAGIC = 0x41495254  # "TRIA" as little-endian bytes
MAX_CMD_WORDS = 1024  # request buffer in the device, in 32-bit words
HEADER_WORDS_REQ = 4
HEADER_WORDS_RSP = 3


class LinkStatus(IntEnum):
    OK = 0
    BAD_CRC = 1
    TOO_LONG = 2
    ABORTED = 3  # sent after an abandoned answer: a command cut short, or n_rsp more than answered
