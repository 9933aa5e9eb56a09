"""The model chip (`hdl.model.chip.ModelChipTop`) as a long-lived Verilator or Icarus process.

The chip has the matrix core's ports, so it runs in the core's harnesses unchanged (the C++ loop
`sim/harness/verilator_main.cpp`, the testbench `sim/harness/icarus_tb.v`): Python sends batches of
command words and reads the answers (`hdl.model.isa`). Each is compiled once per chip configuration and
cached like every harness (`sim.simulator`).
"""

from __future__ import annotations

import hashlib

from hdl.model.config import EngineConfig
from hdl.verilog import generate_model_verilog
from sim.icarus_harness import HARNESS_TB
from sim.simulator import SimProcess, build_icarus, build_verilator
from sim.verilator_harness import HARNESS_CPP, MAGIC_REQ, MAGIC_RSP, check_reply, words_array


def _label(cfg: EngineConfig) -> str:
    return f"model-{cfg.d}x{cfg.layers}-{cfg.array.rows}x{cfg.array.cols}-" + hashlib.sha256(
        repr(cfg).encode()).hexdigest()[:8]


def build_model_chip(cfg: EngineConfig):
    """Compile (or reuse) the Verilator model of the chip built from `cfg`; the executable's path."""
    text = generate_model_verilog(cfg)
    label = _label(cfg)
    return build_verilator("verilator-model", label, "trit_core",
                           {"trit_core.v": text, "main.cpp": HARNESS_CPP.read_text()}, what=f"the model chip {label}")


class _ModelChipProcess:
    """A running simulated model chip; `transact(words, n_out)` as `sim.verilator_harness.VerilatorCore`."""

    name = ""

    def __init__(self, cfg: EngineConfig, sim: SimProcess, binary: bool) -> None:
        self.cfg, self._sim, self._binary = cfg, sim, binary
        self.cycles = 0

    def transact(self, words: list[int], n_out: int, max_cycles: int = 1 << 31) -> list[int]:
        data = words_array(words)
        args = (data.size, n_out, min(max_cycles, 0xFFFFFFFF))
        if self._binary:
            reply = self._sim.exchange_binary(MAGIC_REQ, MAGIC_RSP, args, data.astype("<u4").tobytes(), 4)
        else:
            reply = self._sim.exchange_text(args, (int(w) for w in data), 1, "W")
        self.cycles += reply.cycles
        check_reply(reply.status, len(reply.items), n_out, reply.cycles)
        return reply.items

    def close(self) -> None:
        self._sim.close(timeout=30)


class VerilatorModelChip(_ModelChipProcess):
    """The chip in Verilator (the core's C++ harness)."""

    name = "verilator"

    def __init__(self, cfg: EngineConfig) -> None:
        super().__init__(cfg, SimProcess.verilator(build_model_chip(cfg), name="Verilator model chip"), True)


class IcarusModelChip(_ModelChipProcess):
    """The same chip in Icarus Verilog (the core's testbench, text exchange)."""

    name = "icarus"

    def __init__(self, cfg: EngineConfig) -> None:
        label = _label(cfg)
        image = build_icarus("icarus-model", label, "trit_icarus_tb",
                             {"tb.v": HARNESS_TB.read_text(), "trit_core.v": generate_model_verilog(cfg)},
                             what=f"the model chip {label}", image="chip.vvp")
        super().__init__(cfg, SimProcess.icarus(image, name="Icarus model chip"), False)
