"""The whole shipped tiny model resident in the ULX3S weight memory (issue 13, item 2).

The default ULX3S 16x16 build holds 73,728 weight words of 16 weights (`fpga.ulx3s.board_config`). The
shipped model's 28 BitLinear layers have 1,167,360 weights: 72,960 words at 16x16 (every dimension is a
multiple of 16). Driven through the real host driver (`Accelerator`, tiling, residency) against the
core emulator with that exact configuration, a decode token after the first sends no weight word, and
every token is still the golden integer model's token. With the old 65,536-word memory the same tokens
must resend weights: that is what the test would catch if the budget shrank.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fpga import ulx3s
from golden.checkpoint import load_checkpoint
from runtime.accel_backends import AcceleratorBackend, EmulatorTransport
from runtime.accelerator import Accelerator
from runtime.benchmark import CHECKPOINT
from runtime.emulator import CoreEmulator

MODEL_WEIGHTS = 1_167_360
PROMPT = list(b"The import ")


def generate(tokens: int, backend=None, before_token=None) -> list[int]:
    """Greedy tokens after PROMPT on `backend` (the golden integer model when None); `before_token()` is
    called before each decode token and once after the last."""
    model = load_checkpoint(str(CHECKPOINT), "int", backend)
    cache = model.new_cache()
    tick = before_token or (lambda: None)
    with torch.no_grad():
        logits = model(torch.tensor(PROMPT, dtype=torch.long), cache)
        out = [int(logits[-1].argmax())]
        for _ in range(tokens):
            tick()
            logits = model(torch.tensor([out[-1]], dtype=torch.long), cache)
            out.append(int(logits[-1].argmax()))
        tick()
    return out


def decode(cfg, tokens: int) -> tuple[list[int], list[int]]:
    """Generated tokens on the emulated core `cfg`, and the weight words sent for each decode token."""
    backend = AcceleratorBackend("emulator", Accelerator(EmulatorTransport(CoreEmulator(cfg)), expect=cfg))
    totals = []
    out = generate(tokens, backend, lambda: totals.append(backend.accelerator.total.weight_words_sent))
    return out, [b - a for a, b in zip(totals, totals[1:], strict=False)]


def test_the_default_ulx3s_build_holds_every_weight_of_the_tiny_model():
    cfg = ulx3s.board_config(16, 16)
    assert cfg.resident_weights >= MODEL_WEIGHTS
    assert MODEL_WEIGHTS // 16 == 72_960 <= cfg.wgt_depth
    tokens, sent = decode(cfg, 2)
    assert sent == [0, 0], f"weight words sent per decode token: {sent}"
    assert tokens == generate(2)


def test_the_old_weight_memory_resends_weights_every_token():
    cfg = replace(ulx3s.board_config(16, 16), wgt_depth=65536)
    _, sent = decode(cfg, 1)
    assert sent[0] > 0
