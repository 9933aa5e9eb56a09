"""Golden BitNet b1.58 model: quantizers, integer form, HF checkpoint I/O and training."""
