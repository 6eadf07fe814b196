"""python -m edge_fer."""

from edge_fer.cli.main import entry

entry()
