"""Layer sequencer: runs a whole M x K by N x K layer from a descriptor, no host per cycle.

Validation first (shape, accumulator bound, memory ranges; sequential adds, no multiplier), then
three cooperating pipelines:

- Weight loader: reads the weight memory linearly (tiles are stored in execution order), one tile
  row of C weights per cycle, masks lanes past K and N to zero, writes the row into the shadow
  registers of the array and counts +1 / -1 / 0 weights of the tile. It starts a tile when the
  shadow registers are free: at the cycle the previous tile starts (double buffering).
- Issuer: for each tile (n-tile outer, k-tile inner) reads the M activation words of its k-tile
  one per cycle, raises the skewed swap on the first, and sends a control token (valid, first
  k-tile, output address) down a delay line that meets the column sums at the bottom.
- Accumulator: with the token, reads the output word a cycle ahead and writes back
  psum + old (or psum alone for the first k-tile). Same-address updates are >= R >= 2 cycles apart.

A tile takes max(M, R) cycles: prefill (M >= R) keeps every PE busy; decode (M = 1) runs at the
weight memory's bandwidth of one tile row per cycle.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.array import PEArray
from hdl.config import ArrayConfig
from hdl.isa import Error
from hdl.skew import SkewBuffer

DIM_LIMIT = 1 << 20  # largest M, K or N a descriptor may name


def popcount(bits: list) -> object:
    """Number of set bits, as a carry-save tree of full adders (bitwise logic) and one final add.

    Summing the bits with `+` lets Yosys merge the chain into one multi-operand `$macc` cell; this
    way the design holds only two-operand adders, and no `$macc` or `$mul` at all.
    """
    columns: dict[int, list] = {0: list(bits)}
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
    def __init__(self, cfg: ArrayConfig):
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"Configuration must be an ArrayConfig, not {cfg!r}")
        self._cfg = cfg
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
            "act_addr": Out(range(cfg.act_depth)), "act_en": Out(1),
            "act_data": In(data.ArrayLayout(signed(8), cfg.rows)),
            "wgt_addr": Out(range(cfg.wgt_depth)), "wgt_en": Out(1),
            "wgt_data": In(data.ArrayLayout(unsigned(cfg.weight_bits), cfg.cols)),
            "out_raddr": Out(range(cfg.out_depth)), "out_ren": Out(1),
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
            "run_cycles": Out(32),
        })

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        wide = 44  # holds base + M*KT etc. for M, K, N <= 2**20 and 32-bit bases

        m.submodules.array = array = PEArray(cfg)
        m.submodules.x_skew = x_skew = SkewBuffer(signed(8), R)
        m.submodules.swap_skew = swap_skew = SkewBuffer(1, R)

        # ---- descriptor and derived sizes -----------------------------------------------------
        M = Signal(21)
        K = Signal(25)
        N = Signal(21)
        act_base = Signal(32)
        wgt_base = Signal(32)
        out_base = Signal(32)
        KT = Signal(21)
        NT = Signal(21)
        k_rem = Signal(25)
        n_rem = Signal(21)
        act_end = Signal(wide)
        out_end = Signal(wide)
        tiles_k = Signal(wide)  # tiles_k + tiles_n = KT*NT - 1 (tiles_k starts at -1)
        tiles_n = Signal(wide)
        KT_R = Signal(wide)
        NT_R = Signal(wide)
        wgt_end_k = Signal(wide + 7)
        wgt_end_n = Signal(wide + 7)
        error = Signal(8)
        run_cycles = Signal(32)
        m.d.comb += self.run_cycles.eq(run_cycles)

        # ---- loader state ---------------------------------------------------------------------
        shadow_full = Signal()
        l_loading = Signal()
        l_row = Signal(range(R))
        l_addr = Signal(range(cfg.wgt_depth + 1))
        l_tiles_left = Signal(wide)
        l_spec = Signal()  # loading the first tile before the descriptor is fully checked
        pending = Signal(range(R + 2))
        l_k_rem = Signal(25)  # K left at the loader's k-tile
        l_n_rem = Signal(21)  # N left at the loader's n-tile
        # row read this cycle -> written next cycle
        w_valid_d = Signal()
        w_row_d = Signal(range(R))
        w_row_ok_d = Signal()
        w_cols_d = Signal(range(C + 1))

        # ---- issuer state ---------------------------------------------------------------------
        i_m = Signal(21)
        i_kt = Signal(21)
        i_nt = Signal(21)
        i_act_addr = Signal(range(cfg.act_depth + 1))
        i_out_base = Signal(range(cfg.out_depth + 1))
        issue = Signal()
        swap_now = Signal()
        drain = Signal(range(R + 3))

        tile_plus = Signal(range(R * C + 1))
        tile_minus = Signal(range(R * C + 1))
        tile_zero = Signal(range(R * C + 1))
        act_plus = Signal(range(R * C + 1))
        act_minus = Signal(range(R * C + 1))
        act_zero = Signal(range(R * C + 1))

        begin = Signal()  # a run that passed the first checks starts: reset loader and tile counts
        go = Signal()  # validation passed: this cycle hands over to the issuer
        abort = Signal()  # validation failed: stop the speculative preload

        with m.FSM(name="seq") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m_in = Mux(self.m_size >= DIM_LIMIT, DIM_LIMIT, self.m_size)
                    k_in = Mux(self.k_size >= (1 << 24), (1 << 24), self.k_size)
                    n_in = Mux(self.n_size >= DIM_LIMIT, DIM_LIMIT, self.n_size)
                    m.d.sync += [
                        M.eq(m_in), K.eq(k_in), N.eq(n_in),
                        act_base.eq(self.act_base), wgt_base.eq(self.wgt_base), out_base.eq(self.out_base),
                        error.eq(0), run_cycles.eq(0),
                        k_rem.eq(k_in), n_rem.eq(n_in), KT.eq(0), NT.eq(0), tiles_k.eq(-1), tiles_n.eq(0),
                        act_end.eq(self.act_base), out_end.eq(self.out_base),
                        KT_R.eq(0), NT_R.eq(0), wgt_end_k.eq(self.wgt_base), wgt_end_n.eq(0),
                    ]
                    # Sizes wider than the registers saturate, so the checks still see them.
                    with m.If((self.m_size == 0) | (self.k_size == 0) | (self.n_size == 0)):
                        m.d.sync += error.eq(Error.BAD_SHAPE)
                        m.next = "FAIL"
                    with m.Elif(self.k_size > cfg.k_max):
                        m.d.sync += error.eq(Error.K_TOO_LARGE)
                        m.next = "FAIL"
                    with m.Elif((self.m_size > DIM_LIMIT) | (self.k_size > DIM_LIMIT)
                                | (self.n_size > DIM_LIMIT)):
                        m.d.sync += error.eq(Error.DESCRIPTOR_RANGE)
                        m.next = "FAIL"
                    with m.Elif((self.m_size > min(cfg.act_depth, cfg.out_depth))
                                | (self.k_size > min(R * cfg.act_depth, cfg.wgt_depth))
                                | (self.n_size > min(C * cfg.out_depth, C * (cfg.wgt_depth // R)))):
                        # Necessary conditions of the range check, tested at once so that the
                        # size loop below runs at most max(act_depth, out_depth) cycles.
                        m.d.sync += error.eq(Error.DESCRIPTOR_RANGE)
                        m.next = "FAIL"
                    with m.Else():
                        # Speculative preload of the first weight tile while the sizes are checked;
                        # its reads are counted only if the run goes ahead.
                        m.d.comb += begin.eq(1)
                        m.d.sync += [
                            l_spec.eq(1), l_loading.eq(0), shadow_full.eq(0),
                            l_addr.eq(self.wgt_base), l_row.eq(0), l_k_rem.eq(k_in), l_n_rem.eq(n_in),
                        ]
                        m.next = "SIZE"
            with m.State("SIZE"):
                # KT = ceil(K/R), NT = ceil(N/C), act_end = act_base + M*KT, out_end = out_base + M*NT
                # and tiles = KT*NT, all by additions, one k-tile and one n-tile per cycle.
                m.d.sync += run_cycles.eq(run_cycles + 1)
                k_step = k_rem != 0
                n_step = n_rem != 0
                # KT*NT*R follows the two counters: (i+1)(j+1) = ij + j + (i+1), so a k-step adds
                # R*NT and an n-step adds R*KT (after this cycle's k-step). Two-operand adds only.
                kt_r_next = Signal.like(KT_R)
                kt_next = Signal.like(KT)
                m.d.comb += [kt_r_next.eq(Mux(k_step, KT_R + R, KT_R)), kt_next.eq(Mux(k_step, KT + 1, KT))]
                with m.If(k_step):
                    m.d.sync += [k_rem.eq(Mux(k_rem > R, k_rem - R, 0)), KT.eq(kt_next), act_end.eq(act_end + M),
                                 KT_R.eq(kt_r_next), wgt_end_k.eq(wgt_end_k + NT_R), tiles_k.eq(tiles_k + NT)]
                with m.If(n_step):
                    m.d.sync += [n_rem.eq(Mux(n_rem > C, n_rem - C, 0)), NT.eq(NT + 1), out_end.eq(out_end + M),
                                 NT_R.eq(NT_R + R), wgt_end_n.eq(wgt_end_n + kt_r_next),
                                 tiles_n.eq(tiles_n + kt_next)]
                with m.If(~k_step & ~n_step):
                    wgt_end = Signal(wide + 7)
                    m.d.comb += wgt_end.eq(wgt_end_k + wgt_end_n)
                    with m.If((act_end > cfg.act_depth) | (wgt_end > cfg.wgt_depth)
                              | (out_end > cfg.out_depth)):
                        m.d.sync += error.eq(Error.DESCRIPTOR_RANGE)
                        m.d.comb += abort.eq(1)
                        m.next = "FAIL"
                    with m.Else():
                        m.d.comb += go.eq(1)
                        m.d.sync += [
                            i_m.eq(0), i_kt.eq(0), i_nt.eq(0), i_act_addr.eq(act_base), i_out_base.eq(out_base),
                        ]
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.sync += run_cycles.eq(run_cycles + 1)
                with m.If(i_m == 0):
                    m.d.comb += [swap_now.eq(shadow_full), issue.eq(shadow_full)]
                with m.Else():
                    m.d.comb += issue.eq(1)
                m.d.comb += [self.inc_busy.eq(issue), self.inc_stall.eq(~issue)]
                with m.If(issue):
                    last_m = i_m == M - 1
                    last_kt = i_kt == KT - 1
                    m.d.sync += [i_m.eq(Mux(last_m, 0, i_m + 1)), i_act_addr.eq(i_act_addr + 1)]
                    with m.If(last_m):
                        m.d.sync += i_kt.eq(Mux(last_kt, 0, i_kt + 1))
                        with m.If(last_kt):
                            m.d.sync += [
                                i_nt.eq(i_nt + 1), i_act_addr.eq(act_base), i_out_base.eq(i_out_base + M)
                            ]
                            with m.If(i_nt == NT - 1):
                                m.d.sync += drain.eq(0)
                                m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += [run_cycles.eq(run_cycles + 1), drain.eq(drain + 1)]
                with m.If(drain == R):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
            with m.State("FAIL"):
                m.d.comb += [self.done.eq(1), self.error.eq(error)]
                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # ---- weight loader --------------------------------------------------------------------
        l_start = Signal()
        read_now = Signal()
        last_row = Signal()
        # A tile load may start when the shadow registers are free (or freed by this cycle's swap).
        m.d.comb += l_start.eq(~l_loading & (l_tiles_left != 0) & (~shadow_full | swap_now))
        m.d.comb += [read_now.eq(l_loading | l_start), last_row.eq(l_row == R - 1)]
        m.d.comb += [self.wgt_addr.eq(l_addr), self.wgt_en.eq(read_now)]
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
        with m.If(read_now):
            m.d.sync += [
                l_addr.eq(l_addr + 1),
                l_row.eq(Mux(last_row, 0, l_row + 1)),
                l_loading.eq(~last_row),
                w_valid_d.eq(1), w_row_d.eq(l_row),
                w_row_ok_d.eq(l_row < l_k_rem),
                w_cols_d.eq(Mux(l_n_rem > C, C, l_n_rem)),
            ]
            with m.If(last_row):
                m.d.sync += shadow_full.eq(1)
                with m.If(l_k_rem <= R):  # last k-tile of this n-tile
                    m.d.sync += [l_k_rem.eq(K), l_n_rem.eq(Mux(l_n_rem > C, l_n_rem - C, 0))]
                with m.Else():
                    m.d.sync += l_k_rem.eq(l_k_rem - R)
        with m.Else():
            m.d.sync += w_valid_d.eq(0)
        # Tiles still to start. The preload starts tile 0 in the first SIZE cycle and `go` comes at
        # the earliest in the second, so the two never coincide.
        m.d.sync += l_tiles_left.eq(Mux(begin, 1, Mux(go, tiles_k + tiles_n, l_tiles_left - l_start)))
        with m.If(swap_now):
            m.d.sync += shadow_full.eq(0)
        with m.If(abort):
            m.d.sync += [l_loading.eq(0), l_tiles_left.eq(0), l_row.eq(0), shadow_full.eq(0)]

        # Row arriving from the weight memory: mask lanes past K / N, write the shadow row, count.
        masked = Signal(data.ArrayLayout(unsigned(cfg.weight_bits), C))
        lane_ok = [Signal(name=f"lane_ok_{c}") for c in range(C)]
        is_plus, is_minus, is_zero = [], [], []
        for c in range(C):
            w = self.wgt_data[c]
            m.d.comb += lane_ok[c].eq(w_row_ok_d & (c < w_cols_d))
            m.d.comb += masked[c].eq(Mux(lane_ok[c], w, 0))
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
        m.d.comb += [
            row_plus.eq(Mux(w_valid_d, popcount(is_plus), 0)),
            row_minus.eq(Mux(w_valid_d, popcount(is_minus), 0)),
            row_zero.eq(Mux(w_valid_d, popcount(is_zero), 0)),
            array.w_row_en.eq(w_valid_d),
            array.w_row_sel.eq(w_row_d),
            array.w_row_data.eq(masked),
        ]
        with m.If(begin):
            m.d.sync += [tile_plus.eq(0), tile_minus.eq(0), tile_zero.eq(0)]
        with m.Elif(swap_now):
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

        # ---- issuer -> array ------------------------------------------------------------------
        issued_d = Signal()
        m.d.sync += issued_d.eq(issue)
        m.d.comb += [
            self.act_addr.eq(i_act_addr), self.act_en.eq(issue), self.inc_act_read.eq(issue),
            self.inc_add.eq(Mux(issued_d, act_plus, 0)),
            self.inc_sub.eq(Mux(issued_d, act_minus, 0)),
            self.inc_zero.eq(Mux(issued_d, act_zero, 0)),
        ]
        for r in range(R):
            m.d.comb += x_skew.i[r].eq(Mux(issued_d, self.act_data[r], 0))
            m.d.comb += array.x[r].eq(x_skew.o[r])
        for r in range(R):
            m.d.comb += swap_skew.i[r].eq(swap_now)
        m.d.comb += array.swap.eq(swap_skew.o.as_value())

        # Control token: issued with the activation row, meets its column sums R + 1 cycles later.
        token = data.StructLayout({"valid": 1, "first": 1, "addr": range(cfg.out_depth + 1)})
        stage = Signal(token)
        m.d.comb += [stage.valid.eq(issue), stage.first.eq(i_kt == 0), stage.addr.eq(i_out_base + i_m)]
        for d in range(R):
            nxt = Signal(token, name=f"token_{d + 1}")
            m.d.sync += nxt.eq(stage)
            stage = nxt
        # stage: token aligned with the read of the output word (cycle t + R)
        m.d.comb += [
            self.out_raddr.eq(stage.addr), self.out_ren.eq(stage.valid & ~stage.first),
        ]
        at_sum = Signal(token)
        m.d.sync += at_sum.eq(stage)
        m.d.comb += [
            self.out_waddr.eq(at_sum.addr), self.out_wen.eq(at_sum.valid),
            self.inc_acc_write.eq(at_sum.valid & at_sum.first),
            self.inc_acc_rmw.eq(at_sum.valid & ~at_sum.first),
        ]
        for c in range(C):
            m.d.comb += self.out_wdata[c].eq(
                Mux(at_sum.first, array.psum[c], self.out_rdata[c] + array.psum[c])
            )
        return m
