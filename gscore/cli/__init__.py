"""The ``gscore`` command line: one module per verb group (:mod:`~gscore.cli.main` wires them)."""

from gscore.cli.main import main

__all__ = ["main"]
