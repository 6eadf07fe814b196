"""`edge-fer record`: its options, checked, then the recorder run until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import re
import socket
from typing import TextIO

from edge_fer.cli.durations import parse_duration
from edge_fer.cli.parsing import Parser, setup_logging
from edge_fer.config import load
from edge_fer.errors import UsageError

HELP = "subscribe to every device's events and state and store them in a database"
DB_HELP = "a SQLite file, or a postgresql://user@host/db URL (password from PGPASSWORD or ~/.pgpass)"
MAX_SESSION_EXPIRY = 0xFFFFFFFF  # MQTT 5's session expiry interval is a 32-bit count of seconds


def build_parser(out: TextIO | None = None) -> Parser:
    """The options of `edge-fer record`."""
    p = Parser(prog="edge-fer record", description=HELP[0].upper() + HELP[1:] + ".", out=out)
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--config", metavar="FILE", help="config file for the mqtt section (broker, prefix, login)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--client-id", default="", help="MQTT client id, fixed so the session persists "
                                                  "(default edge-fer-recorder-<hostname>)")
    p.add_argument("--share", metavar="GROUP", help="MQTT 5 shared subscription: recorders in one group "
                                                     "split the messages between them")
    p.add_argument("--retention", metavar="DURATION", help="delete rows older than this (e.g. 30d), hourly")
    p.add_argument("--session-expiry", metavar="DURATION", default="7d",
                   help="how long the broker keeps messages for a stopped recorder (default 7d)")
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check the options, then record until SIGTERM or SIGINT; returns the exit status."""
    from edge_fer.recorder.record import record

    cfg = load(args.config, args.set)
    setup_logging(cfg.logging.level)
    # An empty value is refused as a bad one is: taken for "not given", it would silently keep everything.
    retention = parse_duration(args.retention, "--retention") if args.retention is not None else None
    expiry = int(parse_duration(args.session_expiry, "--session-expiry"))
    if expiry > MAX_SESSION_EXPIRY:
        raise UsageError("--session-expiry: at most 136 years")
    if args.share is not None and not re.fullmatch(r"[^/+#]+", args.share):
        raise UsageError(f"--share {args.share!r}: a group name without /, + or #")
    client_id = args.client_id or f"edge-fer-recorder-{socket.gethostname()}"
    return record(cfg.mqtt, args.db, client_id=client_id, share=args.share, retention=retention,
                  session_expiry=expiry)
