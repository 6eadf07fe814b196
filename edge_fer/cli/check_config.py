"""`edge-fer check-config`: validate the config and print it, merged with the defaults."""

from __future__ import annotations

import argparse
from typing import TextIO

import yaml

from edge_fer.cli.parsing import Parser, add_config_options
from edge_fer.config import Config, as_dict, load
from edge_fer.errors import ExitStatus

HELP = "validate the config and print it, merged with the defaults"


def build_parser(out: TextIO | None = None) -> Parser:
    """The options of `edge-fer check-config`."""
    p = Parser(prog="edge-fer check-config", description=HELP[0].upper() + HELP[1:] + ".", out=out)
    add_config_options(p)
    return p


def show(cfg: Config, out: TextIO, err: TextIO) -> int:
    """'<file>: OK' on stderr and the merged config as YAML on stdout (the password masked)."""
    print(f"{cfg.source_file}: OK", file=err)
    print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="", file=out)
    return ExitStatus.OK


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Load and validate (the password too, as the daemon would) and print; returns the exit status."""
    return show(load(args.config, args.set), out, err)
