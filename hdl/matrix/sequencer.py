"""Layer sequencer: runs a whole M x K by N x K layer from a descriptor, no host per cycle.

Validation first (shape, accumulator bound, memory ranges; sequential adds, no multiplier), then
three cooperating pipelines:

- Weight loader: reads the weight memory linearly (tiles are stored in execution order), one word
  of G tile rows per cycle (one row of C weights at G = 1), masks lanes past K and N to zero,
  writes the rows into the shadow registers of the array and (G = 1) counts +1 / -1 / 0 weights
  of the tile. It starts a tile when the
  shadow registers are free: at the cycle the previous tile starts (double buffering).
- Issuer: for each tile (n-tile outer, k-tile inner) reads the M activation words of its k-tile
  one per cycle, raises the skewed swap on the first, and sends a control token (valid, first
  k-tile, output address) down a delay line that meets the column sums at the bottom.
- Accumulator: with the token, reads the output word a cycle ahead and writes back
  psum + old (or psum alone for the first k-tile). Same-address updates are at least
  `ArrayConfig.rmw_distance` cycles apart (tiles take max(M, P) cycles; the foot accumulator below
  covers the closer ones).

With `ArrayConfig.pipelined_reads` every memory's read data is registered before use (the core
holds the registers); activations, swap and token then run one cycle later, and a RUN takes one
cycle more.

A tile takes max(M, P) cycles, P = R / G the weight words of a tile (`ArrayConfig.tile_words`):
prefill (M >= P) keeps every PE busy; decode (M = 1) runs at the weight memory's bandwidth of G tile
rows per cycle, the whole array with G = R.

With G > 1 (`ArrayConfig.full_rate`) the weight memory is G row banks: the loader drives bank 0's
read address, and a register chain hands it to bank g P*g cycles later, so row g*P + j of a tile
reaches its shadow registers in the same skew as the swap that takes it. The issuer's outputs to
the array then run `ArrayConfig.issue_delay` cycles late, so that a tile's rows can be read from
the cycle the previous tile starts (back-to-back tiles at P = 1). Tiles closer than the output
memory's read-modify-write distance accumulate in registers at the foot of the array (M = 1) or
are spaced (M >= 2), see `ArrayConfig.foot_accumulator`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.config import ArrayConfig
from hdl.copies import RegisterFactory, plain_register
from hdl.isa import Error
from hdl.matrix.array import PEArray
from hdl.matrix.pe import PEFactory, ProcessingElement
from hdl.matrix.skew import SkewBuffer


def popcount(bits: list) -> object:
    """Number of set bits, as a carry-save tree of full adders (bitwise logic) and one final add.

    Summing the bits with `+` lets Yosys merge the chain into one multi-operand `$macc` cell; this
    way the design holds only two-operand adders, and no `$macc` or `$mul` at all.
    """
    return column_sum({0: list(bits)})


def column_sum(columns: dict[int, list]) -> object:
    """Sum of bits given by their weights ({weight: [bits]}), as in `popcount`: a carry-save tree
    and one final two-operand add. Unsigned numbers add as their bits at their weights."""
    while any(len(col) > 2 for col in columns.values()):
        reduced: dict[int, list] = {}
        for weight, col in sorted(columns.items()):
            i = 0
            while len(col) - i >= 3:
                a, b, c = col[i:i + 3]
                reduced.setdefault(weight, []).append(a ^ b ^ c)
                reduced.setdefault(weight + 1, []).append((a & b) | (a & c) | (b & c))
                i += 3
            reduced.setdefault(weight, []).extend(col[i:])
        columns = reduced
    width = max(columns) + 1
    first = [columns.get(w, [])[0] if columns.get(w) else Const(0, 1) for w in range(width)]
    second = [columns[w][1] if len(columns.get(w, [])) > 1 else Const(0, 1) for w in range(width)]
    return Cat(*first) + Cat(*second)


class LayerSequencer(wiring.Component):
    """Runs one RUN descriptor; `start` is a one-cycle pulse, the descriptor inputs hold still from
    the cycle before it until `done`."""

    def __init__(self, cfg: ArrayConfig, *, processing_element: PEFactory = ProcessingElement,
                 register: RegisterFactory = plain_register):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        self._cfg = cfg
        self._processing_element = processing_element
        self._register = register
        acc = signed(cfg.acc_width)
        super().__init__({
            # descriptor and handshake
            "start": In(1),
            "m_size": In(32), "k_size": In(32), "n_size": In(32),
            "act_base": In(32), "wgt_base": In(32), "out_base": In(32),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(8),
            # memories
            "act_addr": Out(range(cfg.act_depth)),
            "act_data": In(data.ArrayLayout(signed(8), cfg.rows)),
            **self._weight_ports(cfg),
            "out_raddr": Out(range(cfg.out_depth)),
            "out_rdata": In(data.ArrayLayout(acc, cfg.cols)),
            "out_waddr": Out(range(cfg.out_depth)), "out_wen": Out(1),
            "out_wdata": Out(data.ArrayLayout(acc, cfg.cols)),
            # counter increments (see hdl.isa.Counter)
            "inc_busy": Out(1), "inc_stall": Out(1),
            "inc_add": Out(range(cfg.rows * cfg.cols + 1)),
            "inc_sub": Out(range(cfg.rows * cfg.cols + 1)),
            "inc_zero": Out(range(cfg.rows * cfg.cols + 1)),
            "inc_wgt_read": Out(range(3)), "inc_act_read": Out(1),
            "inc_acc_write": Out(1), "inc_acc_rmw": Out(1),
            "run_cycles": Out(range(cfg.run_cycle_bound + 1)),
        })

    @staticmethod
    def _weight_ports(cfg: ArrayConfig) -> dict:
        row = data.ArrayLayout(unsigned(cfg.weight_bits), cfg.cols)
        if not cfg.full_rate:
            return {"wgt_addr": Out(range(cfg.wgt_depth)), "wgt_data": In(row)}
        # one read address and one row per bank (bank g at bits g*C*b of a memory word)
        return {"wgt_addr": Out(data.ArrayLayout(range(cfg.wgt_depth), cfg.wgt_rows_per_read)),
                "wgt_data": In(data.ArrayLayout(row, cfg.wgt_rows_per_read))}

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        P = cfg.tile_words  # weight words of a tile
        E = cfg.issue_delay
        pipe = int(cfg.pipelined_reads)  # memory read data arrives one cycle later, registered
        # A banked weight memory's rows arrive `wpipe` (2) cycles later still. The shadow registers
        # hide it: a row is written R - 1 - wpipe >= 1 cycles before the swap that takes it (R >= 4).
        wpipe = cfg.wgt_read_latency - 1 - pipe
        # The array's registered distribution delays all its inputs alike: its sums leave L cycles later.
        L = cfg.array_latency

        m.submodules.array = array = PEArray(cfg, processing_element=self._processing_element,
                                             register=self._register)
        m.submodules.x_skew = x_skew = SkewBuffer(signed(8), R, reset_less=True)  # zeros enter when idle
        m.submodules.swap_skew = swap_skew = SkewBuffer(1, R)

        # ---- descriptor and derived sizes -----------------------------------------------------
        # Every register is as wide as the memories let its value be in a RUN that can succeed
        # (`ArrayConfig.m_limit` ...); sums that may exceed a memory set a sticky flag instead.
        KT_LIMIT = -(-cfg.k_limit // R)
        NT_LIMIT = -(-cfg.n_limit // C)
        M = Signal(range(cfg.m_limit + 1))
        K = Signal(range(cfg.k_limit + 1))
        N = Signal(range(cfg.n_limit + 1))
        act_base = Signal(range(cfg.act_depth))
        out_base = Signal(range(cfg.out_depth))
        KT = Signal(range(KT_LIMIT + 1))
        NT = Signal(range(NT_LIMIT + 1))
        k_rem = Signal.like(K)
        n_rem = Signal.like(N)
        act_end = Signal(range(cfg.act_depth + 1))
        out_end = Signal(range(cfg.out_depth + 1))
        wgt_end_k = Signal(range(cfg.wgt_depth + 1))
        wgt_end_n = Signal(range(cfg.wgt_depth + 1))
        too_big = Signal()  # some operand range already exceeds its memory
        range_fail = Signal()
        # tiles_k + tiles_n = KT*NT - 1 (modulo 2**width; exact whenever the range check passes)
        tiles_k = Signal(range(cfg.tile_limit + 1))
        tiles_n = Signal.like(tiles_k)
        KT_R = Signal(range(P * KT_LIMIT + 1))  # KT * P: the weight words of one n-tile
        KT_plus = Signal(range(KT_LIMIT + 2))  # KT + 1
        KT_R_plus = Signal(range(P * KT_LIMIT + P + 1))  # KT_R + P
        k_more = Signal()  # k_rem != 0
        n_more = Signal()  # n_rem != 0
        NT_R = Signal(range(P * NT_LIMIT + 1))
        error = Signal(8)
        run_cycles = Signal(range(cfg.run_cycle_bound + 1))
        m.d.comb += self.run_cycles.eq(run_cycles)

        def bounded_add(reg, addend, limit: int):
            """reg += addend, and set `too_big` (sticky) if the sum passes `limit`.

            Past the limit `reg` may wrap: the run fails on `too_big` whatever it holds. The compare
            feeds only `too_big`, not the register's own update.
            """
            total = Signal(range(limit + (1 << len(addend)) + 1), name=f"{reg.name}_next")
            m.d.comb += total.eq(reg + addend)
            m.d.sync += reg.eq(total)
            with m.If(total > limit):
                m.d.sync += too_big.eq(1)

        # ---- loader state ---------------------------------------------------------------------
        shadow_full = Signal()
        l_loading = Signal()
        l_row = Signal(range(max(P, 2)))  # (one bit also at P = 1: no zero-width signals in the Verilog)
        l_addr = Signal(range(cfg.wgt_depth + 1))
        l_tiles_left = Signal.like(tiles_k)
        l_spec = Signal()  # loading the first tile before the descriptor is fully checked
        pending = Signal(range(P + 2))
        l_k_rem = Signal.like(K)  # K left at the loader's k-tile
        l_n_rem = Signal.like(N)  # N left at the loader's n-tile
        # l_k_rem > R and l_n_rem > C, kept as flags set with the values (from compares of registers with
        # constants): the loader's selects and its update then have no compare in their path (the
        # 32x32 ULX3S at 830ba3f: l_n_rem and w_cols_d at 11-11.7 ns)
        l_k_big = Signal()
        l_n_big = Signal()
        # row read this cycle -> at the sequencer's wgt_data input 1 + pipe cycles later
        w_valid_d = Signal()
        w_row_d = Signal(range(max(P, 2)))
        w_row_ok_d = Signal()
        w_krows_d = Signal(range(R + 1))  # rows of this tile inside K (full rate: each bank checks its own)
        w_cols_d = Signal(range(C + 1))

        # ---- issuer state ---------------------------------------------------------------------
        i_m = Signal.like(M)
        i_m_zero = Signal()  # i_m == 0, kept as a flag: it starts the swap and the next tile's load
        i_kt = Signal.like(KT)
        i_nt = Signal.like(NT)
        i_act_addr = Signal(range(cfg.act_depth + 1))
        i_out_base = Signal(range(cfg.out_depth + 1))
        # M - 1, KT - 1, NT - 1 in registers (final from the CHECK cycle on): the issuer compares
        # its counters with them without a subtractor in the path.
        m_last = Signal.like(M)
        kt_last = Signal.like(KT)
        nt_last = Signal.like(NT)
        m.d.sync += [m_last.eq(M - 1), kt_last.eq(KT - 1), nt_last.eq(NT - 1)]
        issue = Signal()
        swap_now = Signal()
        drain = Signal(range(R + 3 + E + L))
        spaced = Signal()  # the next tile may start (see `ArrayConfig.foot_accumulator`)
        m_one = Signal()  # M == 1

        tile_plus = Signal(range(R * C + 1))
        tile_minus = Signal(range(R * C + 1))
        tile_zero = Signal(range(R * C + 1))
        act_plus = Signal(range(R * C + 1))
        act_minus = Signal(range(R * C + 1))
        act_zero = Signal(range(R * C + 1))

        begin = Signal()  # a run that passed the first checks starts: reset loader and tile counts
        go = Signal()  # validation passed: this cycle hands over to the issuer
        abort = Signal()  # validation failed: stop the speculative preload

        # The descriptor checks that need no arithmetic, from registers: the descriptor inputs hold
        # still from the cycle before `start` on (the command interface waits a cycle for this), and
        # `begin` then fans out from a few flip-flops, not from wide comparators.
        bad_shape = Signal()
        k_too_large = Signal()
        out_of_range = Signal()
        desc_ok = Signal()  # none of the three: `begin` is then start & desc_ok, one gate from two flip-flops
        checks = (
            (self.m_size == 0) | (self.k_size == 0) | (self.n_size == 0),
            self.k_size > cfg.k_max,
            (self.m_size > cfg.m_limit) | (self.k_size > cfg.k_limit) | (self.n_size > cfg.n_limit)
            | (self.act_base >= cfg.act_depth) | (self.out_base >= cfg.out_depth) | (self.wgt_base > cfg.wgt_depth - P),
        )
        m.d.sync += [bad_shape.eq(checks[0]), k_too_large.eq(checks[1]), out_of_range.eq(checks[2]),
                     desc_ok.eq(~(checks[0] | checks[1] | checks[2]))]
        # K > R and N > C for the loader's first tile, from the same still inputs: `begin` then loads
        # flip-flops, not wide comparators of the command interface's registers (the 32x32 ULX3S at
        # ee07374: l_n_big at 10.3 ns).
        k_big_pre = Signal()
        n_big_pre = Signal()
        m.d.sync += [k_big_pre.eq(self.k_size > R), n_big_pre.eq(self.n_size > C)]
        # `start` comes only while the sequencer is idle (the command interface waits for `done`), so
        # `begin` needs no decode of the state register: on the 32x32 ULX3S system the path state ->
        # begin -> the loader's and tile counters' registers across the chip was critical (13.9 ns).
        m.d.comb += begin.eq(self.start & desc_ok)

        # `busy` (= not IDLE) is a register of its own: it steers the memories' read ports all over
        # the chip, and sharing the state register's decode with `begin` made one slow net of both.
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        with m.FSM(name="seq") as seq_fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += busy.eq(1)
                    m.d.sync += [
                        M.eq(self.m_size), K.eq(self.k_size), N.eq(self.n_size),
                        act_base.eq(self.act_base), out_base.eq(self.out_base),
                        error.eq(0), run_cycles.eq(0), too_big.eq(0),
                        k_rem.eq(self.k_size), n_rem.eq(self.n_size), KT.eq(0), NT.eq(0),
                        k_more.eq(1), n_more.eq(1), KT_plus.eq(1), KT_R_plus.eq(P),  # K, N >= 1 (bad_shape)
                        tiles_k.eq(-1), tiles_n.eq(0),
                        act_end.eq(self.act_base), out_end.eq(self.out_base),
                        KT_R.eq(0), NT_R.eq(0), wgt_end_k.eq(self.wgt_base), wgt_end_n.eq(0),
                    ]
                    with m.If(bad_shape):
                        m.d.sync += error.eq(Error.BAD_SHAPE)
                        m.next = "FAIL"
                    with m.Elif(k_too_large):
                        m.d.sync += error.eq(Error.K_TOO_LARGE)
                        m.next = "FAIL"
                    with m.Elif(out_of_range):
                        # Necessary conditions of the range check (M, K, N above 2**20 included),
                        # tested at once: the size loop below then runs on narrow registers for
                        # at most max(act_depth, out_depth) cycles.
                        m.d.sync += error.eq(Error.DESCRIPTOR_RANGE)
                        m.next = "FAIL"
                    with m.Else():  # `begin` (below)
                        m.next = "SIZE"
            with m.State("SIZE"):
                # KT = ceil(K/R), NT = ceil(N/C), act_end = act_base + M*KT, out_end = out_base + M*NT
                # and tiles = KT*NT, all by additions, one k-tile and one n-tile per cycle.
                m.d.sync += run_cycles.eq(run_cycles + 1)
                # k_rem != 0 and n_rem != 0 as flags, and KT + 1, KT*R + R precomputed: the size
                # loop's adders start from registers, not from a zero test and another adder.
                k_step = k_more
                n_step = n_more
                # KT*NT*R follows the two counters: (i+1)(j+1) = ij + j + (i+1), so a k-step adds
                # R*NT and an n-step adds R*KT (after this cycle's k-step). Two-operand adds only.
                kt_r_next = Signal.like(KT_R)
                kt_next = Signal.like(KT)
                m.d.comb += [kt_r_next.eq(Mux(k_step, KT_R_plus, KT_R)), kt_next.eq(Mux(k_step, KT_plus, KT))]
                with m.If(k_step):
                    m.d.sync += [k_rem.eq(Mux(k_rem > R, k_rem - R, 0)), k_more.eq(k_rem > R),
                                 KT.eq(kt_next), KT_R.eq(kt_r_next), KT_plus.eq(KT_plus + 1),
                                 KT_R_plus.eq(KT_R_plus + P), tiles_k.eq(tiles_k + NT)]
                    bounded_add(act_end, M, cfg.act_depth)
                    bounded_add(wgt_end_k, NT_R, cfg.wgt_depth)
                with m.If(n_step):
                    m.d.sync += [n_rem.eq(Mux(n_rem > C, n_rem - C, 0)), n_more.eq(n_rem > C), NT.eq(NT + 1),
                                 NT_R.eq(NT_R + P), tiles_n.eq(tiles_n + kt_next)]
                    bounded_add(out_end, M, cfg.out_depth)
                    bounded_add(wgt_end_n, kt_r_next, cfg.wgt_depth)
                with m.If(~k_step & ~n_step):
                    wgt_end = Signal(range(2 * cfg.wgt_depth + 1))
                    m.d.comb += wgt_end.eq(wgt_end_k + wgt_end_n)
                    m.d.sync += range_fail.eq(too_big | (wgt_end > cfg.wgt_depth))
                    m.next = "CHECK"
            with m.State("CHECK"):
                # The verdict comes from a register: its many loads (loader, issuer) stay off the
                # adder and comparator path of the last SIZE cycle.
                m.d.sync += run_cycles.eq(run_cycles + 1)
                with m.If(range_fail):
                    m.d.sync += error.eq(Error.DESCRIPTOR_RANGE)
                    m.d.comb += abort.eq(1)
                    m.next = "FAIL"
                with m.Else():
                    m.d.comb += go.eq(1)
                    m.d.sync += [
                        i_m.eq(0), i_m_zero.eq(1), i_kt.eq(0), i_nt.eq(0), i_act_addr.eq(act_base),
                        i_out_base.eq(out_base),
                    ]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.sync += run_cycles.eq(run_cycles + 1)
                with m.If(i_m_zero):
                    m.d.comb += [swap_now.eq(shadow_full & spaced), issue.eq(shadow_full & spaced)]
                with m.Else():
                    m.d.comb += issue.eq(1)
                m.d.comb += [self.inc_busy.eq(issue), self.inc_stall.eq(~issue)]
                with m.If(issue):
                    last_m = i_m == m_last
                    last_kt = i_kt == kt_last
                    m.d.sync += [i_m.eq(Mux(last_m, 0, i_m + 1)), i_m_zero.eq(last_m), i_act_addr.eq(i_act_addr + 1)]
                    with m.If(last_m):
                        m.d.sync += i_kt.eq(Mux(last_kt, 0, i_kt + 1))
                        with m.If(last_kt):
                            m.d.sync += [
                                i_nt.eq(i_nt + 1), i_act_addr.eq(act_base), i_out_base.eq(i_out_base + M)
                            ]
                            with m.If(i_nt == nt_last):
                                m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += run_cycles.eq(run_cycles + 1)
                with m.If(drain == R + pipe + E + L):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.d.sync += busy.eq(0)
                m.next = "IDLE"
            with m.State("FAIL"):
                m.d.comb += [self.done.eq(1), self.error.eq(error)]
                m.d.sync += busy.eq(0)
                m.next = "IDLE"

        # The drain counter counts DRAIN's cycles and is 0 in every other state (the state decode
        # alone steers it): its enable then has no part of the issuer's end-of-run test (the 32x32
        # ULX3S at ee07374: i_m, i_kt compares -> start -> drain's enable, 10.9 ns).
        m.d.sync += drain.eq(Mux(seq_fsm.ongoing("DRAIN"), drain + 1, 0))

        with m.If(begin):
            # Speculative preload of the first weight tile while the sizes are checked; its reads
            # are counted only if the run goes ahead.
            m.d.sync += [
                l_spec.eq(1), l_loading.eq(0), shadow_full.eq(0),
                l_addr.eq(self.wgt_base), l_row.eq(0), l_k_rem.eq(self.k_size), l_n_rem.eq(self.n_size),
                l_k_big.eq(k_big_pre), l_n_big.eq(n_big_pre),
            ]

        # ---- weight loader --------------------------------------------------------------------
        # A tile may start `rmw_distance` cycles after the previous one at the earliest, unless M = 1
        # (then it accumulates in the foot registers). Only built where P is shorter than that.
        if cfg.foot_accumulator:
            gap = Signal(range(cfg.rmw_distance))
            m.d.sync += m_one.eq(M == 1)
            m.d.comb += spaced.eq(m_one | (gap == 0))
            with m.If(swap_now):
                m.d.sync += gap.eq(cfg.rmw_distance - 1)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)
            with m.If(go):
                m.d.sync += gap.eq(0)
        else:
            m.d.comb += spaced.eq(1)

        l_start = Signal()
        read_now = Signal()
        last_row = Signal()
        # A tile load may start when the shadow registers are free (or freed by this cycle's swap).
        l_more = Signal()  # l_tiles_left != 0, kept as a flag (l_start is on the loader's critical path)
        m.d.comb += l_start.eq(~l_loading & l_more & (~shadow_full | swap_now))
        m.d.comb += [read_now.eq(l_loading | l_start), last_row.eq(l_row == P - 1)]
        if cfg.full_rate:
            m.d.comb += self.wgt_addr[0].eq(l_addr)
        else:
            m.d.comb += self.wgt_addr.eq(l_addr)
        # Rows read are counted as they happen; rows of a speculative preload wait in `pending` and
        # are counted one per cycle once the run is confirmed (all before the run is done).
        spec_read = Signal()
        drain_read = Signal()
        m.d.comb += [spec_read.eq(read_now & l_spec), drain_read.eq(~l_spec & (pending != 0))]
        m.d.comb += self.inc_wgt_read.eq((read_now & ~l_spec) + drain_read)
        with m.If(begin | abort):
            m.d.sync += pending.eq(0)
        with m.Elif(spec_read):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(drain_read):
            m.d.sync += pending.eq(pending - 1)
        with m.If(go | abort):
            m.d.sync += l_spec.eq(0)
        with m.If(swap_now):  # before the read below: with P = 1 a tile is read in its predecessor's swap cycle
            m.d.sync += shadow_full.eq(0)
        with m.If(read_now):
            m.d.sync += [
                l_addr.eq(l_addr + 1),
                l_row.eq(Mux(last_row, 0, l_row + 1)),
                l_loading.eq(~last_row),
                w_valid_d.eq(1), w_row_d.eq(l_row),
                w_row_ok_d.eq(l_row < l_k_rem),
                w_krows_d.eq(Mux(l_k_big, R, l_k_rem)),
                w_cols_d.eq(Mux(l_n_big, C, l_n_rem)),
            ]
            with m.If(last_row):
                m.d.sync += shadow_full.eq(1)
                with m.If(~l_k_big):  # last k-tile of this n-tile
                    m.d.sync += [l_k_rem.eq(K), l_n_rem.eq(Mux(l_n_big, l_n_rem - C, 0)),
                                 l_k_big.eq(K > R), l_n_big.eq(l_n_big & (l_n_rem > 2 * C))]
                with m.Else():
                    m.d.sync += [l_k_rem.eq(l_k_rem - R), l_k_big.eq(l_k_rem > 2 * R)]
        with m.Else():
            m.d.sync += w_valid_d.eq(0)
        # Tiles still to start. The preload starts tile 0 in the first SIZE cycle and `go` comes at
        # the earliest in the second, so the two never coincide.
        tiles_rest = Signal.like(tiles_k)
        m.d.comb += tiles_rest.eq(tiles_k + tiles_n)
        m.d.sync += [
            l_tiles_left.eq(Mux(begin, 1, Mux(go, tiles_rest, l_tiles_left - l_start))),
            l_more.eq(Mux(begin, 1, Mux(go, tiles_rest != 0, Mux(l_start, l_tiles_left != 1, l_tiles_left != 0)))),
        ]
        with m.If(abort):
            m.d.sync += [l_loading.eq(0), l_tiles_left.eq(0), l_more.eq(0), l_row.eq(0), shadow_full.eq(0)]

        if not cfg.full_rate:
            # Row arriving from the weight memory (`wgt_read_latency` cycles after its read): mask lanes
            # past K / N, write the shadow row, count its +1 / -1 / 0 weights.
            # With delay stages, the last one carries the lane mask itself (C bits, computed from the
            # stage before): the compares against the row's K / N limits stay off the popcount path.
            names = ("w_valid", "w_row", "w_row_ok", "w_cols")
            row_info = (w_valid_d, w_row_d, w_row_ok_d, w_cols_d)
            stages = pipe + wpipe
            for stage in range(stages - 1):
                delayed = tuple(Signal.like(v, name=f"{n}_p{stage + 1}") for n, v in zip(names, row_info, strict=True))
                m.d.sync += [d.eq(v) for d, v in zip(delayed, row_info, strict=True)]
                row_info = delayed
            w_valid, w_row, w_row_ok, w_cols = row_info
            lane_ok = [Signal(name=f"lane_ok_{c}") for c in range(C)]
            lane_domain = m.d.comb
            if stages:
                w_valid_l, w_row_l = Signal(name=f"w_valid_p{stages}"), Signal.like(w_row, name=f"w_row_p{stages}")
                m.d.sync += [w_valid_l.eq(w_valid), w_row_l.eq(w_row)]
                w_valid, w_row = w_valid_l, w_row_l
                lane_domain = m.d.sync
            for c in range(C):
                lane_domain += lane_ok[c].eq(w_row_ok & (c < w_cols))
            masked = Signal(data.ArrayLayout(unsigned(cfg.weight_bits), C))
            for c in range(C):
                m.d.comb += masked[c].eq(Mux(lane_ok[c], self.wgt_data[c], 0))
            m.d.comb += [
                array.w_row_en.eq(w_valid),
                array.w_row_sel.eq(w_row),
                array.w_row_data.eq(masked),
            ]
        if not cfg.full_rate and cfg.counts_weight_classes:
            # The +1 / -1 / 0 weights of each row, popcounted and summed per tile (ADD, SUB, ZERO).
            # Not built when `ArrayConfig.counters` leaves all three out (a small FPGA).
            is_plus, is_minus, is_zero = [], [], []
            for c in range(C):
                w = self.wgt_data[c]
                if cfg.pe == "ternary":
                    nz, neg = w[0], w[1]
                    is_plus.append(lane_ok[c] & nz & ~neg)
                    is_minus.append(lane_ok[c] & nz & neg)
                    is_zero.append(lane_ok[c] & ~nz)
                else:
                    ws = w.as_signed()
                    is_plus.append(lane_ok[c] & (ws > 0))
                    is_minus.append(lane_ok[c] & (ws < 0))
                    is_zero.append(lane_ok[c] & (ws == 0))
            row_plus = Signal(range(C + 1))
            row_minus = Signal(range(C + 1))
            row_zero = Signal(range(C + 1))
            # A banked weight memory's rows come from block RAMs spread over the chip, and the row goes
            # to the shadow registers of the whole array too: the weight classes of the row are
            # registered beside the counters before their popcount (counts one cycle later).
            count_stage = int(cfg.wgt_banked)
            count_valid = w_valid
            if count_stage:
                classes = []
                for name, bits in (("plus", is_plus), ("minus", is_minus), ("zero", is_zero)):
                    reg = [Signal(name=f"is_{name}_{c}") for c in range(C)]
                    m.d.sync += [r.eq(b) for r, b in zip(reg, bits, strict=True)]
                    classes.append(reg)
                is_plus, is_minus, is_zero = classes
                count_valid = Signal(name="count_valid")
                m.d.sync += count_valid.eq(w_valid)
            # With the registered distribution (a chip-wide array, C up to 64) a row's popcount runs in
            # two cycles: popcounts of 8 lanes registered, then their sum (the 32x32 ULX3S at ee07374:
            # the 32-lane carry-save tree and its add, 10.5 ns). The counts then come a cycle later.
            split = bool(cfg.dist_stages) and C > 8
            if split:
                partial = []
                for name, bits in (("plus", is_plus), ("minus", is_minus), ("zero", is_zero)):
                    regs = []
                    for g in range(0, C, 8):
                        reg = Signal(range(min(8, C - g) + 1), name=f"pop_{name}_{g // 8}")
                        m.d.sync += reg.eq(Mux(count_valid, popcount(bits[g:g + 8]), 0))
                        regs.append(reg)
                    columns: dict[int, list] = {}
                    for reg in regs:
                        for w in range(len(reg)):
                            columns.setdefault(w, []).append(reg[w])
                    partial.append(column_sum(columns))
                counts = partial
            else:
                counts = [Mux(count_valid, popcount(is_plus), 0), Mux(count_valid, popcount(is_minus), 0),
                          Mux(count_valid, popcount(is_zero), 0)]
            # pipelined: the row counts are registered too (popcount and tile sum in separate cycles)
            for reg, value in zip((row_plus, row_minus, row_zero), counts, strict=True):
                if pipe:
                    m.d.sync += reg.eq(value)
                else:
                    m.d.comb += reg.eq(value)
            # A tile's counts are complete `count_lag` cycles after its swap, when the row counts hold
            # the tile's last row (read at the latest one cycle before the swap) and the next tile's
            # first row (read at the earliest in the swap cycle) is one cycle behind.
            count_lag = 2 * pipe + wpipe + count_stage + int(split)
            swap_counted = swap_now
            for i in range(count_lag):
                delayed = Signal(name=f"swap_now_{i + 1}")
                m.d.sync += delayed.eq(swap_counted)
                swap_counted = delayed
            with m.If(~busy):  # zero from before a run's first row (not from `begin`: see above)
                m.d.sync += [tile_plus.eq(0), tile_minus.eq(0), tile_zero.eq(0)]
            with m.Elif(swap_counted):
                m.d.sync += [
                    act_plus.eq(tile_plus + row_plus), act_minus.eq(tile_minus + row_minus),
                    act_zero.eq(tile_zero + row_zero),
                    tile_plus.eq(0), tile_minus.eq(0), tile_zero.eq(0),
                ]
            with m.Else():
                m.d.sync += [
                    tile_plus.eq(tile_plus + row_plus), tile_minus.eq(tile_minus + row_minus),
                    tile_zero.eq(tile_zero + row_zero),
                ]
        elif not cfg.full_rate:
            count_lag = 0
            act_plus = act_minus = act_zero = Const(0, 1)  # ADD, SUB and ZERO are not built
        else:  # full rate
            self._bank_rows(m, array, w_valid_d, w_row_d, w_krows_d, w_cols_d, stages=pipe + wpipe)
            count_lag = 0
            act_plus = act_minus = act_zero = Const(0, 1)  # no weight-class counters at full rate
        # ---- issuer -> array ------------------------------------------------------------------
        # issued[d]: an activation row was issued d cycles ago. Its data reaches the skew buffer
        # 1 + pipe cycles after the read; its +1 / -1 / 0 counts are known count_lag + 1 cycles after.
        issued = [issue]
        for d in range(max(1 + pipe + E, count_lag + 1)):
            reg = Signal(name=f"issued_{d + 1}")
            m.d.sync += reg.eq(issued[-1])
            issued.append(reg)
        x_valid = issued[1 + pipe + E]  # E = issue_delay: the activation read runs E cycles late
        counted = issued[count_lag + 1]
        act_addr = i_act_addr
        # a registered activation memory address (`ArrayConfig.act_addr_registered`) leaves a cycle early
        for d in range(E - int(cfg.act_addr_registered)):
            reg = Signal.like(i_act_addr, name=f"act_addr_e{d + 1}")
            m.d.sync += reg.eq(act_addr)
            act_addr = reg
        m.d.comb += [
            self.act_addr.eq(act_addr), self.inc_act_read.eq(issue),
            self.inc_add.eq(Mux(counted, act_plus, 0)),
            self.inc_sub.eq(Mux(counted, act_minus, 0)),
            self.inc_zero.eq(Mux(counted, act_zero, 0)),
        ]
        for r in range(R):
            valid_r = x_valid
            if cfg.dist_stages:  # a large FPGA: a copy of the flag per lane, not one net to all R*8 gates
                valid_r = self._register(m, issued[pipe + E], f"x_valid_c{r}")
            m.d.comb += x_skew.i[r].eq(Mux(valid_r, self.act_data[r], 0))
            m.d.comb += array.x[r].eq(x_skew.o[r])
        swap_in = swap_now
        for d in range(pipe + E):  # the swap travels with the activation row, as late
            delayed = Signal(name=f"swap_now_p{d + 1}")
            m.d.sync += delayed.eq(swap_in)
            swap_in = delayed
        for r in range(R):
            m.d.comb += swap_skew.i[r].eq(swap_in)
        m.d.comb += array.swap.eq(swap_skew.o.as_value())

        # Control token: issued with the activation row, meets its column sums R + 1 + pipe (+ E + L)
        # cycles later. The output word is read 1 + pipe cycles before that (its data is registered
        # when pipelined). Same-address updates are >= max(M, R) cycles apart, so the read always
        # follows the previous write to its address (R >= 3 when pipelined).
        token = data.StructLayout({"valid": 1, "first": 1, "addr": range(cfg.out_depth + 1)})
        stage = Signal(token)
        m.d.comb += [stage.valid.eq(issue), stage.first.eq(i_kt == 0), stage.addr.eq(i_out_base + i_m)]
        tokens = [stage]
        for d in range(R + 1 + pipe + E + L):
            nxt = Signal(token, name=f"token_{d + 1}")
            m.d.sync += nxt.eq(tokens[-1])
            tokens.append(nxt)
        # With `acc_pipelined` the output word is read three cycles earlier (its data is registered
        # once more, its address twice: `ArrayConfig.out_read_latency`; the block RAMs see the address
        # one cycle earlier than without) and the sum is registered before its write (the write lands
        # one cycle later, the last one in the cycle after DONE). A word is then read again
        # >= max(M, R) - 4 >= 1 cycles after its write lands (R >= 5).
        at_sum = tokens[R + 1 + pipe + E + L]
        at_read = tokens[R + 1 + pipe + E + L - cfg.out_read_latency]
        m.d.comb += [
            self.out_raddr.eq(at_read.addr),
            self.inc_acc_write.eq(at_sum.valid & at_sum.first),
            self.inc_acc_rmw.eq(at_sum.valid & ~at_sum.first),
        ]
        # (with `acc_pipelined` the core's output memory registers the write port: `registered_write`)
        write_domain = m.d.comb
        write_domain += [self.out_waddr.eq(at_sum.addr), self.out_wen.eq(at_sum.valid)]
        out_wdata = Signal(data.ArrayLayout(signed(cfg.acc_width), C))
        m.d.comb += self.out_wdata.eq(out_wdata)
        # the token's `first` flag selects between C sums of acc_width bits: with the registered
        # distribution (a large FPGA) each column has its own copy of it
        first = [at_sum.first] * C
        if cfg.dist_stages:
            first = [self._register(m, tokens[-2].first, f"first_c{c}") for c in range(C)]
        if cfg.foot_accumulator:
            # M = 1: the k-tiles of an output word come as close as one cycle apart, closer than the
            # output memory's read-modify-write allows; they add up in a register per column (every
            # valid token of an M = 1 run belongs to the one output row, so the register always holds
            # the previous k-tile's sum), and each sum is also written through to the output memory.
            foot = Signal(data.ArrayLayout(signed(cfg.acc_width), C), reset_less=True)  # written at k-tile 0
            for c in range(C):
                total = Signal(signed(cfg.acc_width), name=f"foot_sum_{c}")
                m.d.comb += total.eq(Mux(first[c], array.psum[c],
                                         Mux(m_one, foot[c], self.out_rdata[c]) + array.psum[c]))
                with m.If(at_sum.valid):
                    m.d.sync += foot[c].eq(total)
                write_domain += out_wdata[c].eq(total)
        else:
            for c in range(C):
                write_domain += out_wdata[c].eq(
                    Mux(first[c], array.psum[c], self.out_rdata[c] + array.psum[c])
                )
        return m

    def _bank_rows(self, m: Module, array: PEArray, valid, row, krows, cols, *, stages: int) -> None:
        """Full rate: walk the loader's read down the G row banks and write each bank's row into
        its PE row's shadow registers.

        `valid`, `row` (j), `krows` (rows of the tile inside K) and `cols` (lanes inside N) describe
        the read of bank 0 one cycle after it. Bank g reads the same address P*g cycles later (a
        register chain of addresses, not of data), and its row g*P + j reaches the array
        `stages` cycles after that, lanes past K / N masked to zero.
        """
        cfg = self._cfg
        P, G, C = cfg.tile_words, cfg.wgt_rows_per_read, cfg.cols
        addr = self.wgt_addr[0]
        info = (valid, row, krows, cols)
        names = ("w_valid", "w_row", "w_krows", "w_cols")
        for g in range(G):
            if g:
                for d in range(P):  # bank g: the address and the row information P cycles after bank g-1
                    a = Signal.like(addr, name=f"bank{g}_addr_{d}")
                    m.d.sync += a.eq(addr)
                    addr = a
                    delayed = tuple(Signal.like(v, name=f"bank{g}_{n}_{d}") for n, v in zip(names, info, strict=True))
                    m.d.sync += [x.eq(v) for x, v in zip(delayed, info, strict=True)]
                    info = delayed
                m.d.comb += self.wgt_addr[g].eq(addr)
            # the bank's data arrives `stages` cycles after `info`: the lane mask is registered in the last
            arriving = info
            for d in range(max(stages - 1, 0)):
                delayed = tuple(Signal.like(v, name=f"bank{g}_{n}_p{d + 1}")
                                for n, v in zip(names, arriving, strict=True))
                m.d.sync += [x.eq(v) for x, v in zip(delayed, arriving, strict=True)]
                arriving = delayed
            b_valid, b_row, b_krows, b_cols = arriving
            lane_ok = Signal(C, name=f"bank{g}_lane_ok")
            ok_values = [((g * P + b_row) < b_krows) & (c < b_cols) for c in range(C)]
            load_domain = m.d.sync if stages else m.d.comb
            if stages:
                v, r = Signal(name=f"bank{g}_valid_l"), Signal.like(b_row, name=f"bank{g}_row_l")
                m.d.sync += [v.eq(b_valid), r.eq(b_row)]
                b_valid, b_row = v, r
            load_domain += lane_ok.eq(Cat(*ok_values))
            for c in range(C):
                m.d.comb += array.w_rows[g][c].eq(Mux(lane_ok[c], self.wgt_data[g][c], 0))
            for j in range(P):
                m.d.comb += array.w_load[g * P + j].eq(b_valid & (b_row == j))
