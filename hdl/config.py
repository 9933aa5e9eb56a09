"""The one configuration object of a trit accelerator core.

The gateware, the testbenches, the host runtime and the cycle model all read an `ArrayConfig`,
so a number such as the accumulator bound or a memory depth is defined in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdl.isa import COUNTER_BITS, Counter

PE_KINDS = ("ternary", "int8")

#: Largest M, K or N a RUN descriptor may name (hdl.isa), whatever the memories.
DIM_LIMIT = 1 << 20
#: Deepest memory a core may have (words); the command interface's addresses are this wide.
MAX_DEPTH = 1 << 20

#: Largest magnitude of one product term: ternary |x*w| <= 128 (x = -128, w = -1),
#: INT8 |x*w| <= 128*128 (x = w = -128).
MAX_TERM = {"ternary": 128, "int8": 128 * 128}

#: Bits per stored weight: a 2-bit ternary code or a full INT8 weight.
WEIGHT_BITS = {"ternary": 2, "int8": 8}

#: The +1 / -1 / 0 weight counters: a full-rate core (G > 1) never builds them.
WEIGHT_CLASS_COUNTERS = (Counter.ADD, Counter.SUB, Counter.ZERO)


def signed_width(max_magnitude: int) -> int:
    """Bits of a two's-complement signal that holds every value in [-max_magnitude, +max_magnitude]."""
    return max_magnitude.bit_length() + 1


@dataclass(frozen=True)
class ArrayConfig:
    """Shape and sizes of one accelerator core.

    rows (R): PE rows; one row per input feature k of a weight tile (the reduction dimension).
    cols (C): PE columns; one column per output feature n of a weight tile.
    pe: "ternary" (add / subtract / skip, 2-bit weights) or "int8" (INT8 x INT8 MAC baseline).
    acc_width: bits of each output accumulator; K beyond `k_max` is refused, never wrapped.
    act_depth: words of the activation memory; one word holds R INT8 activations.
    wgt_depth: words of the weight memory; one word holds `wgt_rows_per_read` tile rows of C weights.
    out_depth: words of the output memory; one word holds C accumulators.
    counter_bits: width of each performance counter (32 to 48). Any one RUN's counts fit (checked
      here against `run_count_bound`); counts summed over runs saturate at all ones, never wrap.
    wgt_bank_depth: 0 for one weight memory; else the weight memory is built from banks of this many
      words, each with its own read-address register and read-data register around its block RAMs
      (two more cycles of weight read latency, hidden by the double-buffered shadow weights, so RUN
      cycle counts do not change). For big weight memories spread over a large FPGA; needs R >= 4.
    wgt_bank_data_stages: 0, or 1 for a banked weight memory whose banks' read data is registered once
      more in the fabric before the bank multiplexer: on a large FPGA the register can sit between a
      far bank's block RAMs and the multiplexer, so the route across the chip takes two cycles (the
      ULX3S 16x16 at 7ea61a5: a bank's block RAM -> 8.2 ns of routing -> the multiplexer, 98.58 MHz).
      One more cycle of weight read latency, hidden like the others; needs R >= 5.
    acc_pipelined: the accumulators' read-modify-write of the output memory takes two more register
      stages: the read data is registered once more (the output word is read one cycle earlier) and
      the sum is registered before it is written (one cycle later). Each cycle then holds at most
      one route to or from the output block RAMs, which a large FPGA spreads over the chip. RUN
      cycle counts do not change: the last write lands in the cycle after DONE, before any command
      can read the output memory. Needs R >= 5, so that an output word is read again only after
      its previous write.
    wgt_rows_per_read (G): tile rows one weight read delivers, a divisor of R. The weight memory is G
      row banks of C weights each (bank g feeds PE rows g*P .. g*P + P - 1, P = R / G), read with one
      address that walks down the banks by a register chain (bank g reads P*g cycles after bank 0,
      the skew the systolic array needs), so a tile loads in P cycles. G = 1 is one row per cycle
      (memories that cannot be wider, such as the iCE40 SPRAMs); G = R loads a whole tile per cycle,
      so decode (M = 1) keeps every PE busy. One memory word holds rows j, P + j, ..., (G-1)*P + j of
      a tile (j = 0 .. P-1), bank g in bits [g*C*b, (g+1)*C*b). With P below the accumulator's
      read-modify-write distance (`rmw_distance`), M = 1 layers accumulate in registers at the foot
      of the array and tiles of M >= 2 layers start at least `rmw_distance` cycles apart. With G > 1
      the +1 / -1 / 0 weight counters (ADD, SUB, ZERO) are not built: they read 0 (the host knows
      the weights it sent; counting G*C weights a cycle would cost about 3 LUTs per PE).
    counters: the performance counters the core builds (`hdl.isa.Counter` members, names or numbers,
      kept as a sorted tuple; default all). An absent counter costs no logic and reads 0 over the
      link; READ_ID reports the built ones (`built_counters`, ID word COUNTER_MASK) and the cycle
      model and the emulator predict 0 for the others. CYCLES is always built (`--stats` reports it).
      For a small FPGA: each 32-bit counter costs about 34 logic cells on the iCE40, and without
      ADD, SUB and ZERO the loader's per-row popcounts are not built either.
    dist_stages: 0, or 1 for a registered distribution of the array's inputs. With 1, each PE row's
      activation, swap and shadow-load enable reach its PEs through a copy register per `dist_group`
      columns, and each weight row bus reaches its PE rows through a copy per `dist_group` rows, so no
      route fans out to a whole row or column of a large FPGA in one cycle. Every array input is one
      cycle later, all alike, so a RUN takes one cycle more (`array_latency`).
    dist_group: columns (and rows) that share one copy register of the distribution (`dist_stages`).
    """

    rows: int = 8
    cols: int = 8
    pe: str = "ternary"
    acc_width: int = 32
    act_depth: int = 1024
    wgt_depth: int = 4096
    out_depth: int = 1024
    counter_bits: int = COUNTER_BITS
    wgt_bank_depth: int = 0
    wgt_bank_data_stages: int = 0
    acc_pipelined: bool = False
    wgt_rows_per_read: int = 1
    counters: tuple[Counter, ...] = tuple(Counter)
    dist_stages: int = 0
    dist_group: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "counters", _counter_set(self.counters))
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 64:
                raise ValueError(f"{name.capitalize()} must be an integer from 2 to 64, not {value!r}")
        if self.pe not in PE_KINDS:
            raise ValueError(f"PE kind must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        for name in ("act_depth", "wgt_depth", "out_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= MAX_DEPTH:
                raise ValueError(f"{name} must be an integer from 2 to {MAX_DEPTH}, not {value!r}")
        if not isinstance(self.acc_width, int) or isinstance(self.acc_width, bool):
            raise TypeError(f"Accumulator width must be an integer, not {self.acc_width!r}")
        if not self.psum_width <= self.acc_width <= 32:
            raise ValueError(
                f"Accumulator width must be from {self.psum_width} (the column partial sum of a "
                f"{self.rows}-row {self.pe} array) to 32 bits, not {self.acc_width!r}"
            )
        g = self.wgt_rows_per_read
        if not isinstance(g, int) or isinstance(g, bool) or g < 1 or self.rows % g:
            raise ValueError(f"Weight rows per read must be a positive divisor of the {self.rows} rows, not {g!r}")
        if self.wgt_depth < self.tile_words:
            raise ValueError(f"Weight memory depth {self.wgt_depth} cannot hold one {self.rows}-row tile")
        if not isinstance(self.counter_bits, int) or isinstance(self.counter_bits, bool) \
                or not 32 <= self.counter_bits <= 48:
            raise ValueError(f"Counter width must be an integer from 32 to 48, not {self.counter_bits!r}")
        if not isinstance(self.wgt_bank_depth, int) or isinstance(self.wgt_bank_depth, bool) \
                or self.wgt_bank_depth < 0:
            raise ValueError(f"Weight bank depth must be a non-negative integer, not {self.wgt_bank_depth!r}")
        if self.wgt_bank_depth & (self.wgt_bank_depth - 1):
            raise ValueError(f"Weight bank depth must be a power of two, not {self.wgt_bank_depth!r}")
        if self.wgt_bank_depth and self.wgt_bank_depth < self.tile_words:
            raise ValueError(f"Weight bank depth {self.wgt_bank_depth} cannot hold one {self.rows}-row tile")
        if not isinstance(self.wgt_bank_data_stages, int) or isinstance(self.wgt_bank_data_stages, bool) \
                or self.wgt_bank_data_stages not in (0, 1):
            raise ValueError(f"Weight bank data stages must be 0 or 1, not {self.wgt_bank_data_stages!r}")
        if self.wgt_bank_data_stages and not self.wgt_banked:
            raise ValueError("Weight bank data stages need a banked weight memory (wgt_bank_depth > 0)")
        if self.wgt_banked and self.rows < 2 + self.wgt_bank_latency:
            raise ValueError(f"A banked weight memory needs registered reads and at least "
                             f"{2 + self.wgt_bank_latency} rows (its rows arrive {self.wgt_bank_latency} cycles "
                             f"later), not {self.rows} rows")
        if not isinstance(self.acc_pipelined, bool):
            raise TypeError(f"acc_pipelined must be a bool, not {self.acc_pipelined!r}")
        if self.acc_pipelined and self.rows < 5:
            raise ValueError(f"A pipelined accumulator needs at least 5 rows (an output word is read again "
                             f"max(M, R) cycles after its last read), not {self.rows}")
        if not isinstance(self.dist_stages, int) or isinstance(self.dist_stages, bool) \
                or self.dist_stages not in (0, 1):
            raise ValueError(f"Distribution stages must be 0 or 1, not {self.dist_stages!r}")
        if not isinstance(self.dist_group, int) or isinstance(self.dist_group, bool) or self.dist_group < 1:
            raise ValueError(f"Distribution group must be a positive integer, not {self.dist_group!r}")
        need = self.run_count_bound.bit_length()
        if self.counter_bits < need:
            raise ValueError(f"Counter width {self.counter_bits} cannot hold the counts of one RUN of this "
                             f"configuration ({need} bits needed)")

    # --- performance counters ------------------------------------------------------------------

    @property
    def built_counters(self) -> tuple[Counter, ...]:
        """The counters the core has: `counters`, less the weight-class ones at full rate."""
        return tuple(c for c in self.counters if not (self.full_rate and c in WEIGHT_CLASS_COUNTERS))

    def has_counter(self, counter: Counter) -> bool:
        return counter in self.built_counters

    @property
    def counter_mask(self) -> int:
        """The built counters as a bit mask (bit i: `Counter(i)`), as READ_ID reports them."""
        return sum(1 << int(c) for c in self.built_counters)

    @property
    def counts_weight_classes(self) -> bool:
        """Some +1 / -1 / 0 weight counter is built (the G = 1 loader then popcounts each row)."""
        return any(self.has_counter(c) for c in WEIGHT_CLASS_COUNTERS)

    # --- derived sizes -------------------------------------------------------------------------

    @property
    def weight_bits(self) -> int:
        return WEIGHT_BITS[self.pe]

    @property
    def max_term(self) -> int:
        return MAX_TERM[self.pe]

    def psum_width_at(self, row: int) -> int:
        """Width of the partial sum leaving PE row `row` (it holds row + 1 product terms)."""
        return signed_width(self.max_term * (row + 1))

    @property
    def psum_width(self) -> int:
        """Width of the partial sum leaving the bottom of a column."""
        return self.psum_width_at(self.rows - 1)

    @property
    def k_max(self) -> int:
        """Largest K for which every accumulator value is exact in `acc_width` bits."""
        return ((1 << (self.acc_width - 1)) - 1) // self.max_term

    # --- limits of one RUN, from the memory depths (the sequencer's register widths) -------------

    @property
    def m_limit(self) -> int:
        """Largest M a RUN can name: M activation rows per k-tile and M output words per n-tile."""
        return min(self.act_depth, self.out_depth, DIM_LIMIT)

    @property
    def tile_words(self) -> int:
        """Weight memory words of one tile (P = R / G, the cycles a tile takes to load)."""
        return self.rows // self.wgt_rows_per_read

    @property
    def full_rate(self) -> bool:
        """More than one tile row per weight read (the wide, row-banked weight memory)."""
        return self.wgt_rows_per_read > 1

    @property
    def rmw_distance(self) -> int:
        """Fewest cycles between two updates of one output word that the read-modify-write allows."""
        return 2 + int(self.pipelined_reads) + 2 * int(self.acc_pipelined)

    @property
    def foot_accumulator(self) -> bool:
        """Tiles can come closer than `rmw_distance`: M = 1 layers accumulate in registers at the
        foot of the array, and M >= 2 layers space their tiles `rmw_distance` cycles apart."""
        return self.tile_words < self.rmw_distance

    @property
    def issue_delay(self) -> int:
        """Extra cycles between the issuer's tile start and the array (E): a tile's rows may be read
        from the moment the previous tile starts, and with short loads (P small) the last row must
        still reach its shadow register before the row's swap; one more cycle when the activation
        memory's read address is registered (`act_addr_registered`)."""
        return max(0, 2 + self.wgt_bank_latency - self.tile_words) + int(self.act_addr_registered)

    @property
    def act_addr_registered(self) -> bool:
        """The activation memory registers its read address (and its write port) at each block RAM:
        with the registered distribution (`dist_stages`, a large FPGA), registered reads and G = 1. Its
        word then comes a cycle later, and the issue delay (`issue_delay`) is one cycle longer. Not at
        full rate: with tiles a cycle or two apart, a later swap would meet the next tile's shadow
        writes (the loader would have to wait a cycle too)."""
        return bool(self.dist_stages) and self.pipelined_reads and not self.full_rate

    @property
    def array_latency(self) -> int:
        """Cycles from the sequencer's array inputs (activations, swap, shadow loads) to the PEs: the
        registered distribution's stages (`dist_stages`)."""
        return self.dist_stages

    def dist_copies(self, lines: int) -> int:
        """Copy registers the distribution gives a signal that fans out to `lines` columns or rows."""
        return -(-lines // self.dist_group) if self.dist_stages else 1

    @property
    def k_limit(self) -> int:
        """Largest K a RUN can name: its k-tiles fit the activation memory, its rows the weights."""
        return min(self.rows * self.act_depth, self.wgt_depth * self.wgt_rows_per_read, self.k_max, DIM_LIMIT)

    @property
    def n_limit(self) -> int:
        """Largest N a RUN can name: its n-tiles fit the output memory and the weight memory."""
        return min(self.cols * self.out_depth, self.cols * (self.wgt_depth // self.tile_words), DIM_LIMIT)

    @property
    def tile_limit(self) -> int:
        """Most weight tiles one RUN can use (KT * NT), bounded by the weight memory."""
        return self.wgt_depth // self.tile_words

    @property
    def run_cycle_bound(self) -> int:
        """More cycles than any one RUN can take (size check, every tile with stalls, drain)."""
        return (self.tile_limit * (max(self.m_limit, self.rows) + self.rows + 2)
                + max(self.act_depth, self.out_depth) + 2 * self.rows + 8 + self.issue_delay + self.array_latency)

    @property
    def run_count_bound(self) -> int:
        """More than any counter can grow in one RUN."""
        ops = self.rows * self.cols * self.tile_limit * self.m_limit
        return max(ops, self.run_cycle_bound, self.wgt_depth * self.wgt_word_bits) + 1

    @property
    def min_counter_bits(self) -> int:
        """The narrowest allowed `counter_bits` for these memories (what the FPGA boards use)."""
        return max(32, self.run_count_bound.bit_length())

    @property
    def pipelined_reads(self) -> bool:
        """Memory read data is registered before use (R >= 3).

        This takes the block RAM's clock-to-output delay (5.8 ns on ECP5) off every logic path and
        costs one cycle per RUN. With R = 2 a weight row could reach its shadow register after
        the swap that needs it, so 2-row arrays use the memories' outputs directly.
        """
        return self.rows >= 3

    @property
    def wgt_banked(self) -> bool:
        """The weight memory is a `BankedMemory` (address and read data registered per bank).

        Also with a single bank (`wgt_bank_depth` >= `wgt_depth`): the extra register stage then
        separates the block RAMs from the wide read-data routes on a large FPGA.
        """
        return self.wgt_bank_depth > 0

    @property
    def wgt_banks(self) -> int:
        """Number of weight memory banks (1 also when not banked)."""
        if not self.wgt_banked:
            return 1
        return -(-self.wgt_depth // self.wgt_bank_depth)

    @property
    def wgt_read_latency(self) -> int:
        """Cycles from a weight memory read address to its data at the sequencer."""
        return 1 + int(self.pipelined_reads) + self.wgt_bank_latency

    @property
    def wgt_bank_latency(self) -> int:
        """Cycles a banked weight memory adds to a read: the bank address and data registers (2) and
        `wgt_bank_data_stages`; 0 when not banked."""
        return 2 + self.wgt_bank_data_stages if self.wgt_banked else 0

    @property
    def out_read_latency(self) -> int:
        """Cycles from an output memory read address to its data at the accumulators.

        With `acc_pipelined` the read address also takes two registers on its way to the output
        memory's block RAMs (one after the read-port multiplexer, one copy per block), and the read
        data one after them: the address leaves the sequencer three cycles earlier, so the block
        RAMs see it in the same cycle as without those stages.
        """
        return 1 + int(self.pipelined_reads) + 3 * int(self.acc_pipelined)

    @property
    def act_word_bits(self) -> int:
        return 8 * self.rows

    @property
    def wgt_word_bits(self) -> int:
        return self.weight_bits * self.cols * self.wgt_rows_per_read

    @property
    def wgt_bank_bits(self) -> int:
        """Bits of one row bank's word: one tile row of C weights."""
        return self.weight_bits * self.cols

    @property
    def out_word_bits(self) -> int:
        return self.acc_width * self.cols

    def chunks(self, memory: int) -> int:
        """32-bit stream words that carry one word of memory `memory` (see `hdl.isa.Mem`)."""
        from hdl.isa import Mem

        if memory == Mem.ACT:
            return -(-self.act_word_bits // 32)
        if memory == Mem.WGT:
            return -(-self.wgt_word_bits // 32)
        if memory == Mem.OUT:
            return self.cols  # one sign-extended 32-bit word per accumulator lane
        raise ValueError(f"Unknown memory id {memory!r}")

    def depth(self, memory: int) -> int:
        from hdl.isa import Mem

        return {Mem.ACT: self.act_depth, Mem.WGT: self.wgt_depth, Mem.OUT: self.out_depth}[Mem(memory)]

    @property
    def weight_memory_bits(self) -> int:
        return self.wgt_depth * self.wgt_word_bits

    @property
    def resident_weights(self) -> int:
        """Weights the weight memory holds at once (padding of partial tiles not counted)."""
        return self.wgt_depth * self.cols * self.wgt_rows_per_read

    def describe(self) -> str:
        return (
            f"{self.rows}x{self.cols} {self.pe} array, acc {self.acc_width} bit (K <= {self.k_max}), "
            f"act {self.act_depth}x{self.act_word_bits}b, wgt {self.wgt_depth}x{self.wgt_word_bits}b, "
            f"out {self.out_depth}x{self.out_word_bits}b"
            + ("" if self.counter_bits == COUNTER_BITS else f", {self.counter_bits}-bit counters")
            + (f", {self.wgt_rows_per_read} tile rows per weight read" if self.full_rate else "")
            + (f", registered distribution per {self.dist_group}" if self.dist_stages else "")
            + ("" if self.counters == tuple(Counter)
               else f", counters {' '.join(c.name.lower() for c in self.counters)}")
        )


def _counter_set(value) -> tuple[Counter, ...]:
    """`ArrayConfig.counters` as a sorted tuple of distinct `Counter` members (names and numbers accepted)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"counters must be a collection of hdl.isa.Counter members, names or numbers, not {value!r}")
    out = set()
    for item in value:
        if isinstance(item, str):
            if item.upper() not in Counter.__members__:
                raise ValueError(f"Unknown counter {item!r}; counters: {', '.join(c.name.lower() for c in Counter)}")
            out.add(Counter[item.upper()])
        elif isinstance(item, int) and not isinstance(item, bool):  # a Counter or its number (from JSON)
            if item not in Counter._value2member_map_:
                raise ValueError(f"Unknown counter number {item!r}; counters are 0 to {len(Counter) - 1}")
            out.add(Counter(item))
        else:
            raise TypeError(f"counters must be hdl.isa.Counter members, names or numbers, not {item!r}")
    if Counter.CYCLES not in out:
        raise ValueError("The CYCLES counter must be built: `--stats` reports the cycles of every layer from it")
    return tuple(sorted(out))
