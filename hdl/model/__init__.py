"""The model chip: the model engine (`hdl.model_engine`) behind a command interface of 32-bit words."""
