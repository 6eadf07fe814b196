"""The edge-fer command: parse the command line, load the config, dispatch; returns the exit status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import TextIO

import yaml

from edge_fer import __version__
from edge_fer.config import Config, as_dict, load
from edge_fer.errors import EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError

log = logging.getLogger(__name__)

EXIT_PIPE = 128 + signal.SIGPIPE  # stdout closed by its reader, as a shell reports SIGPIPE


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as an EdgeFerError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see edge-fer --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="edge-fer", description="Facial emotion recognition on the edge: photos, cameras, MQTT.")
    p.add_argument("--image", nargs="+", metavar="PATH", help="analyze these images (folders expand) and exit")
    p.add_argument("--json", action="store_true", help="with --image: one JSON object per image")
    p.add_argument("--annotate", metavar="OUT", help="with --image: write annotated copies (a folder, or a file for one image)")
    p.add_argument("--model", metavar="PATH", help="a .tflite model with its .json sidecar (default: the shipped one)")
    p.add_argument("--config", metavar="FILE", help="config file (default ./config.yaml, then /etc/edge-fer/config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--check-config", action="store_true", help="validate the config, print it, and exit")
    p.add_argument("--source", metavar="SRC", help="daemon: camera index, /dev/videoN, video file, stream URL or picamera2")
    p.add_argument("--display", action="store_true", help="daemon: show the live window (needs a display)")
    p.add_argument("--gui", action="store_true", help="open the window with no source running (open photos, start the camera)")
    p.add_argument("--publish", action="store_true", help="with --image: also send the results to the MQTT events topic")
    p.add_argument("--version", action="version", version=f"edge-fer {__version__}")
    return p


def run_service(args: argparse.Namespace, overrides: list[str], cfg: Config) -> int:
    """The daemon, headless or with its window, or the window alone (--gui)."""
    from edge_fer.live.service import Service, display_available

    service = Service(cfg, args.config, overrides)
    if args.gui or args.display:
        return service.run_window(camera=args.display)
    if cfg.display.enabled:
        if display_available():
            return service.run_window(camera=True)
        log.info("display.enabled but no display here: running headless")
    return service.run_headless()


def _silence_stdout(out: TextIO) -> None:
    """Point a closed stdout at /dev/null so Python's final flush does not print a traceback."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status (see README) and never raises for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["record"], ["report"]):
        from edge_fer.recorder.record import main as record_main

        return record_main(argv, out, err)
    # The vision stack loads only here: `edge-fer record` and `report` (and their imports of this module)
    # stay light.
    from edge_fer.live.capture import quiet_native_logs
    from edge_fer.cli.image import run_images

    try:
        quiet_native_logs()
        args = build_parser().parse_args(argv)
        # Paths and URLs are quoted so YAML takes them as strings; a bare number is a camera index.
        overrides = list(args.set) + ([f"classifier.model={json.dumps(args.model)}"] if args.model else [])
        if args.source:
            overrides.append(f"camera.source={args.source if args.source.isdigit() else json.dumps(args.source)}")
        cfg = load(args.config, overrides, secrets=args.publish or not args.image)
        _setup_logging(cfg.logging.level)
        if args.check_config:
            print(f"{cfg.source_file}: OK", file=err)
            print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="", file=out)
            return EXIT_OK
        if args.image:
            return run_images(cfg, args, out, err)
        if args.json or args.annotate or args.publish:
            raise UsageError("--json, --annotate and --publish go with --image")
        return run_service(args, overrides, cfg)
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly with the status a shell gives a tool killed by SIGPIPE.
        _silence_stdout(out)
        return EXIT_PIPE
    except MemoryError:
        print("edge-fer: out of memory", file=err)
        return EXIT_RUNTIME
    except SystemExit as e:  # --help and --version end argparse this way; main still returns
        return int(e.code or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
