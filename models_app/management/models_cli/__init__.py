"""The subcommands of `manage.py models`, one module per concern.

Each module's `add_parsers(sub)` adds its subcommands to the command's subparsers and
returns their handlers by name; a handler takes the command (for stdout and stderr) and
the parsed options, calls one service or runs one operation here, and exits 2 on failure
(a `ModelyardError` raised is mapped by `ModelyardCommand`).
"""
