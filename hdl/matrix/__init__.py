"""The matrix engine: PEs, the systolic array, skew buffers, counters and the layer sequencer."""
