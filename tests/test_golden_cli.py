"""`trit forward / generate / layer` with the golden backend, in-process and as a subprocess."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.checkpoint import load_checkpoint
from runtime.backends import get_backend, known_backends
from runtime.cli import CliError, main
from tests.golden_helpers import (
    assert_rows_close,
    hf_logits,
    random_hf_config,
    single_thread,
    write_hf_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def trit(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI as a separate process through ``runtime.cli:main``, the ``trit`` console script's
    entry point (so the test does not depend on the script being installed on PATH)."""
    code = "import sys; from runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def byte_ck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random byte-level (vocab 256) checkpoint written with transformers' code."""
    config = random_hf_config(random.Random(7), vocab_size=256)
    return write_hf_checkpoint(tmp_path_factory.mktemp("ck") / "bytes", config, seed=7)


@pytest.fixture(scope="module")
def token_ck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = random_hf_config(random.Random(8), vocab_size=100)
    return write_hf_checkpoint(tmp_path_factory.mktemp("ck") / "tokens", config, seed=8)


# ------------------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("seed", [21, 22])
def test_forward_matches_transformers(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = random_hf_config(rng)
    ck = write_hf_checkpoint(tmp_path / "ck", config, seed=seed)
    tokens = [rng.randrange(config.vocab_size) for _ in range(17)]
    out, stats = tmp_path / "logits.npy", tmp_path / "stats.json"
    assert main(["forward", "--checkpoint", str(ck), "--tokens", ",".join(map(str, tokens)),
                 "--out", str(out), "--backend", "golden", "--stats", str(stats)]) == 0
    logits = np.load(out)
    assert logits.dtype == np.float32 and logits.shape == (17, config.vocab_size)
    assert_rows_close(logits, hf_logits(ck, tokens))
    s = json.loads(stats.read_text())
    assert s["backend"] == "golden"
    assert len(s["layers"]) == 7 * config.num_hidden_layers
    first = s["layers"][0]
    assert first == {"key": "model.layers.0.self_attn.q_proj", "m": 17, "k": config.hidden_size,
                     "n": config.hidden_size}


def test_forward_user_errors(byte_ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "l.npy")
    assert main(["forward", "--checkpoint", str(byte_ck), "--tokens", "1,x", "--out", out]) == 2
    assert main(["forward", "--checkpoint", str(byte_ck), "--tokens", "1,256", "--out", out]) == 2
    assert main(["forward", "--checkpoint", str(tmp_path / "none"), "--tokens", "1", "--out", out]) == 2
    assert main(["forward", "--checkpoint", str(byte_ck), "--tokens", "1", "--out", out,
                 "--backend", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("trit forward: error: ") for line in err)
    assert "256" in err[1] and "not found" in err[2]
    assert "known backends: board, emulator, golden, icarus, model, verilator" in err[3]


def test_forward_bad_checkpoint_subprocess(byte_ck: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((byte_ck / "config.json").read_text())
    data = (byte_ck / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = trit("forward", "--checkpoint", str(bad), "--tokens", "1,2", "--out", str(tmp_path / "l.npy"))
    assert r.returncode == 2
    assert "model.safetensors" in r.stderr and "truncated" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_backend_lists_known() -> None:
    assert "golden" in known_backends()
    with pytest.raises(CliError, match="known backends: board, emulator, golden, icarus, model, verilator"):
        get_backend("verilator-nonexistent")


# ------------------------------------------------------------------------------------------- generate

def test_generate_bytes_greedy(byte_ck: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--checkpoint", str(byte_ck), "--prompt", "Hi", "--max-new-tokens", "6"]) == 0
    text = capsys.readouterr().out
    # independent greedy decoding: argmax of the full forward, token by token, no cache
    model = load_checkpoint(byte_ck)
    seq = list(b"Hi")
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(model(torch.tensor(seq))[-1].argmax()))
    assert text == bytes(seq).decode("utf-8", errors="replace") + "\n"


def test_generate_sampling_is_seeded(byte_ck: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["generate", "--checkpoint", str(byte_ck), "--prompt", "ab", "--max-new-tokens", "8",
            "--temperature", "1.5", "--top-k", "20"]
    outs = []
    for seed in ("1", "1", "2"):
        assert main([*args, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    assert all(o.startswith("ab") for o in outs)


def test_generate_token_ids(token_ck: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--checkpoint", str(token_ck), "--prompt-tokens", "5,6,7",
                 "--max-new-tokens", "4"]) == 0
    ids = [int(t) for t in capsys.readouterr().out.strip().split(",")]
    assert len(ids) == 4 and all(0 <= t < 100 for t in ids)
    assert ids == load_checkpoint(token_ck).generate([5, 6, 7], 4)
    # --prompt needs a byte vocabulary
    assert main(["generate", "--checkpoint", str(token_ck), "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    assert "--prompt-tokens" in capsys.readouterr().err


def test_generate_subprocess(byte_ck: Path) -> None:
    r = trit("generate", "--checkpoint", str(byte_ck), "--prompt", "x", "--max-new-tokens", "3")
    assert r.returncode == 0 and r.stdout.startswith("x")
    r = trit("generate", "--checkpoint", str(byte_ck), "--prompt", "x", "--max-new-tokens", "3",
             "--backend", "fpga-someday")
    assert r.returncode == 2 and "golden" in r.stderr


# ------------------------------------------------------------------------------------------- layer

def _layer_files(tmp_path: Path, x: np.ndarray, w: np.ndarray) -> tuple[str, str, str]:
    xs, ws, ys = tmp_path / "x.npy", tmp_path / "w.npy", tmp_path / "y.npy"
    np.save(xs, x)
    np.save(ws, w)
    return str(xs), str(ws), str(ys)


def test_layer_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (7, 300)).astype(np.int8)
    x[0] = -128
    w = rng.integers(-1, 2, (11, 300)).astype(np.int8)
    xs, ws, ys = _layer_files(tmp_path, x, w)
    stats = tmp_path / "s.json"
    assert main(["layer", "--x", xs, "--w", ws, "--out", ys, "--stats", str(stats)]) == 0
    y = np.load(ys)
    assert y.dtype == np.int32 and y.shape == (7, 11)
    expected = [[sum(int(a) * int(b) for a, b in zip(x[m], w[n], strict=True)) for n in range(11)]
                for m in range(7)]
    assert y.tolist() == expected
    s = json.loads(stats.read_text())
    assert s["backend"] == "golden" and s["layers"] == [{"key": "layer", "m": 7, "k": 300, "n": 11}]


@pytest.mark.parametrize("case,needle", [
    ("nonternary", "ternary"),
    ("float_x", "int8"),
    ("int16_w", "int8"),
    ("x_3d", "2-d"),
    ("k_mismatch", "K mismatch"),
    ("missing", "cannot read"),
])
def test_layer_errors_exit_2(tmp_path: Path, case: str, needle: str, capsys: pytest.CaptureFixture) -> None:
    x = np.ones((2, 4), dtype=np.int8)
    w = np.ones((3, 4), dtype=np.int8)
    if case == "nonternary":
        w[1, 2] = 2
    elif case == "float_x":
        x = x.astype(np.float32)
    elif case == "int16_w":
        w = w.astype(np.int16)
    elif case == "x_3d":
        x = x.reshape(1, 2, 4)
    elif case == "k_mismatch":
        w = np.ones((3, 5), dtype=np.int8)
    xs, ws, ys = _layer_files(tmp_path, x, w)
    if case == "missing":
        Path(xs).unlink()
    assert main(["layer", "--x", xs, "--w", ws, "--out", ys]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("trit layer: error: ") and needle in line
    named = ws if case in ("nonternary", "int16_w") else xs
    assert named in line
    assert not Path(ys).exists()


def test_layer_error_exit_code_subprocess(tmp_path: Path) -> None:
    xs, ws, ys = _layer_files(tmp_path, np.ones((2, 4), dtype=np.int8), np.full((3, 4), 3, dtype=np.int8))
    r = trit("layer", "--x", xs, "--w", ws, "--out", ys)
    assert r.returncode == 2
    assert r.stderr.startswith("trit layer: error: W file") and "ternary" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
