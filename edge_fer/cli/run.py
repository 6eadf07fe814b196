"""`edge-fer run`: the daemon, headless or with its live window, or the window alone (--gui)."""

from __future__ import annotations

import argparse
import logging
from typing import TextIO

from edge_fer.cli.parsing import Parser, add_config_options, add_model_option, config_overrides, setup_logging
from edge_fer.config import Config, load

log = logging.getLogger(__name__)

HELP = "the daemon: camera, tracking, MQTT events, until SIGTERM/SIGINT (SIGHUP reloads the config)"
SOURCE_HELP = "camera index, /dev/videoN, video file, stream URL or picamera2"
DISPLAY_HELP = "show the live window (needs a display)"
GUI_HELP = "open the window with no source running (open photos, start the camera)"


def build_parser(out: TextIO | None = None) -> Parser:
    """The options of `edge-fer run`."""
    p = Parser(prog="edge-fer run", description="Run " + HELP + ".", out=out)
    p.add_argument("--source", metavar="SRC", help=SOURCE_HELP)
    p.add_argument("--display", action="store_true", help=DISPLAY_HELP)
    p.add_argument("--gui", action="store_true", help=GUI_HELP)
    add_model_option(p)
    add_config_options(p)
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


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Load the config with this command line's overrides, then run the service; returns the exit status."""
    from edge_fer.live.capture import quiet_native_logs

    quiet_native_logs()
    overrides = config_overrides(args)
    cfg = load(args.config, overrides)
    setup_logging(cfg.logging.level)
    return run_service(args, overrides, cfg)
