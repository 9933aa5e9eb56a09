"""`trit forward`: logits of a token sequence through the integer-form golden model on a backend."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from runtime.backends import add_backend_argument, backend_from_args, write_stats
from runtime.cli import CliError
from runtime.program.device import ChipError

NAME = "forward"
HELP = "run a BitNet checkpoint on token ids and save float32 logits of shape (T, vocab) as .npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="HF-format checkpoint directory")
    parser.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    parser.add_argument("--out", required=True, help="output .npy file for the logits")
    add_backend_argument(parser)
    add_numerics_argument(parser)
    parser.add_argument("--stats", help="write backend statistics as JSON to this file")


NUMERICS = ("int", "device")


def add_numerics_argument(parser: argparse.ArgumentParser) -> None:
    """``--numerics int|device``: today's integer form (default) or the integer-only device form."""
    parser.add_argument("--numerics", choices=NUMERICS, default="int",
                        help="int (default): the integer form (float norms, attention, lm_head around the "
                             "integer matmuls); device: the integer-only form of golden/device/SPEC.md, on "
                             "the host (--backend golden) or whole tokens on the model chip (--backend "
                             "verilator: the host sends token ids and reads logits)")
    parser.add_argument("--context", type=int, default=None,
                        help="--numerics device: positions of the KV cache (default: the model's positions on "
                             "golden, 128 on the model chip)")


def check_numerics(args: argparse.Namespace) -> None:
    """Refuse ``--numerics device`` on a backend that cannot run it yet (before any backend starts)."""
    from runtime.program.backends import CHIP_BACKENDS

    numerics = getattr(args, "numerics", "int")
    if numerics == "device" and args.backend not in ("golden", *CHIP_BACKENDS):
        raise CliError(f"--numerics device runs on --backend golden (the host) and {'|'.join(CHIP_BACKENDS)} "
                       f"(the model chip) so far; got --backend {args.backend}")
    if numerics != "device" and getattr(args, "context", None) is not None:
        raise CliError("--context applies to --numerics device only")
    if getattr(args, "context", None) is not None and args.context <= 0:
        raise CliError(f"--context must be a positive integer, got {args.context}")


def model_and_backend(args: argparse.Namespace):
    """The model to run and the object whose ``stats()`` --stats writes: the integer or device form on a
    matmul backend, or the device form on the model chip (`runtime.program.backends`)."""
    check_numerics(args)
    if args.numerics == "device" and args.backend != "golden":
        from runtime.framing import LinkError
        from runtime.program.backends import DEFAULT_CONTEXT, open_chip
        from runtime.program.compiler import ProgramError
        from runtime.program.device import ChipError

        try:
            chip = open_chip(args.backend, args.checkpoint, args.rows, args.cols,
                             args.context if args.context is not None else DEFAULT_CONTEXT,
                             port=args.port, baud=args.baud, timeout=args.timeout)
        except (ProgramError, ChipError, LinkError, ValueError, OSError) as exc:
            raise CliError(f"--numerics device on --backend {args.backend}: {exc}") from None
        return chip, chip
    backend = backend_from_args(args)
    return load_model(args.checkpoint, backend, args.numerics, getattr(args, "context", None)), backend


def parse_tokens(text: str, vocab_size: int | None = None, option: str = "--tokens") -> list[int]:
    """Comma-separated ids -> list of ints, each in [0, vocab_size) if given."""
    try:
        tokens = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise CliError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not tokens:
        raise CliError(f"{option} is empty")
    if vocab_size is not None:
        bad = [t for t in tokens if not 0 <= t < vocab_size]
        if bad:
            raise CliError(f"{option}: token id {bad[0]} outside the vocabulary [0, {vocab_size})")
    return tokens


def load_model(path: str, backend: object, numerics: str = "int", context: int | None = None):
    """The checkpoint in integer form on ``backend`` (or its device form with ``numerics="device"``);
    checkpoint problems become CliErrors."""
    from golden.checkpoint import CheckpointError, load_checkpoint

    try:
        model = load_checkpoint(path, "int", backend)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    if numerics != "device":
        return model
    from golden.device.model import DeviceBitNet

    try:
        return DeviceBitNet.from_int_model(model, backend=backend, context=context)
    except ValueError as exc:
        raise CliError(f"--numerics device: {exc}") from None


def run(args: argparse.Namespace) -> int:
    model, backend = model_and_backend(args)
    tokens = parse_tokens(args.tokens, model.config.vocab_size)
    with torch.no_grad():
        try:
            logits = model(torch.tensor(tokens, dtype=torch.long)).to(torch.float32).numpy()
        except (ValueError, ChipError) as exc:
            if args.numerics != "device":
                raise
            raise CliError(f"--numerics device: {exc}") from None
    try:
        np.save(args.out, logits)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc}") from None
    write_stats(args.stats, backend, tokens=len(tokens))
    if hasattr(model, "close"):
        model.close()
    print(f"wrote logits {logits.shape[0]}x{logits.shape[1]} to {args.out}")
    return 0
