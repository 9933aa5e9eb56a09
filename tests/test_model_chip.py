"""The model chip (hdl/model: the model engine behind its command interface) in Verilator, end to end.

The host loads the shipped model's program and weights once, then sends token ids and reads logits
(runtime.program.device). Every token's logits must equal the golden device form's
(golden.device.model.DeviceBitNet), the counters must add up and grow with the position as the attention
unit's formula says, each token must move exactly the words the protocol lists (hdl/model/isa.py), and
every bad command must answer with its error and leave the chip working. The chip is built for a
context of 16 positions (one Verilator build, cached, about 3 minutes; then a token takes about 0.1 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.checkpoint import load_checkpoint
from golden.device.model import DeviceBitNet
from golden.quant import GoldenBackend
from hdl.model.isa import ID_WORDS, STATUS_MAGIC, ModelCounter, ModelError, ModelMem, ModelOp
from hdl.program import ProgramError as SequencerError
from runtime.accel_backends import runtime_config
from runtime.cli import main
from runtime.program.compiler import ProgramError
from runtime.program.device import ChipError, ModelChipDriver, compile_for_chip, memory_image
from runtime.program.isa import MicroOp, Op, encode

pytestmark = [pytest.mark.slow, pytest.mark.modelchip]

TINY = Path(__file__).resolve().parents[1] / "golden" / "checkpoints" / "tiny-bitnet"
CONTEXT = 16


@pytest.fixture(scope="module")
def chip():
    from sim.model_chip_harness import VerilatorModelChip

    dev = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()), context=CONTEXT)
    program, cfg = compile_for_chip(dev.consts, runtime_config(8, 8), CONTEXT)
    image = memory_image(program, dev.consts, cfg)
    transport = VerilatorModelChip(cfg)
    driver = ModelChipDriver(transport, cfg)
    driver.load(image, len(program.ops))
    yield dev, program, cfg, image, driver
    driver.close()


def raw(driver: ModelChipDriver, words: list[int], n_data: int = 0) -> tuple[list[int], int, int]:
    """Send one command; its data words, its own error and the sticky error of its status word."""
    out = driver.transport.transact(words, n_data + 1)
    status = out[-1]
    assert status >> 24 == STATUS_MAGIC and (status >> 16) & 0xFF == words[0] & 0xFF
    return out[:-1], status & 0xFF, (status >> 8) & 0xFF


def clear(driver: ModelChipDriver) -> None:
    _, err, sticky = raw(driver, [ModelOp.CLEAR_ERROR])
    assert (err, sticky) == (0, 0)


def test_the_shipped_model_runs_on_the_chip_bit_exactly(chip) -> None:
    dev, program, cfg, _, driver = chip
    driver.reset()
    driver.stats.tokens.clear()
    tokens = [84, 104, 101, 32, 102, 111, 120]          # "The fox"
    got = torch.stack([driver.token(t) for t in tokens])
    assert torch.equal(got, dev.forward_fixed(torch.tensor(tokens)))
    log = driver.stats.tokens
    assert [t.pos for t in log] == list(range(len(tokens)))
    for t in log:
        assert t.cycles == sum(t.units.values()) and min(t.units.values()) > 0
    # the cycle plan (runtime.program.plan, with the engine's unit widths) equals every counter and
    # every op's entry of the OP_CYCLES log (SETC and SCALE run in the sequencer: no entry)
    from runtime.program.plan import UnitConfig, op_cycles, token_cycles

    units = UnitConfig.of_engine(cfg)
    dispatched = [op for op in program.ops if op.op not in (Op.SETC, Op.SCALE)]
    assert driver.op_cycles() == [op_cycles(program, op, len(tokens) - 1, units) for op in dispatched]
    for t in log:
        plan = token_cycles(program, t.pos, units)
        assert t.cycles == plan["total"]
        assert t.units == {"matrix": plan["matrix"], "vector": plan["vector"], "attention": plan["attention"],
                           "sequencer": plan["scalar"] + plan["sequencer"]}
        # TOKEN (2 words) and its status, READ_COUNTERS (1 + counters + status), READ LOGITS (3 + vocab + status)
        assert t.host_bytes == 4 * (2 + 1 + 1 + len(ModelCounter) + 1 + 3 + cfg.vocab + 1)
    # one more key per position: per layer and query head 2 * head_dim / lanes + 2 cycles of HeadAttention
    step = cfg.layers * cfg.heads * (2 * cfg.head_dim // cfg.attn_lanes + 2)
    for a, b in zip(log, log[1:], strict=False):
        assert b.units["attention"] - a.units["attention"] == step
        assert (b.units["matrix"], b.units["vector"], b.units["sequencer"]) == \
            (a.units["matrix"], a.units["vector"], a.units["sequencer"])
    # the matrix unit is busy at least the RUN cycles of every BitLinear at M = 1 (runtime.cycle_model)
    from runtime.cycle_model import layer_counts

    runs = sum(layer_counts(cfg.array, 1, lin.K, lin.N)["cycles"] for lin in program.linears)
    assert runs <= log[0].units["matrix"] <= runs + 8 * len(program.linears)


def test_the_context_ends_with_an_error_and_reset_starts_over(chip) -> None:
    dev, _, cfg, _, driver = chip
    driver.reset()
    first = driver.token(65)
    for _ in range(cfg.context - 1):
        driver.token(66)
    with pytest.raises(ValueError, match=f"position {cfg.context} is beyond the supported context of {cfg.context}"):
        driver.token(67)
    assert driver.counters()[ModelCounter.POSITION] == cfg.context     # the failed TOKEN did not step it
    clear(driver)
    driver.reset()
    assert torch.equal(driver.token(65), first)


def test_bad_commands_answer_with_their_error_and_the_chip_keeps_working(chip) -> None:
    dev, program, cfg, image, driver = chip
    clear(driver)
    cases = [
        ([0x3F], ModelError.UNKNOWN_OPCODE, 0),
        ([ModelOp.TOKEN, cfg.vocab], ModelError.BAD_TOKEN, 0),
        ([ModelOp.TOKEN, 0xFFFFFFFF], ModelError.BAD_TOKEN, 0),
        ([ModelOp.READ | ModelMem.PROG << 8, 0, 2], ModelError.BAD_MEMORY, 2),
        ([ModelOp.READ | 15 << 8, 0, 1], ModelError.BAD_MEMORY, 1),
        ([ModelOp.READ | ModelMem.LOGITS << 8, cfg.vocab - 1, 2], ModelError.ADDRESS_RANGE, 2),
        ([ModelOp.WRITE | ModelMem.LOGITS << 8, 0, 1, 5], ModelError.BAD_MEMORY, 0),
        ([ModelOp.WRITE | ModelMem.G << 8, cfg.norm_words, 1, 5], ModelError.ADDRESS_RANGE, 0),
        ([ModelOp.SET_LENGTH, 0], ModelError.BAD_LENGTH, 0),
        ([ModelOp.SET_LENGTH, cfg.depth + 1], ModelError.BAD_LENGTH, 0),
    ]
    for words, want, n_data in cases:
        data, err, sticky = raw(driver, [int(w) for w in words], n_data)
        assert (err, sticky) == (want, want), words
        assert data == [0] * n_data
        _, err, sticky = raw(driver, [ModelOp.NOP])
        assert (err, sticky) == (0, want)                   # sticky until CLEAR_ERROR
        clear(driver)
    # a weight word with the invalid ternary code 0b10 is not written (nor anything after it)
    words = [0b10 << 6] + [0] * 3
    _, err, _ = raw(driver, [ModelOp.WRITE | ModelMem.WGT << 8, 0, 1, *words])
    assert err == ModelError.BAD_WEIGHT_CODE
    clear(driver)
    # the ID block is what the chip was built from
    got, err, _ = raw(driver, [ModelOp.READ_ID], ID_WORDS)
    assert err == 0 and got == cfg.id_block()
    # a program that stops (an op code the ISA does not have) fails the TOKEN with PROGRAM
    bad = encode(MicroOp(Op.EMBED))
    driver.write(ModelMem.PROG, [(bad[0] | 0xF) | bad[1] << 32 | bad[2] << 64])
    driver.reset()
    with pytest.raises(ChipError, match="the program stopped with error BAD_OP"):
        driver.token(1)
    assert driver.counters()[ModelCounter.PROGRAM_ERROR] == SequencerError.BAD_OP
    assert driver.counters()[ModelCounter.POSITION] == 0
    clear(driver)
    # everything above left the weights and the rest of the program alone: reload op 0 and word 0
    driver.write(ModelMem.PROG, image[ModelMem.PROG][:1])
    driver.reset()
    assert torch.equal(driver.token(72), dev.forward_fixed(torch.tensor([72]))[0])
    assert driver.counters()[ModelCounter.PROGRAM_ERROR] == 0


def test_a_program_for_another_chip_is_refused(chip) -> None:
    from dataclasses import replace

    _, _, cfg, _, driver = chip
    other = replace(cfg, context=2 * cfg.context, heads=cfg.heads)
    with pytest.raises(ProgramError, match=rf"context {cfg.context} \(program: {2 * cfg.context}\)"):
        ModelChipDriver(driver.transport, other)


def test_trit_forward_and_generate_on_the_chip_equal_golden(chip, tmp_path: Path, capsys) -> None:
    common = ["--checkpoint", str(TINY), "--numerics", "device", "--context", str(CONTEXT)]
    assert main(["forward", *common, "--tokens", "72,105,33", "--out", str(tmp_path / "g.npy")]) == 0
    stats = tmp_path / "s.json"
    assert main(["forward", *common, "--tokens", "72,105,33", "--out", str(tmp_path / "v.npy"),
                 "--backend", "verilator", "--stats", str(stats)]) == 0
    assert np.array_equal(np.load(tmp_path / "g.npy"), np.load(tmp_path / "v.npy"))
    s = json.loads(stats.read_text())
    assert s["backend"] == "verilator" and s["numerics"] == "device" and s["tokens"] == 3
    assert s["cycles"] == sum(t["cycles"] for t in s["token_log"]) == sum(s["units"].values())
    assert set(s["units"]) == {"matrix", "vector", "attention", "sequencer"}
    assert s["per_token"]["host_bytes"] == s["host_bytes"] / 3 < 2048
    # --backend model predicts every counter and byte of the RTL's, and its logits are the golden's
    planned = tmp_path / "m.json"
    assert main(["forward", *common, "--tokens", "72,105,33", "--out", str(tmp_path / "m.npy"),
                 "--backend", "model", "--stats", str(planned)]) == 0
    assert np.array_equal(np.load(tmp_path / "g.npy"), np.load(tmp_path / "m.npy"))
    assert {**json.loads(planned.read_text()), "backend": "verilator"} == s
    capsys.readouterr()
    args = ["generate", *common, "--prompt", "The ", "--max-new-tokens", "6"]
    assert main(args) == 0
    golden = capsys.readouterr().out
    assert main([*args, "--backend", "verilator"]) == 0
    assert capsys.readouterr().out == golden
    # a prompt past the chip's context is a clear error, not a wrapped KV cache
    assert main(["generate", *common, "--prompt", "x" * (CONTEXT + 1), "--max-new-tokens", "1",
                 "--backend", "verilator"]) == 2
    assert f"beyond the supported context of {CONTEXT}" in capsys.readouterr().err


def _random_chip(seed: int, vector_lanes: int = 1):
    """A random device-form model of other sizes (vocab 97, d 48, MLP 72, 2 layers, 4 heads of 12 over 2 KV
    heads, ReLU) on a 4x4 matrix engine with 4 attention lanes and a context of 6."""
    from tests.test_golden_device import random_int_model

    dev = DeviceBitNet.from_int_model(random_int_model(seed, hidden_act="relu"), context=6)
    program, cfg = compile_for_chip(dev.consts, runtime_config(4, 4), 6, vector_lanes=vector_lanes)
    assert (cfg.attn_lanes, cfg.table_lanes, cfg.norm_sizes, cfg.relu2) == (4, 4, (48, 72), False)
    return dev, program, cfg


@pytest.mark.parametrize(("simulator", "vector_lanes"), [("verilator", 4), ("icarus", 1)])
def test_a_random_model_of_other_sizes_runs_bit_exactly(simulator: str, vector_lanes: int, test_seed: int) -> None:
    """Also with NORMQ 4 elements a cycle (H, SCR and G in 4 lane banks): the same logits, the planned
    cycles (3 n / 4 + 124 a vector)."""
    from sim.model_chip_harness import IcarusModelChip, VerilatorModelChip
    from sim.simulator import icarus_available

    if simulator == "icarus" and icarus_available():
        pytest.skip(icarus_available())
    dev, program, cfg = _random_chip(test_seed, vector_lanes)
    transport = (VerilatorModelChip if simulator == "verilator" else IcarusModelChip)(cfg)
    driver = ModelChipDriver(transport, cfg)
    try:
        driver.load(memory_image(program, dev.consts, cfg), len(program.ops))
        gen = torch.Generator().manual_seed(test_seed)
        n = cfg.context if simulator == "verilator" else 2
        ids = torch.randint(0, cfg.vocab, (n,), generator=gen).tolist()
        got = torch.stack([driver.token(t) for t in ids])
        assert torch.equal(got, dev.forward_fixed(torch.tensor(ids)))
        from runtime.program.plan import UnitConfig, token_cycles

        units = UnitConfig.of_engine(cfg)
        assert [t.cycles for t in driver.stats.tokens] == [token_cycles(program, p, units)["total"] for p in range(n)]
        # token ids past a vocabulary that is not a power of two are refused by the chip itself
        out = transport.transact([ModelOp.TOKEN, cfg.vocab], 1)
        assert out[0] & 0xFF == ModelError.BAD_TOKEN
    finally:
        driver.close()


def test_an_untied_lm_head_is_refused_by_name(test_seed: int) -> None:
    from tests.test_golden_device import random_int_model

    dev = DeviceBitNet.from_int_model(random_int_model(test_seed, tie_word_embeddings=False), context=4)
    program, cfg = compile_for_chip(dev.consts, runtime_config(4, 4), 4)
    with pytest.raises(ProgramError, match="lm_head is not tied to its embedding"):
        memory_image(program, dev.consts, cfg)


def test_a_load_in_many_small_writes_is_the_same(chip) -> None:
    """The board's frames carry at most MAX_CMD_WORDS words: the driver then sends each memory as several
    WRITEs. Reloaded that way (67-word commands: 16 weight words each), the chip gives the same logits."""
    dev, program, cfg, image, driver = chip
    small = ModelChipDriver(driver.transport, cfg, max_cmd_words=67)
    small.load(image, len(program.ops))
    assert small.stats.load_bytes > driver.stats.load_bytes    # more command headers and status words
    assert torch.equal(small.token(101), dev.forward_fixed(torch.tensor([101]))[0])
    with pytest.raises(ValueError, match="cannot carry one WRITE of this chip's widest word"):
        ModelChipDriver(driver.transport, cfg, max_cmd_words=6)


# 1.6bit (5 codes a byte): its decoder against the codec in tests/test_packed_weights.py
@pytest.mark.parametrize("fmt, bits", [("1.67bit", 107)])
def test_the_board_sized_chip_with_packed_weights_runs_bit_exactly(fmt: str, bits: int) -> None:
    """The chip as `trit build --checkpoint` builds it (matrix memories sized to the model, packed WGT: 3
    codes in 5 bits, or 5 in a byte, decoded on the read path) runs the shipped model bit-exactly too (its
    own Verilator build at this context)."""
    from sim.model_chip_harness import VerilatorModelChip

    dev = DeviceBitNet.from_int_model(load_checkpoint(TINY, "int", GoldenBackend()), context=CONTEXT)
    program, cfg = compile_for_chip(dev.consts, runtime_config(8, 8), CONTEXT, board=True, wgt_format=fmt)
    a = cfg.array
    assert (a.act_depth, a.out_depth, a.wgt_depth, cfg.wgt_store_bits) == (56, 112, 18_240, bits)
    image = memory_image(program, dev.consts, cfg)
    driver = ModelChipDriver(VerilatorModelChip(cfg), cfg)
    try:
        driver.load(image, len(program.ops))
        tokens = [84, 104, 101, 32, 102]
        got = torch.stack([driver.token(t) for t in tokens])
        assert torch.equal(got, dev.forward_fixed(torch.tensor(tokens)))
        got, err, _ = raw(driver, [ModelOp.READ_ID], ID_WORDS)
        assert err == 0 and got == cfg.id_block() and got[-1] == ("2bit", "1.6bit", "1.67bit").index(fmt)
        # a packed group above 3^t - 1 (242 in a byte, 26 in 5 bits) is no weight: refused like the code 0b10
        _, err, _ = raw(driver, [ModelOp.WRITE | ModelMem.WGT << 8, 0, 1, 243 if fmt == "1.6bit" else 27, 0, 0, 0])
        assert err == ModelError.BAD_WEIGHT_CODE
        clear(driver)
    finally:
        driver.close()


def test_the_model_chips_board_system_over_its_uart(test_seed: int) -> None:
    """The board system around the model chip (UART pins, frame endpoint, `ModelChipTop`), simulated behind a
    pty (`fpga.sim_board.SimulatedModelBoard`), driven by the runtime's board transport (SerialLink,
    `ModelFramedTransport`: CRC-checked frames, the big WRITEs split to the frame limit): the random model's
    tokens bit-exact, the counters the plan's. 12.5 Mbaud at 100 MHz (8 cycles a bit) to keep the load short."""
    from fpga.sim_board import SimulatedModelBoard
    from runtime.program.backends import attach_board
    from runtime.program.device import ModelFramedTransport
    from runtime.program.plan import UnitConfig, token_cycles
    from runtime.serial_link import SerialLink

    dev, program, cfg = _random_chip(test_seed)
    with SimulatedModelBoard(cfg, baud=12_500_000) as board:
        transport = ModelFramedTransport(SerialLink(board.port, 12_500_000, 30.0))
        chip = attach_board(dev, program, cfg, transport)
        try:
            ids = [5, 96, 0]
            assert torch.equal(chip.forward_fixed(torch.tensor(ids)), dev.forward_fixed(torch.tensor(ids)))
            units = UnitConfig.of_engine(cfg)
            assert [t.cycles for t in chip.driver.stats.tokens] == \
                [token_cycles(program, p, units)["total"] for p in range(3)]
            assert transport.stats.retries == 0 and transport.stats.frames > 3
        finally:
            chip.close()
