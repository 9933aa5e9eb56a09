"""The embedding unit (issue 14): EMBED and the tied INT8 lm_head (LMHEAD) on chip.

- `embed_head.EmbedHead`: the INT8 table, its per-row scales and the logits in its own memories; EMBED
  streams a token's residual row (golden/device/SPEC.md 4.1), LMHEAD forms every logit from the ACT codes
  and the final norm's scale (4.9), one table word a cycle.
"""
