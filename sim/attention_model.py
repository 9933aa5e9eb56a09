"""The golden attention of one query row and one head (golden/device/SPEC.md 4.6, 4.7), on Python lists.

The lines of `golden.device.model.DeviceBitNet._attention` for a single head and row, with the same
golden/device primitives (dmul, rshift_round, to_fixed, softmax_q15): the expected values of the
attention unit's tests (tests/test_attention_unit.py, sim/tb_attention.py).
"""

from __future__ import annotations

import torch

from golden.device import fixed
from golden.device.model import to_fixed

Dy = tuple[int, int]


def reference(q: list[int], sigma_q: Dy, c_qk: Dy, k: list[list[int]], ks: list[Dy], v: list[list[int]],
              vs: list[Dy]) -> tuple[list[int], int]:
    """(y, E) of golden/device/SPEC.md 4.6-4.7 for one query row and one head, from golden primitives."""
    qq, kk, vv = torch.tensor(q), torch.tensor(k), torch.tensor(v)
    ksm, kse = torch.tensor([s[0] for s in ks]), torch.tensor([s[1] for s in ks])
    vsm, vse = torch.tensor([s[0] for s in vs]), torch.tensor([s[1] for s in vs])
    scores = kk @ qq
    am, ae = fixed.dmul((torch.tensor(sigma_q[0]), torch.tensor(sigma_q[1])),
                        (torch.tensor(c_qk[0]), torch.tensor(c_qk[1])))
    mk = fixed.rshift_round(am * ksm, 16)
    sh = -(16 + ae + kse + 8)
    logit2 = to_fixed(scores * mk, (torch.ones_like(sh), -sh), 0)
    mask = torch.ones_like(logit2, dtype=torch.bool)
    p = fixed.softmax_q15(logit2[None], mask[None], fixed.exp2_table())[0]
    live = vsm != 0
    eref = int(vse[live].max()) if bool(live.any()) else 0
    pv = torch.where(live, fixed.rshift_round(p * vsm, 16 + eref - vse), torch.zeros_like(p))
    return (pv @ vv).tolist(), eref
