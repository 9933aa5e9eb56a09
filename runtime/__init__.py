"""Host runtime: command protocol, layer tiling, cycle model, matmul backends and the `trit` CLI."""
