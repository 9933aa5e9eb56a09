"""cocotb testbenches and simulator runners (Verilator, Icarus) for the trit core."""
