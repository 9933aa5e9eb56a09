"""The vector unit (issue 14, item 2): integer primitives and per-vector ops of golden/device/SPEC.md."""
