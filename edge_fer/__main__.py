"""python -m edge_fer."""

from edge_fer.cli import entry

entry()
