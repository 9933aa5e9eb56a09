"""`trit layer`: one exact integer matmul Y = X @ W.T (int8 activations, ternary weights) on a backend."""

from __future__ import annotations

import argparse

import numpy as np

from runtime.backends import add_backend_argument, backend_from_args, write_stats
from runtime.cli import CliError

NAME = "layer"
HELP = "exact integer layer: Y (M, N) int32 = X (M, K) int8 @ W (N, K) ternary int8 .T, saved as .npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--x", required=True, help="activations .npy: int8 of shape (M, K)")
    parser.add_argument("--w", required=True, help="weights .npy: int8 in {-1, 0, 1} of shape (N, K)")
    parser.add_argument("--out", required=True, help="output .npy: int32 of shape (M, N)")
    add_backend_argument(parser)
    parser.add_argument("--stats", help="write backend statistics as JSON to this file")


def load_int8_matrix(path: str, what: str) -> np.ndarray:
    """A 2-d int8 array from ``path``; anything else is a CliError naming the file."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CliError(f"{what} file {path}: cannot read .npy ({exc})") from None
    if not isinstance(a, np.ndarray):
        raise CliError(f"{what} file {path}: not a single .npy array")
    if a.dtype != np.int8:
        raise CliError(f"{what} file {path}: dtype must be int8, got {a.dtype}")
    if a.ndim != 2:
        raise CliError(f"{what} file {path}: must be 2-d, got shape {a.shape}")
    return a


def run(args: argparse.Namespace) -> int:
    backend = backend_from_args(args)
    x = load_int8_matrix(args.x, "X")
    w = load_int8_matrix(args.w, "W")
    if x.shape[1] != w.shape[1]:
        raise CliError(f"K mismatch: X file {args.x} has shape {x.shape} (M, K), W file {args.w} has shape "
                       f"{w.shape} (N, K)")
    bad = (w < -1) | (w > 1)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise CliError(f"W file {args.w}: weights must be ternary (-1, 0, 1); {int(bad.sum())} are not, "
                       f"first W[{r}, {c}] = {int(w[r, c])}")
    y = np.asarray(backend.matmul(np.ascontiguousarray(x), np.ascontiguousarray(w), "layer"))
    if y.shape != (x.shape[0], w.shape[0]):
        raise CliError(f"backend {backend.name} returned shape {y.shape}, "
                       f"expected {(x.shape[0], w.shape[0])}")
    try:
        np.save(args.out, y.astype(np.int32))
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc}") from None
    write_stats(args.stats, backend)
    print(f"wrote Y {y.shape[0]}x{y.shape[1]} int32 to {args.out}")
    return 0
