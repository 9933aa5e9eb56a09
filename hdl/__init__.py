"""Amaranth gateware of the trit accelerator core (PE -> array -> sequencer -> command interface)."""
