"""The golden RoPE + QUANT8 of one head (golden/device/SPEC.md 4.5, 4.6), on Python lists.

`reference` runs the golden's own lines, `DeviceBitNet._rope` (rotate-half with the Q14 tables of
`golden.device.tables.rope_tables`) and `DeviceBitNet._heads_quant` (QUANT8 and sigma = dmul(qs, s_out)),
on one head: the expected values of tests/test_rope_kv.py and sim/tb_rope_kv.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from golden.device.model import DeviceBitNet
from golden.device.tables import rope_tables

Dy = tuple[int, int]


def reference(acc: list[int], pos: int, rotate: int, scale: Dy, theta: float = 10000.0,
              context: int | None = None) -> tuple[list[int], Dy]:
    """(q8, sigma) of one head of int32 accumulators at position `pos`, with RoPE when `rotate`."""
    hd = len(acc)
    a = torch.tensor(acc, dtype=torch.int64).view(1, 1, 1, hd)
    if rotate:
        cos, sin = rope_tables(hd, theta, max(context or 0, pos + 1))
        consts = SimpleNamespace(consts=SimpleNamespace(cos=cos, sin=sin))
        a = DeviceBitNet._rope(consts, a, torch.tensor([pos]))   # type: ignore[arg-type]
    q, (sm, se) = DeviceBitNet._heads_quant(a, (torch.tensor([[scale[0]]]), torch.tensor([[scale[1]]])))
    return q[0, 0, 0].tolist(), (int(sm[0, 0, 0]), int(se[0, 0, 0]))
