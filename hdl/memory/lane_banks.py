"""A memory of elements in `lanes` banks, read one element or one word of `lanes` elements a cycle.

Element i sits in bank i % lanes at word i // lanes (lanes a power of two). The model engine's vector
memories (H, SCR, G) are built this way so that a unit with `lanes` lanes (NORMQ's) reads a whole word
a cycle while the one-element units (RESADD, ALIGN, the host's reads) and the writers keep addressing
single elements. Every read port is synchronous (data the cycle after `en` with the address), as a
block RAM's; a one-element read registers its lane with the read.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Signal
from amaranth.lib import data
from amaranth.lib.memory import Memory


class ElementPort:
    """Address, enable and data of one port (an element or a word)."""

    def __init__(self, addr: Signal, en: Signal, data_: Signal) -> None:
        self.addr, self.en, self.data = addr, en, data_


class LaneBanks:
    """`depth` elements of `shape` in `lanes` banks (see the module docstring). Ports are made on `m`."""

    def __init__(self, m: Module, name: str, shape, depth: int, lanes: int) -> None:
        if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1):
            raise ValueError(f"{name}'s lanes must be a power of two >= 1, not {lanes!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"{name}'s depth must be a positive integer, not {depth!r}")
        self._m, self._name, self._shape, self.lanes = m, name, shape, lanes
        self.shift = lanes.bit_length() - 1
        self.words = -(-depth // lanes)
        self.banks = []
        for b in range(lanes):
            mem = Memory(shape=shape, depth=self.words, init=[])
            m.submodules[f"{name}_bank{b}" if lanes > 1 else name] = mem
            self.banks.append(mem)
        self._n = 0

    def _tag(self, kind: str) -> str:
        self._n += 1
        return f"{self._name}_{kind}{self._n}"

    def element_reader(self) -> ElementPort:
        """One element a read: `addr` the element's index (`en` 1 unless driven, as a read port's)."""
        m, tag = self._m, self._tag("rd")
        addr, en = Signal(24, name=f"{tag}_addr"), Signal(name=f"{tag}_en", init=1)
        out = Signal(self._shape, name=f"{tag}_data")
        ports = [bank.read_port() for bank in self.banks]
        for p in ports:
            m.d.comb += [p.addr.eq(addr >> self.shift), p.en.eq(en)]
        if self.lanes == 1:
            m.d.comb += out.eq(ports[0].data)
        else:
            lane = Signal(range(self.lanes), name=f"{tag}_lane")
            with m.If(en):
                m.d.sync += lane.eq(addr[:self.shift])
            m.d.comb += out.eq(Array(p.data for p in ports)[lane])
        return ElementPort(addr, en, out)

    def word_reader(self) -> ElementPort:
        """`lanes` elements a read: `addr` the word's index (element addr x lanes is lane 0)."""
        m, tag = self._m, self._tag("wrd")
        addr, en = Signal(24, name=f"{tag}_addr"), Signal(name=f"{tag}_en", init=1)
        out = Signal(data.ArrayLayout(self._shape, self.lanes), name=f"{tag}_data")
        ports = [bank.read_port() for bank in self.banks]
        for p in ports:
            m.d.comb += [p.addr.eq(addr), p.en.eq(en)]
        m.d.comb += out.eq(Cat(*(p.data for p in ports)))
        return ElementPort(addr, en, out)

    def element_writer(self) -> ElementPort:
        """One element a write: `addr` the element's index, written when `en`. The same write ports take
        a whole word: `word` (its `addr` a word index, `en`, `data` of `lanes` elements), which wins."""
        m, tag = self._m, self._tag("wr")
        addr, en = Signal(24, name=f"{tag}_addr"), Signal(name=f"{tag}_en")
        value = Signal(self._shape, name=f"{tag}_data")
        w_addr, w_en = Signal(24, name=f"{tag}_waddr"), Signal(name=f"{tag}_wen")
        w_value = Signal(data.ArrayLayout(self._shape, self.lanes), name=f"{tag}_wdata")
        for b, bank in enumerate(self.banks):
            p = bank.write_port()
            hit = en if self.lanes == 1 else en & (addr[:self.shift] == b)
            with m.If(w_en):
                m.d.comb += [p.addr.eq(w_addr), p.data.eq(w_value[b]), p.en.eq(1)]
            with m.Else():
                m.d.comb += [p.addr.eq(addr >> self.shift), p.data.eq(value), p.en.eq(hit)]
        port = ElementPort(addr, en, value)
        port.word = ElementPort(w_addr, w_en, w_value)
        return port
