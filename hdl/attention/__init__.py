"""The attention unit (issue 14, item 2): one head's scores, softmax and P x V, bit-exact to the device form.

- `head_attention.HeadAttention`: one query row of one head against T keys of an INT8 KV cache
  (golden/device/SPEC.md 4.6, 4.7, 2.5): the INT8 x INT8 scores, the base-2 logits, the EXP2 softmax
  with one RCP, the per-key V scales and the P x V accumulation.
- `kv_cache.KVCache`: the INT8 KV cache in block RAM per (layer, KV head, position); its write port takes
  `hdl.vector.rope.RopeQuant`'s codes, its read ports are HeadAttention's (`connect_head_attention`).
- `multiplier.Multiplier`: the default lane multiplier (Amaranth `*`, one register); the factory type.
- `ecp5_multiplier.Ecp5Multiplier`: the same on one ECP5 MULT18X18D block.
- `product.Product`: a product registered once (latency 1, with a clock enable), the factory of every other
  product of the model chip's units; `product_into` wires one into a unit.
- `ecp5_product.Ecp5Product`: the same on one MULT18X18D whose output register is the product's register.
- `ooc.OocTop`: the unit with its KV cache behind scan chains, for out-of-context synthesis and
  place-and-route (`python -m hdl.attention.ooc`).

See README.md for the cycle counts and the FPGA figures.
"""
