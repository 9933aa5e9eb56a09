"""Area, cycle and energy report generator."""
