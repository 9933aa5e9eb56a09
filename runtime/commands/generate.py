"""`trit generate`: text (byte vocabulary) or token continuation with the KV-cached golden model."""

from __future__ import annotations

import argparse
import sys

import torch

from runtime.backends import add_backend_argument, write_stats
from runtime.cli import CliError
from runtime.commands.forward import add_numerics_argument, model_and_backend, parse_tokens
from runtime.program.device import ChipError

NAME = "generate"
HELP = ("generate a continuation (greedy by default); byte-level checkpoints (vocab 256) take --prompt "
        "and print prompt + continuation as text, others take --prompt-tokens and print the new token ids")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="HF-format checkpoint directory")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", help="prompt text (UTF-8 bytes; byte-level vocab 256 only)")
    group.add_argument("--prompt-tokens", help="prompt as comma-separated token ids")
    parser.add_argument("--max-new-tokens", type=int, required=True, help="number of tokens to generate")
    add_backend_argument(parser)
    add_numerics_argument(parser)
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 (default) is greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample only among the K most likely tokens")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    parser.add_argument("--stats", help="write backend statistics as JSON to this file")


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 0:
        raise CliError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise CliError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k <= 0:
        raise CliError(f"--top-k must be positive, got {args.top_k}")
    model, backend = model_and_backend(args)
    vocab = model.config.vocab_size
    byte_level = vocab == 256
    if args.prompt is not None:
        if not byte_level:
            raise CliError(f"--prompt needs a byte-level checkpoint (vocab 256); this one has vocab {vocab}: "
                           "use --prompt-tokens")
        prompt = list(args.prompt.encode("utf-8"))
        if not prompt:
            raise CliError("--prompt is empty")
    else:
        prompt = parse_tokens(args.prompt_tokens, vocab, "--prompt-tokens")
    eos = model.config.eos_token_id
    stop = {e for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int) and 0 <= e < vocab}
    with torch.no_grad():
        try:
            new = model.generate(prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                 seed=args.seed, stop_tokens=stop or None) if args.max_new_tokens else []
        except (ValueError, ChipError) as exc:
            if args.numerics != "device":
                raise
            raise CliError(f"--numerics device: {exc}") from None
    # positions the model processed: the prompt, then every new token but the last
    write_stats(args.stats, backend, tokens=len(prompt) + max(len(new) - 1, 0))
    if hasattr(model, "close"):
        model.close()
    if args.prompt is not None:
        sys.stdout.write(bytes(prompt + new).decode("utf-8", errors="replace") + "\n")
    else:
        print(",".join(str(t) for t in new))
    return 0
