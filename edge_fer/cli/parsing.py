"""What every subcommand's parser shares: usage errors that point at the right --help, the config options, logging."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from edge_fer.errors import UsageError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as an EdgeFerError naming its own --help, and prints help to `out`."""

    def __init__(self, *args: Any, out: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_help(file or self.out)


class Version(argparse.Action):
    """--version, printed to the parser's `out` (argparse's own action always writes to sys.stdout)."""

    def __init__(self, option_strings: Sequence[str], dest: str, version: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        out = parser.out if isinstance(parser, Parser) and parser.out else sys.stdout
        print(self.version, file=out)
        parser.exit()


def add_config_options(p: argparse.ArgumentParser) -> None:
    """--config FILE and the repeatable --set section.key=value."""
    p.add_argument("--config", metavar="FILE",
                   help="config file (default ./config.yaml, then /etc/edge-fer/config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable)")


def add_model_option(p: argparse.ArgumentParser) -> None:
    """--model PATH."""
    p.add_argument("--model", metavar="PATH", help="a .tflite model with its .json sidecar (default: the shipped one)")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """--set, then --model and --source as the config keys they stand for."""
    # Paths and URLs are quoted so YAML takes them as strings; a bare number is a camera index.
    overrides = list(args.set)
    model = getattr(args, "model", None)
    source = getattr(args, "source", None)
    if model:
        overrides.append(f"classifier.model={json.dumps(model)}")
    if source:
        overrides.append(f"camera.source={source if source.isdigit() else json.dumps(source)}")
    return overrides


def setup_logging(level: str, quiet: bool = False) -> None:
    """Log lines to stderr at `level`; `quiet` (a one-shot answer) keeps INFO lines off unless DEBUG is asked for."""
    chosen = getattr(logging, level)
    if quiet and chosen != logging.DEBUG:
        chosen = max(chosen, logging.WARNING)
    logging.basicConfig(level=chosen, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
