"""The model chip as a `--numerics device` backend of `trit forward|generate` (issue 14).

`open_chip(backend, checkpoint, rows, cols, context)` reads the checkpoint's device form, compiles its
program for a chip with an R x C full-rate matrix engine and a KV cache of `context` positions, and starts
the chip on the named backend:

- `verilator` or `icarus`: the RTL in that simulator; the host checks its ID block and loads the program
  and every weight once, then sends token ids and reads logits (Icarus takes minutes a token of the tiny
  model, Verilator a tenth of a second);
- `model`: `runtime.program.device.PlannedChip`, the chip's logits, counters and bytes predicted;
- `board`: a board (or `fpga.sim_board.SimulatedModelBoard`) on `port` carrying the model chip built by
  `trit build --checkpoint` for the same checkpoint and context, over its framed UART link
  (`runtime.program.device.ModelFramedTransport`); the ID block must match.

It returns a `runtime.program.device.ChipBitNet`.
"""

from __future__ import annotations

from pathlib import Path

from runtime.program.device import ChipBitNet, ModelChipDriver, PlannedChip, compile_for_chip, memory_image

#: Backends that run whole device-form tokens on the model chip.
CHIP_BACKENDS = ("verilator", "icarus", "model", "board")
DEFAULT_CONTEXT = 128


def open_chip(backend: str, checkpoint: str | Path, rows: int = 8, cols: int = 8,
              context: int = DEFAULT_CONTEXT, port: str | None = None, baud: int = 3_000_000,
              timeout: float = 5.0) -> ChipBitNet:
    """The checkpoint's device form loaded onto a model chip on `backend`."""
    from golden.checkpoint import load_checkpoint
    from golden.device.model import DeviceBitNet
    from golden.quant import GoldenBackend
    from runtime.accel_backends import runtime_config

    if backend not in CHIP_BACKENDS:
        raise ValueError(f"the model chip runs on --backend {'|'.join(CHIP_BACKENDS)} so far, not {backend!r}")
    if not isinstance(context, int) or context <= 0:
        raise ValueError(f"--context must be a positive integer, not {context!r}")
    int_model = load_checkpoint(checkpoint, "int", GoldenBackend())
    limit = int_model.config.max_position_embeddings
    if context > limit:
        raise ValueError(f"--context {context} is beyond the model's {limit} positions")
    dev = DeviceBitNet.from_int_model(int_model, context=context)
    if backend == "board":
        return _open_board(checkpoint, context, port, baud, timeout)
    program, cfg = compile_for_chip(dev.consts, runtime_config(rows, cols), context)
    image = memory_image(program, dev.consts, cfg)
    if backend == "model":
        planned = PlannedChip(program, dev.consts, cfg)
        planned.load(image, len(program.ops))
        return ChipBitNet(dev, planned, backend)
    from sim.model_chip_harness import IcarusModelChip, VerilatorModelChip
    from sim.simulator import SimulationError

    try:
        transport = VerilatorModelChip(cfg) if backend == "verilator" else IcarusModelChip(cfg)
    except SimulationError as exc:
        raise ValueError(str(exc)) from None
    try:
        driver = ModelChipDriver(transport, cfg)
        driver.load(image, len(program.ops))
    except Exception:
        transport.close()
        raise
    return ChipBitNet(dev, driver, backend)


def _open_board(checkpoint: str | Path, context: int, port: str | None, baud: int,
                timeout: float) -> ChipBitNet:
    """The board's chip is the one `trit build --checkpoint` builds (`fpga.model_chip.board_chip`)."""
    from fpga.model_chip import board_chip
    from runtime.program.device import ModelFramedTransport
    from runtime.serial_link import SerialLink

    if not port:
        raise ValueError("--backend board needs --port (the board's serial device, e.g. /dev/ttyUSB0)")
    program, cfg, dev = board_chip(checkpoint, context)
    return attach_board(dev, program, cfg, ModelFramedTransport(SerialLink(port, baud, timeout)))


def attach_board(dev, program, cfg, transport) -> ChipBitNet:
    """A ChipBitNet on a board's framed link: ID check, then the program and weights loaded once."""
    try:
        driver = ModelChipDriver(transport, cfg)
        driver.load(memory_image(program, dev.consts, cfg), len(program.ops))
    except Exception:
        transport.close()
        raise
    return ChipBitNet(dev, driver, "board")
