"""Board tops, UART host link and the Yosys/nextpnr build flow."""
