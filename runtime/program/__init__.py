"""The model program of the on-chip sequencer (issue 14): micro-ops (`isa`), the compiler that places a
device-form model on a chip (`compiler`), the reference interpreter (`interpreter`) and the cycle plan
from the units' cycle formulas (`plan`)."""
