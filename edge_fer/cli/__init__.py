"""The one command line, edge-fer, and its subcommands."""

from edge_fer.cli.main import entry, main

__all__ = ["entry", "main"]
