"""The edge-fer command: pick the subcommand (or today's flags), parse, run it through the one error funnel."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from edge_fer import __version__
from edge_fer.cli import check_config, image, record, report
from edge_fer.cli import run as run_command
from edge_fer.cli.funnel import funnel
from edge_fer.cli.parsing import Parser, Version, add_config_options, add_model_option, config_overrides, setup_logging
from edge_fer.config import load
from edge_fer.errors import UsageError


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its line in `edge-fer --help`, its parser and what runs it."""

    name: str
    help: str
    build_parser: Callable[[TextIO | None], Parser]
    run: Callable[[argparse.Namespace, TextIO, TextIO], int]


# Each module imports only light things at the top: `record` and `report` never load OpenCV or numpy.
COMMANDS = {c.name: c for c in (
    Command("image", image.HELP, image.build_parser, image.run),
    Command("run", run_command.HELP, run_command.build_parser, run_command.run),
    Command("record", record.HELP, record.build_parser, record.run),
    Command("report", report.HELP, report.build_parser, report.run),
    Command("check-config", check_config.HELP, check_config.build_parser, check_config.run),
)}


def _commands_epilog() -> str:
    """The subcommands, one a line, for the end of `edge-fer --help`."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {c.name:<{width}}  {c.help}" for c in COMMANDS.values()]
    return ("commands (each with its own --help, e.g. edge-fer record --help):\n" + "\n".join(lines) +
            "\n\nWithout a command, the options above work as they always have: --image answers for photos,\n"
            "--check-config checks the config, anything else runs the daemon.")


def build_parser(out: TextIO | None = None) -> Parser:
    """`edge-fer [options]`: today's flags, the default run; its help lists the subcommands."""
    p = Parser(prog="edge-fer", description="Facial emotion recognition on the edge: photos, cameras, MQTT.",
               epilog=_commands_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter, out=out,
               usage="edge-fer [COMMAND] [options]")
    p.add_argument("--image", nargs="+", metavar="PATH", help="analyze these images (folders expand) and exit")
    p.add_argument("--json", action="store_true", help="with --image: " + image.JSON_HELP)
    p.add_argument("--annotate", metavar="OUT", help="with --image: " + image.ANNOTATE_HELP)
    add_model_option(p)
    add_config_options(p)
    p.add_argument("--check-config", action="store_true", help="validate the config, print it, and exit")
    p.add_argument("--source", metavar="SRC", help="daemon: " + run_command.SOURCE_HELP)
    p.add_argument("--display", action="store_true", help="daemon: " + run_command.DISPLAY_HELP)
    p.add_argument("--gui", action="store_true", help=run_command.GUI_HELP)
    p.add_argument("--publish", action="store_true", help="with --image: " + image.PUBLISH_HELP)
    p.add_argument("--version", action=Version, version=f"edge-fer {__version__}", help="show the version and exit")
    return p


def run_default(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`edge-fer` with no subcommand, exactly as before subcommands: --check-config, --image, else the daemon."""
    from edge_fer.live.capture import quiet_native_logs

    quiet_native_logs()
    overrides = config_overrides(args)
    cfg = load(args.config, overrides, secrets=args.publish or not args.image)
    setup_logging(cfg.logging.level, quiet=bool(args.image) and not args.check_config)
    if args.check_config:
        return check_config.show(cfg, out, err)
    if args.image:
        return image.run_images(cfg, args, out, err)
    if args.json or args.annotate or args.publish:
        raise UsageError("--json, --annotate and --publish go with --image")
    return run_command.run_service(args, overrides, cfg)


def parse(argv: list[str], out: TextIO | None = None) -> tuple[Callable[..., int], argparse.Namespace]:
    """What runs for this command line, and its parsed options (UsageError for a bad one)."""
    if argv and argv[0] in COMMANDS:
        command = COMMANDS[argv[0]]
        return command.run, command.build_parser(out).parse_args(argv[1:])
    if argv and not argv[0].startswith("-"):
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown command {argv[0]!r}{hint} (see edge-fer --help)")
    return run_default, build_parser(out).parse_args(argv)


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status (see README) and never raises for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else argv

    def work() -> int:
        runner, args = parse(argv, out)
        return runner(args, out, err)

    return funnel(work, out, err)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
