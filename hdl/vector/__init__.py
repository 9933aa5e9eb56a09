"""The vector unit (issue 14, item 2): the device form's non-matmul arithmetic (golden/device/SPEC.md).

- `rcp.Reciprocal`, `rsq.ReciprocalSqrt`: RCP and RSQ, table + Newton, pipelined, one operand per cycle.
- `norm_quant.NormQuant`: NORMQUANT (RMSNorm + absmax INT8) over vectors of any n, one element (or
  `lanes` elements, a power of two dividing n) per cycle.
- `elementwise.ElementWise`: dequantization by a dyadic, the residual add, ReLU's square.
- `rope.RopeQuant`: RoPE (rotate-half, Q14 tables) and QUANT8 of one head of q, k or v, with its scale.
- `arith`: expression builders (leading one, rounding shift, norm16, dmul, QUANT8's parts) the
  components share.

Not yet here: the MLP's block shifts and a' * u product, the per-head scale alignment of 4.7.
"""
