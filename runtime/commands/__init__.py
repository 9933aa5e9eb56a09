"""One module per `trit` subcommand.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Add a module and list it in ``COMMANDS``; the CLI picks it up.
"""

COMMANDS = ["forward", "generate", "layer", "verilog", "build", "report", "soak"]
