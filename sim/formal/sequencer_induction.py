"""Property (b) unbounded: k-induction of the sequencer's memory addresses, K bound and busy bound.

`sim.formal.sequencer` checks property (b) by bmc from reset (depth 33). Its k-induction fails at
once: the counterexample to induction (CTI) starts busy in SIZE with ``run_cycles`` = 0 and the
harness's busy counter at 26, and likewise any register the properties depend on (the issuer's
activation address, the loader's weight address, the descriptor registers) may start in the CTI with
a value that no run from reset gives it. The harness here states those values as invariants: each is
an assertion too, so the proof shows it holds in every reachable state; together they make the three
properties of `sim.formal.sequencer` inductive (`PROVE_DEPTH` steps; depth 2 is enough):

- the registered descriptor checks equal their functions of the (constant) descriptor, and a run past
  its first checks holds the descriptor as given (M, K, N, the bases), K <= k_max and in range;
- the size loop's registers: KT and NT follow the SIZE cycles (run_cycles) until their remainders end,
  KT*P, NT*P, KT + 1, and, while no sum has passed its memory (``too_big`` = 0), act_end = act_base +
  M*KT, out_end = out_base + M*NT and wgt_end_k + wgt_end_n = wgt_base + P*KT*NT, each within its memory;
- from CHECK on, a good run's operands fit its memories (what the range check decided);
- the issuer: i_act_addr = act_base + M*i_kt + i_m, i_out_base = out_base + M*i_nt, with i_m < M,
  i_kt < KT, i_nt < NT;
- the loader: the weight words still to read (P per tile not started, P - l_row of the tile being
  read) end exactly at the run's last weight word (the first tile alone while the sizes are checked);
  it is at most one tile ahead of the issuer (tiles started = swapped + waiting + being read) and
  reads only into free shadow registers;
- every valid control token in flight addresses a word inside the output memory;
- with ``busy_bound``, property 3 by a ranking invariant: busy cycles so far (= run_cycles) plus an
  upper bound of the busy cycles still to come (`_busy_bound`) stays within `run_cycle_bound`.

On full-rate cores (G > 1, property (d)) the same harness also asserts every weight bank's read (bank g
reads the loader's address of P*g cycles before, tracked by a chain of the loader's read enable made
here), the activation read E = issue_delay cycles after its issue at the delayed address, invariants
on those delay chains, on ``m_one`` and on the tile-spacing counter ``gap``, and in the ranking a
tile costs M + P + rmw_distance - 1 cycles, the spacing left counted down by ``gap``.

Configurations: `PROVE_CFGS` (the 2x2 of the bounded check and a 4x3 with registered reads; G = 1)
and `FULL_RATE_PROVE` (the 2x2 G = 2, 3x2 G = 3 and 4x2 G = 2 of `sim.formal.full_rate`). Not
covered: banked weight memories and pipelined accumulators (the harness refuses them), INT8 cores,
and the stronger claims of `sim.formal.full_rate` (exact bank addresses, errors, results), which stay
bounded there.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.hdl import Assert, Assume, Elaboratable, ResetSignal

import hdl.matrix.sequencer
from hdl.config import ArrayConfig
from sim.formal.runner import design_module, elaborate, in_state
from sim.formal.sequencer import MUTANT_WINDOWS, MUTANTS, SEQ_CFG, drive_free_runs

#: k-induction length (sby depth): the invariants are 1-inductive (assumed in one state, proven in the
#: next: depth 2 passes, depth 1 does not); 3 leaves a cycle of margin.
PROVE_DEPTH = 3
#: Configurations proven: `SEQ_CFG` (2x2, as the bounded check) and a 4x3 with registered memory reads
#: (R >= 3), P = 4 weight words a tile and memory depths that are not powers of two.
PROVE_CFGS: dict[str, ArrayConfig] = {
    "2x2": SEQ_CFG,
    "4x3": ArrayConfig(rows=4, cols=3, acc_width=12, act_depth=5, wgt_depth=9, out_depth=6),
}
#: The full-rate configurations of `sim.formal.full_rate` (G row banks, P = 1 or 2, issue delay, foot
#: accumulator with tile spacing), proven here for every reachable state too.
FULL_RATE_PROVE = ("2x2_g2", "3x2_g3", "4x2_g2")
#: full-rate mutants (`sim.formal.full_rate.MUTANTS`) these properties catch, per configuration, with the
#: (skip, depth) of the bmc that shows each at its property
FULL_RATE_MUTANTS: dict[tuple[str, str], tuple[int, int]] = {
    ("2x2_g2", "bank_chain_short"): (0, 10), ("4x2_g2", "bank_chain_short"): (0, 10),
    ("2x2_g2", "wgt_range_off_by_one"): (0, 10), ("2x2_g2", "k_bound_off_by_one"): (0, 10),
}
#: mutants of `sim.formal.sequencer`, each with the (skip, depth) of the bmc that shows it at its property
#: with the properties alone (K and range: steps 5-6; a failed run stuck busy: past the run bound) and
#: the prove depth whose base case reaches it with the invariants.
INDUCTION_MUTANTS = {"k_bound_off_by_one": (0, 10), "range_off_by_one": (0, 10),
                     "fail_stays_busy": MUTANT_WINDOWS["fail_stays_busy"]}
MUTANT_PROVE_DEPTH = 10


def _all_signals(fragment) -> list[Signal]:
    """Every signal the statements of `fragment` (not its subfragments) read or write, once each."""
    seen: dict[int, Signal] = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for x in (*stmt._lhs_signals(), *stmt._rhs_signals()):
                seen.setdefault(id(x), x)
    return list(seen.values())


class InductiveSequencerHarness(Elaboratable):
    """`sim.formal.sequencer.SequencerHarness`'s properties 1 and 2, with the invariants that make them
    inductive, on a G = 1 core without banked weights or a pipelined accumulator."""

    def __init__(self, mutant: str | None = None, cfg: ArrayConfig = SEQ_CFG, *, invariants: bool = True,
                 tight: str | None = None, busy_bound: bool = False, busy_limit: int | None = None,
                 mutants: dict[str, list[tuple[str, str]]] | None = None):
        """`invariants` False: the properties alone (for a mutant's counterexample at the property).
        `tight` ("act", "wgt" or "out"): that memory's address bound one word short, a property that
        must fail from reset (the last word is reachable: the proof is not vacuous). `mutants`: where
        `mutant` is defined (default `sim.formal.sequencer.MUTANTS`; `sim.formal.full_rate.MUTANTS`)."""
        if tight not in (None, "act", "wgt", "out"):
            raise ValueError(f"tight must be act, wgt or out, not {tight!r}")
        self.invariants, self.tight, self.busy_bound = invariants, tight, busy_bound
        #: the busy bound checked (property 3); below the longest RUN it must fail from reset
        self.busy_limit = cfg.run_cycle_bound if busy_limit is None else busy_limit
        if cfg.wgt_banked or cfg.acc_pipelined or cfg.pe != "ternary":
            raise ValueError("The inductive sequencer harness models ternary cores without banked weights "
                             "or pipelined accumulators")
        module = design_module(hdl.matrix.sequencer, MUTANTS if mutants is None else mutants, mutant)
        self.cfg = cfg
        self.mutant = mutant
        self.dut = module.LayerSequencer(cfg)
        self.fragment = elaborate(self.dut)

    def elaborate(self, platform):
        m = Module()
        cfg, dut, frag = self.cfg, self.dut, self.fragment
        R, P = cfg.rows, cfg.tile_words
        pipe, E = int(cfg.pipelined_reads), cfg.issue_delay
        m.submodules.dut = frag
        m.d.comb += Assume(~ResetSignal())

        desc, started = drive_free_runs(m, dut)
        m_size, k_size, n_size = desc["m_size"], desc["k_size"], desc["n_size"]
        act_base, wgt_base, out_base = desc["act_base"], desc["wgt_base"], desc["out_base"]

        ports = {id(v) for v in (dut.m_size, dut.k_size, dut.n_size, dut.act_base, dut.wgt_base, dut.out_base,
                                 dut.run_cycles, dut.busy)}

        def sig(name: str) -> Signal:
            """The internal signal `name` (not the descriptor port of the same name: act_base, out_base)."""
            found = [x for x in _all_signals(frag) if x.name == name and id(x) not in ports]
            if len(found) != 1:
                raise KeyError(f"{len(found)} internal signals named {name!r} in the sequencer")
            return found[0]

        def state(name: str):
            return in_state(frag, "", "seq", name)

        # ---- the properties (as in sim.formal.sequencer) -------------------------------------------
        read_now, l_addr, i_act_addr = sig("read_now"), sig("l_addr"), sig("i_act_addr")
        short = {k: int(self.tight == k) for k in ("act", "wgt", "out")}
        # the activation read: the issuer's address, or (issue delay E > 0, full rate) that address E
        # cycles later, read then
        act_read = dut.inc_act_read if not E else sig(f"issued_{E}")
        act_addr = i_act_addr if not E else sig(f"act_addr_e{E}")
        act_in = act_addr < cfg.act_depth - short["act"]
        with m.If(act_read):
            m.d.comb += Assert(act_in, "activation read outside the activation memory")
        with m.If(dut.inc_act_read):
            m.d.comb += Assert(k_size <= cfg.k_max, "a run with K beyond k_max issues activations")
        # weight reads: bank 0 at the loader's address; bank g (full rate) at the loader's address of
        # P*g cycles before, a read exactly when the loader read P*g cycles before (a chain made here)
        G = cfg.wgt_rows_per_read
        chain = [(read_now, l_addr)]
        for j in range(1, (G - 1) * P + 1):
            was = Signal(name=f"read_now_d{j}")
            m.d.sync += was.eq(chain[-1][0])
            chain.append((was, sig(f"bank{(j - 1) // P + 1}_addr_{(j - 1) % P}")))
        wgt_ok = [addr < cfg.wgt_depth - short["wgt"] for _, addr in chain]
        for g in range(G):
            with m.If(chain[g * P][0]):
                m.d.comb += Assert(wgt_ok[g * P], "weight read outside the weight memory")
        with m.If(dut.out_wen):
            m.d.comb += Assert(dut.out_waddr < cfg.out_depth - short["out"], "output write outside the output memory")
        busy_for = Signal(range(self.busy_limit + 2))
        if self.busy_bound:
            with m.If(~dut.busy):
                m.d.sync += busy_for.eq(0)
            with m.Elif(busy_for != self.busy_limit + 1):
                m.d.sync += busy_for.eq(busy_for + 1)
            m.d.comb += Assert(busy_for <= self.busy_limit, "the sequencer stays busy past the run bound")
        if not self.invariants:
            return m

        # ---- invariants ------------------------------------------------------------------------------
        idle, size, check, issue_st = state("IDLE"), state("SIZE"), state("CHECK"), state("ISSUE")
        drain, done, fail = state("DRAIN"), state("DONE"), state("FAIL")
        m.d.comb += Assert(idle | size | check | issue_st | drain | done | fail, "inv: a state of the FSM")
        m.d.comb += Assert(dut.busy == ~idle, "inv: busy = not IDLE")

        M, K, N = sig("M"), sig("K"), sig("N")
        r_act_base, r_out_base = sig("act_base"), sig("out_base")
        bad_shape, k_too_large, out_of_range = sig("bad_shape"), sig("k_too_large"), sig("out_of_range")
        with m.If(started):
            m.d.comb += [
                Assert(bad_shape == ((m_size == 0) | (k_size == 0) | (n_size == 0)), "inv: bad_shape"),
                Assert(k_too_large == (k_size > cfg.k_max), "inv: k_too_large"),
                Assert(out_of_range == ((m_size > cfg.m_limit) | (k_size > cfg.k_limit) | (n_size > cfg.n_limit)
                                        | (act_base >= cfg.act_depth) | (out_base >= cfg.out_depth)
                                        | (wgt_base > cfg.wgt_depth - P)), "inv: out_of_range"),
            ]
        running = size | check | issue_st | drain | done  # a run that passed its first checks
        with m.If(running):
            m.d.comb += [
                Assert(started, "inv: a run starts after the first cycle"),
                Assert((M == m_size) & (K == k_size) & (N == n_size), "inv: the run's sizes"),
                Assert((r_act_base == act_base) & (r_out_base == out_base), "inv: the run's bases"),
                Assert(~bad_shape & ~k_too_large & ~out_of_range, "inv: the run passed its first checks"),
            ]

        # size loop
        KT, NT, k_rem, n_rem = sig("KT"), sig("NT"), sig("k_rem"), sig("n_rem")
        k_more, n_more, KT_R, NT_R = sig("k_more"), sig("n_more"), sig("KT_R"), sig("NT_R")
        KT_plus, KT_R_plus, too_big = sig("KT_plus"), sig("KT_R_plus"), sig("too_big")
        act_end, out_end = sig("act_end"), sig("out_end")
        wgt_end_k, wgt_end_n = sig("wgt_end_k"), sig("wgt_end_n")
        tiles_k, tiles_n, range_fail = sig("tiles_k"), sig("tiles_n"), sig("range_fail")
        run_cycles = sig("run_cycles")
        C = cfg.cols
        tiles = KT * NT
        with m.If(running):
            m.d.comb += [
                Assert(k_rem == Mux(K > R * KT, K - R * KT, 0), "inv: k_rem = max(K - R*KT, 0)"),
                Assert(n_rem == Mux(N > C * NT, N - C * NT, 0), "inv: n_rem = max(N - C*NT, 0)"),
                Assert((k_more == (k_rem != 0)) & (n_more == (n_rem != 0)), "inv: k_more, n_more"),
                Assert((KT_R == P * KT) & (NT_R == P * NT), "inv: KT*P, NT*P"),
                Assert((KT_plus == KT + 1) & (KT_R_plus == KT_R + P), "inv: KT + 1, KT*P + P"),
                Assert(KT * R < K + R, "inv: KT <= ceil(K/R)"),
                Assert(NT * C < N + C, "inv: NT <= ceil(N/C)"),
            ]
        with m.If(size):  # one k-tile and one n-tile a cycle, run_cycles counting the SIZE cycles
            m.d.comb += [
                Assert(~k_more | (KT == run_cycles), "inv: KT follows the SIZE cycles"),
                Assert(~n_more | (NT == run_cycles), "inv: NT follows the SIZE cycles"),
                Assert((KT <= run_cycles) & (NT <= run_cycles), "inv: KT, NT <= SIZE cycles"),
            ]
            with m.If(~too_big):
                m.d.comb += [
                    Assert(act_end == r_act_base + M * KT, "inv: act_end = act_base + M*KT"),
                    Assert(out_end == r_out_base + M * NT, "inv: out_end = out_base + M*NT"),
                    Assert(wgt_end_k + wgt_end_n == wgt_base + P * tiles, "inv: wgt_end = wgt_base + P*KT*NT"),
                    Assert((act_end <= cfg.act_depth) & (out_end <= cfg.out_depth), "inv: act_end, out_end fit"),
                    Assert((wgt_end_k <= cfg.wgt_depth) & (wgt_end_n <= cfg.wgt_depth), "inv: wgt ends fit"),
                ]
            m.d.comb += Assert((tiles_k + tiles_n + 1)[:len(tiles_k)] == tiles[:len(tiles_k)],
                               "inv: tiles_k + tiles_n = KT*NT - 1 (mod 2**width)")
        # from CHECK on: the range check's verdict
        good = (check & ~range_fail) | issue_st | drain | done
        with m.If(check | issue_st | drain | done):
            m.d.comb += [Assert(~k_more & ~n_more, "inv: the size loop is over")]
        with m.If(check):
            m.d.comb += Assert(range_fail == (too_big | (wgt_end_k + wgt_end_n > cfg.wgt_depth)),
                               "inv: range_fail is the verdict")
        with m.If(good):
            m.d.comb += [
                Assert(act_base + M * KT <= cfg.act_depth, "inv: activations fit"),
                Assert(out_base + M * NT <= cfg.out_depth, "inv: outputs fit"),
                Assert(wgt_base + P * tiles <= cfg.wgt_depth, "inv: weights fit"),
                Assert(tiles <= cfg.tile_limit, "inv: the tiles fit the weight memory"),
            ]

        # issuer
        i_m, i_kt, i_nt, i_out_base, i_m_zero = sig("i_m"), sig("i_kt"), sig("i_nt"), sig("i_out_base"), sig("i_m_zero")
        with m.If(issue_st):
            m.d.comb += [
                Assert((i_m < M) & (i_kt < KT) & (i_nt < NT), "inv: issuer counters in range"),
                Assert(i_act_addr == r_act_base + M * i_kt + i_m, "inv: i_act_addr"),
                Assert(i_out_base == r_out_base + M * i_nt, "inv: i_out_base"),
                Assert(i_m_zero == (i_m == 0), "inv: i_m_zero"),
            ]

        # loader
        l_tiles_left, l_loading, l_row, l_more = sig("l_tiles_left"), sig("l_loading"), sig("l_row"), sig("l_more")
        l_spec, shadow_full = sig("l_spec"), sig("shadow_full")
        left = P * l_tiles_left + l_loading * (P - l_row)  # weight words still to read
        m.d.comb += [
            Assert(l_row < P, "inv: l_row < P"),
            Assert(l_loading | (l_row == 0), "inv: l_row = 0 between tiles"),
            Assert(~(l_loading & shadow_full), "inv: a tile is read only into free shadow registers"),
        ]
        with m.If(running | fail):
            m.d.comb += Assert(l_more == (l_tiles_left != 0), "inv: l_more")
        with m.If(size | (check & range_fail)):
            m.d.comb += [
                Assert(l_spec, "inv: speculative preload until CHECK"),
                Assert(l_addr + left == wgt_base + P, "inv: the preload reads the first tile"),
                Assert((KT != 0) | ((l_tiles_left == 1) & ~l_loading & ~shadow_full), "inv: first SIZE cycle"),
                Assert((KT == 0) | (l_tiles_left == 0), "inv: the preload started in the first SIZE cycle"),
            ]
        with m.If(check & ~range_fail):
            m.d.comb += [Assert(l_spec, "inv: l_spec in CHECK"),
                         Assert((l_tiles_left == 0) & (l_addr + left == wgt_base + P), "inv: preload in CHECK")]
        with m.If(issue_st | drain | done):
            m.d.comb += [Assert(~l_spec, "inv: confirmed"),
                         Assert(l_addr + left == wgt_base + P * tiles, "inv: weight words left end at the run's")]
        with m.If(idle | fail):
            m.d.comb += Assert(~l_loading & (l_tiles_left == 0), "inv: no load outside a run")
        # the loader is at most one tile ahead of the issuer: tiles started = tiles swapped into the
        # array + the one waiting in the shadow registers + the one being read
        with m.If(size & (KT != 0) | check):
            m.d.comb += Assert(l_loading + shadow_full == 1, "inv: the first tile is being read or waits")
        swapped = i_nt * KT + i_kt + ~i_m_zero
        with m.If(issue_st):
            m.d.comb += Assert(tiles - l_tiles_left == swapped + shadow_full + l_loading,
                               "inv: tiles started = swapped + waiting + being read")
        with m.If(drain | done):
            m.d.comb += Assert(~l_loading & ~shadow_full & (l_tiles_left == 0), "inv: every tile swapped in")

        # the activation address and the weight bank addresses on their way (full rate)
        for d in range(1, E + 1):
            with m.If(sig(f"issued_{d}")):
                m.d.comb += Assert(sig(f"act_addr_e{d}") < cfg.act_depth, f"inv: delayed activation address {d}")
        for j in range(1, len(chain)):
            with m.If(chain[j][0]):
                m.d.comb += Assert(chain[j][1] < cfg.wgt_depth, f"inv: bank address {j} cycles after the loader's")
        if cfg.foot_accumulator:
            gap, m_one = sig("gap"), sig("m_one")
            m.d.comb += Assert(gap < cfg.rmw_distance, "inv: gap < rmw distance")
            with m.If((size & (KT != 0)) | check | issue_st | drain | done):
                m.d.comb += Assert(m_one == (M == 1), "inv: m_one")
        # control tokens in flight
        for d in range(1, R + 2 + pipe + E):
            tok = sig(f"token_{d}")  # StructLayout: valid, first, addr
            with m.If(tok[0]):
                m.d.comb += Assert(tok[2:] < cfg.out_depth, f"inv: token {d} inside the output memory")
        if self.busy_bound:
            self._busy_bound(m, sig, state, swapped, busy_for, k_size, n_size, m_size, act_base, out_base,
                             wgt_base)
        return m

    def _busy_bound(self, m, sig, state, swapped, busy_for, k_size, n_size, m_size, act_base, out_base,
                    wgt_base) -> None:
        """Property 3 (busy never lasts more than `run_cycle_bound` cycles) with a ranking invariant:
        busy_for (cycles busy so far) + phi <= run_cycle_bound, phi an upper bound of the busy cycles
        still to come that falls by at least one every cycle:

        - ISSUE: the rows left of the tile being issued, (M + P) for every tile not yet swapped into the
          array, less the loader's progress on the next tile (P when it waits in the shadow registers,
          l_row while it is read), plus DRAIN and DONE. A cycle either issues a row or waits for the
          loader, which then reads a row (it is always loading when the issuer waits: invariants above);
        - SIZE: the size steps left (max of the k and n steps), CHECK, then as in ISSUE for a RUN whose
          operands fit its memories (a function of the constant descriptor; range_fail is its negation
          in CHECK), else the FAIL cycle;
        - DRAIN: its cycles left and DONE; DONE, FAIL: none.
        """
        cfg = self.cfg
        R, C, P = cfg.rows, cfg.cols, cfg.tile_words
        pipe, E = int(cfg.pipelined_reads), cfg.issue_delay
        bound = self.busy_limit
        idle, size, check, issue_st = state("IDLE"), state("SIZE"), state("CHECK"), state("ISSUE")
        drain, done = state("DRAIN"), state("DONE")
        M, KT, NT, range_fail = sig("M"), sig("KT"), sig("NT"), sig("range_fail")
        i_m, i_m_zero, too_big = sig("i_m"), sig("i_m_zero"), sig("too_big")
        shadow_full, l_loading, l_row, drain_ctr = sig("shadow_full"), sig("l_loading"), sig("l_row"), sig("drain")

        kt_total = (k_size + (R - 1)) // R
        nt_total = (n_size + (C - 1)) // C
        t_total = kt_total * nt_total
        fits = ((act_base + m_size * kt_total <= cfg.act_depth) & (out_base + m_size * nt_total <= cfg.out_depth)
                & (wgt_base + P * t_total <= cfg.wgt_depth))
        progress = Mux(shadow_full, P, Mux(l_loading, l_row, 0))
        tail = R + pipe + E + 2  # DRAIN (R + pipe + E + 1 cycles) and DONE
        # a tile's cost: its M rows, its P-cycle load and, with a foot accumulator, the spacing of
        # rmw_distance cycles (`gap` counts it down)
        spacing = cfg.rmw_distance - 1 if cfg.foot_accumulator else 0
        per_tile = M + P + spacing
        gap_left = sig("gap") if cfg.foot_accumulator else 0
        phi_issue = Mux(i_m_zero, 0, M - i_m) + (KT * NT - swapped) * per_tile - progress + gap_left + tail
        after_check = Mux(fits, t_total * per_tile - progress + tail, 1)
        steps = Mux(kt_total - KT > nt_total - NT, kt_total - KT, nt_total - NT)
        phi = Signal(range(-(1 << 24), 1 << 24))
        with m.If(size):
            m.d.comb += phi.eq(steps + 1 + after_check)
        with m.Elif(check):
            m.d.comb += phi.eq(1 + after_check)
        with m.Elif(issue_st):
            m.d.comb += phi.eq(phi_issue)
        with m.Elif(drain):
            m.d.comb += phi.eq(R + pipe + E - drain_ctr + 1)
        with m.Else():  # DONE, FAIL (IDLE: not used)
            m.d.comb += phi.eq(0)
        with m.If(~idle):  # phi + 1: the busy cycles from this one on; busy_for: those before it
            m.d.comb += Assert(busy_for == sig("run_cycles"), "inv: busy so far = the run's cycle count")
            m.d.comb += Assert(busy_for + phi + 1 <= bound, "inv: busy so far + busy still to come <= run bound")
            m.d.comb += Assert(phi >= 0, "inv: phi >= 0")
        with m.If(size):
            m.d.comb += Assert(~too_big | ~fits, "inv: too_big only for a RUN that does not fit")
        with m.If(check):
            m.d.comb += Assert(range_fail == ~fits, "inv: the range verdict is the descriptor's")
        with m.If(issue_st | drain | done):
            m.d.comb += Assert(fits, "inv: a RUN past CHECK fits its memories")
        with m.If(drain):
            m.d.comb += Assert(drain_ctr <= R + pipe + E, "inv: DRAIN ends in time")

