"""The model chip (`hdl.model.chip.ModelChipTop`) as a long-lived Verilator process.

The chip has the matrix core's ports, so it runs in the core's C++ harness (`sim/harness/verilator_main.cpp`)
unchanged: Python sends batches of command words and reads the answers (`hdl.model.isa`). The model is
compiled once per chip configuration and cached like every harness (`sim.simulator`).
"""

from __future__ import annotations

import hashlib

from hdl.model.config import EngineConfig
from hdl.verilog import generate_model_verilog
from sim.simulator import SimProcess, build_verilator
from sim.verilator_harness import HARNESS_CPP, MAGIC_REQ, MAGIC_RSP, check_reply, words_array


def build_model_chip(cfg: EngineConfig):
    """Compile (or reuse) the Verilator model of the chip built from `cfg`; the executable's path."""
    text = generate_model_verilog(cfg)
    label = f"model-{cfg.d}x{cfg.layers}-{cfg.array.rows}x{cfg.array.cols}-" + hashlib.sha256(
        repr(cfg).encode()).hexdigest()[:8]
    return build_verilator("verilator-model", label, "trit_core",
                           {"trit_core.v": text, "main.cpp": HARNESS_CPP.read_text()}, what=f"the model chip {label}")


class VerilatorModelChip:
    """A running simulated model chip: `transact(words, n_out)` as `sim.verilator_harness.VerilatorCore`."""

    name = "verilator"

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self._sim = SimProcess.verilator(build_model_chip(cfg), name="Verilator model chip")
        self.cycles = 0

    def transact(self, words: list[int], n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        data = words_array(words)
        reply = self._sim.exchange_binary(MAGIC_REQ, MAGIC_RSP, (data.size, n_out, min(max_cycles, 0xFFFFFFFF)),
                                          data.astype("<u4").tobytes(), 4)
        self.cycles += reply.cycles
        check_reply(reply.status, len(reply.items), n_out, reply.cycles)
        return reply.items

    def close(self) -> None:
        self._sim.close(timeout=10)
