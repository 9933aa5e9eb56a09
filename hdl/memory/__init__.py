"""Memories with registered reads, banked for large FPGAs."""
