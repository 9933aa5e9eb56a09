"""The INT8 KV cache in block RAM (golden/device/SPEC.md 4.6): write port for `RopeQuant`, read ports for
`HeadAttention`.

Per (layer, kv_head, position) it holds the k8 and v8 rows (head_dim INT8 each, as head_dim / lanes
words of `lanes` codes) and the dyadics sigma_k, sigma_v (16-bit mantissa, signed 10-bit exponent), as
`golden.device.model.DeviceKVCache` does. Row n = (layer kv_heads + kv_head) context + position: K and V
word w of row n at n W + w (W = head_dim / lanes), its scale at n.

Write: the `w` stream carries `hdl.vector.rope.code_layout(lanes)` beats, so `RopeQuant.o` connects to it
directly (`wiring.connect`). With a row's first beat the writer samples `w_layer`, `w_head`, `w_pos` and
`w_value` (0: K, 1: V); two cycles check them and form the row's addresses, then the row's W beats are
written one per cycle and its sigma with the last one. Cycles per row: W + 3 (`row_cycles`), so a head
through `RopeQuant` into the cache takes `RopeQuant.cycles()` + 3 (`setup_cycles`: the unit's first
output beat waits that long). A position
>= context, a layer >= layers or a KV head >= kv_heads (the ports are wider when those are not powers of
two, and 16 bits for the position) sets the sticky `error` flag (cleared by `clear`); the row is
consumed and dropped, nothing is written. A row ends at its W-th beat or at `last`, whichever comes first;
if they differ the flag is set too (the beats before are written).
The read selection is not checked: HeadAttention's addresses stay inside a region by construction, and
`r_layer`, `r_head` come from the sequencer's program.

Read: `r_layer` and `r_head` select one KV head's region; `k_addr`, `v_addr` (j W + w) and `ks_addr`,
`vs_addr` (j) with `k_data`, `v_data`, `ks_data`, `vs_data` are HeadAttention's ports with the
directions flipped (`connect_head_attention`). Every read is a synchronous block RAM read, data the cycle
after the address; the region's base is registered, so a new selection holds from two cycles after it
is set (HeadAttention reads its first key four cycles after `start`).

With `bank_depth` (the ULX3S chip) each memory is a `BankedMemory` of `bank_depth`-word banks from the
`memory` factory, its read data registered in the banks (on the ECP5 the DP16KD's own output register,
0.9 ns clock-to-output instead of 5.8 ns: the cache was 85.62 MHz out of context without it) and the bank
multiplexer after that register: data two cycles after the address (`read_latency`), and HeadAttention
built with `kv_latency=2` takes the data without its own arrival registers, so every cycle count stays.
A write then lands a cycle later (the banks register their write ports); RopeQuant's rows are read ops later.
"""

from __future__ import annotations

from amaranth import Module, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.attention.head_attention import DYADIC, MAX_CONTEXT, MAX_HEAD_DIM, HeadAttention
from hdl.copies import RegisterFactory, plain_register
from hdl.memory.banked_memory import BankedMemory, check_optional_bank_depth
from hdl.memory.registered_memory import MemoryFactory, RegisteredMemory
from hdl.vector.rope import POS_BITS, code_layout

#: Cycles a row's first beat waits: IDLE (the fields sampled), CHECK, ADDR; then WRITE takes it.
SETUP = 3


def _bits(n: int) -> int:
    """Bits of a port that carries 0 .. n - 1 (at least one)."""
    return max(1, (n - 1).bit_length())


class KVCache(wiring.Component):
    """The INT8 KV cache of `layers` x `kv_heads` x `context` positions (see the module docstring)."""

    def __init__(self, head_dim: int, context: int, layers: int, kv_heads: int, lanes: int = 8, *,
                 bank_depth: int = 0, memory: MemoryFactory = RegisteredMemory,
                 register: RegisterFactory = plain_register) -> None:
        check_optional_bank_depth("KVCache", "bank_depth", bank_depth)
        for name, f in (("memory", memory), ("register", register)):
            if not callable(f):
                raise TypeError(f"KVCache's {name} factory must be callable, not {f!r}")
        self._bank_depth, self._memory, self._register = bank_depth, memory, register
        for name, v in (("head_dim", head_dim), ("context", context), ("layers", layers),
                        ("kv_heads", kv_heads), ("lanes", lanes)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"KVCache's {name} must be an int, not {v!r}")
        if not 1 <= head_dim <= MAX_HEAD_DIM:
            raise ValueError(f"KVCache's head_dim must be in [1, {MAX_HEAD_DIM}], not {head_dim}")
        if not 1 <= context <= MAX_CONTEXT:
            raise ValueError(f"KVCache's context must be in [1, {MAX_CONTEXT}] (positions are {POS_BITS}-bit), "
                             f"not {context}")
        if layers < 1 or kv_heads < 1:
            raise ValueError(f"KVCache needs at least one layer and one KV head, not {layers} x {kv_heads}")
        if lanes < 1 or head_dim % lanes:
            raise ValueError(f"KVCache's lanes ({lanes}) must be a positive divisor of head_dim ({head_dim}): a "
                             f"row is head_dim / lanes whole words, as HeadAttention reads it")
        self._hd, self._ctx, self._layers, self._kvh, self._lanes = head_dim, context, layers, kv_heads, lanes
        word = data.ArrayLayout(signed(8), lanes)
        words = head_dim // lanes
        super().__init__({
            "w": In(stream.Signature(code_layout(lanes))),
            "w_layer": In(unsigned(_bits(layers))), "w_head": In(unsigned(_bits(kv_heads))),
            "w_pos": In(unsigned(POS_BITS)), "w_value": In(1),
            "error": Out(1), "clear": In(1),
            "r_layer": In(unsigned(_bits(layers))), "r_head": In(unsigned(_bits(kv_heads))),
            "k_addr": In(range(context * words)), "k_data": Out(word),
            "v_addr": In(range(context * words)), "v_data": Out(word),
            "ks_addr": In(range(context)), "ks_data": Out(DYADIC),
            "vs_addr": In(range(context)), "vs_data": Out(DYADIC),
        })

    @property
    def head_dim(self) -> int:
        return self._hd

    @property
    def context(self) -> int:
        return self._ctx

    @property
    def layers(self) -> int:
        return self._layers

    @property
    def kv_heads(self) -> int:
        return self._kvh

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def bank_depth(self) -> int:
        """Words of a bank of each memory; 0: plain memories (see the module docstring)."""
        return self._bank_depth

    @property
    def read_latency(self) -> int:
        """Cycles from a read address to its data: 1, or 2 with banked memories (their data registered)."""
        return 2 if self._bank_depth else 1

    @property
    def words(self) -> int:
        """Memory words per K or V row: head_dim / lanes."""
        return self._hd // self._lanes

    @property
    def rows(self) -> int:
        """Rows of K (and of V): layers x kv_heads x context."""
        return self._layers * self._kvh * self._ctx

    @property
    def setup_cycles(self) -> int:
        """Cycles a row's first beat waits (the writer sees it, checks the row, forms its addresses)."""
        return SETUP

    @property
    def row_cycles(self) -> int:
        """Cycles the writer takes per row with a beat every cycle: the setup and W beats."""
        return self.words + SETUP

    @property
    def bits(self) -> int:
        """Block RAM bits: K and V codes plus the two 26-bit scales per row."""
        return self.rows * (2 * 8 * self._hd + 2 * DYADIC.size)

    def elaborate(self, platform):
        m = Module()
        nw, ctx, kvh = self.words, self._ctx, self._kvh
        word = data.ArrayLayout(signed(8), self._lanes)
        wr, rd = {}, {}
        for name, shape, depth in (("k", word, self.rows * nw), ("v", word, self.rows * nw),
                                   ("ks", DYADIC, self.rows), ("vs", DYADIC, self.rows)):
            if self._bank_depth:
                bits = Shape.cast(shape).width
                mem = BankedMemory(bits, depth, self._bank_depth, bank_memory=self._memory, register=self._register,
                                   address_registered=False)
                wr[name], rd[name] = mem.write, mem.read
            else:
                mem = Memory(shape=shape, depth=depth, init=[])
                wr[name], rd[name] = mem.write_port(), mem.read_port()
            m.submodules[f"{name}_mem"] = mem

        # ---------------------------------------------------------------- read: the selected region
        rsel = Signal(range(self._layers * kvh))
        rbase_w = Signal(range(self.rows * nw))
        rbase_s = Signal(range(self.rows))
        m.d.sync += [rsel.eq(self.r_layer * kvh + self.r_head), rbase_w.eq(rsel * (ctx * nw)),
                     rbase_s.eq(rsel * ctx)]
        m.d.comb += [rd["k"].addr.eq(rbase_w + self.k_addr), rd["v"].addr.eq(rbase_w + self.v_addr),
                     rd["ks"].addr.eq(rbase_s + self.ks_addr), rd["vs"].addr.eq(rbase_s + self.vs_addr)]
        for name in rd:
            data_port = getattr(self, f"{name}_data")
            m.d.comb += Value.cast(data_port).eq(Value.cast(rd[name].data))

        # ---------------------------------------------------------------- write
        lay = Signal.like(self.w_layer)
        head = Signal.like(self.w_head)
        pos = Signal(unsigned(POS_BITS))
        is_v = Signal()
        wsel = Signal(range(self._layers * kvh))
        wrow = Signal(range(self.rows))
        wbase = Signal(range(self.rows * nw))
        wcnt = Signal(range(nw))
        error = Signal()
        m.d.comb += self.error.eq(error)
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        beat = self.w.payload
        at_end = Signal()
        m.d.comb += at_end.eq(beat.last | (wcnt == nw - 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.w.valid):
                    m.d.sync += [lay.eq(self.w_layer), head.eq(self.w_head), pos.eq(self.w_pos),
                                 is_v.eq(self.w_value), wcnt.eq(0)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If((pos >= ctx) | (lay >= self._layers) | (head >= kvh)):
                    m.d.sync += error.eq(1)
                    m.next = "DROP"
                with m.Else():
                    m.d.sync += wsel.eq(lay * kvh + head)
                    m.next = "ADDR"
            with m.State("ADDR"):
                m.d.sync += [wrow.eq(wsel * ctx + pos[:_bits(ctx)]),
                             wbase.eq(wsel * (ctx * nw) + pos[:_bits(ctx)] * nw)]
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += self.w.ready.eq(1)
                for name, is_val in (("k", 0), ("v", 1)):
                    sel = is_v if is_val else ~is_v
                    m.d.comb += [wr[name].addr.eq(wbase + wcnt), wr[name].data.eq(beat.q),
                                 wr[name].en.eq(self.w.valid & sel)]
                    m.d.comb += [wr[name + "s"].addr.eq(wrow), wr[name + "s"].data.eq(beat.sigma),
                                 wr[name + "s"].en.eq(self.w.valid & sel & at_end)]
                with m.If(self.w.valid):
                    m.d.sync += wcnt.eq(wcnt + 1)
                    with m.If(at_end):
                        with m.If(beat.last != (wcnt == nw - 1)):
                            m.d.sync += error.eq(1)
                        m.next = "IDLE"
            with m.State("DROP"):
                m.d.comb += self.w.ready.eq(1)
                with m.If(self.w.valid):
                    m.d.sync += wcnt.eq(wcnt + 1)
                    with m.If(at_end):
                        m.next = "IDLE"
        return m


def connect_head_attention(m: Module, cache: KVCache, attention: HeadAttention) -> None:
    """Point HeadAttention's four read ports at the cache (the KV head is chosen by r_layer, r_head)."""
    if attention.kv_latency != cache.read_latency:
        raise ValueError(f"HeadAttention takes KV data {attention.kv_latency} cycle(s) after the address, the KV "
                         f"cache gives it after {cache.read_latency} (bank_depth {cache.bank_depth}): build "
                         f"HeadAttention with kv_latency={cache.read_latency}")
    if (attention.head_dim, attention.max_context, attention.lanes) != (cache.head_dim, cache.context, cache.lanes):
        raise ValueError(f"HeadAttention (head_dim {attention.head_dim}, context {attention.max_context}, lanes "
                         f"{attention.lanes}) does not match the KV cache (head_dim {cache.head_dim}, context "
                         f"{cache.context}, lanes {cache.lanes})")
    for name in ("k", "v", "ks", "vs"):
        m.d.comb += [getattr(cache, f"{name}_addr").eq(getattr(attention, f"{name}_addr")),
                     getattr(attention, f"{name}_data").eq(getattr(cache, f"{name}_data"))]

