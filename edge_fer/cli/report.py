"""`edge-fer report`: its options, the totals printed, the timeline written as PNG, HTML or CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from edge_fer.cli.durations import parse_duration, parse_since
from edge_fer.cli.parsing import Parser
from edge_fer.cli.record import DB_HELP
from edge_fer.errors import ExitStatus, UsageError, WriteError

HELP = "emotion timeline per device, totals, CSV/PNG/HTML export"
REPORT_SUFFIXES = (".png", ".html", ".csv")


def build_parser(out: TextIO | None = None) -> Parser:
    """The options of `edge-fer report`."""
    p = Parser(prog="edge-fer report", description="Report on recorded events: " + HELP + ".", out=out)
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--device", help="only this device")
    p.add_argument("--since", help="only events from this time: ISO 8601 (UTC) or a duration ago (12h, 7d)")
    p.add_argument("--bucket", default="1m", help="timeline step (default 1m)")
    p.add_argument("--out", metavar="FILE", help="also write report.png, report.html or report.csv")
    p.add_argument("--tz", default="local", metavar="ZONE",
                   help="time zone of the printed start, the picture and the page: an IANA name (Europe/Berlin), "
                        "UTC, or local (default)")
    return p


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, err: TextIO, total: int, what: str) -> None:
        self.err, self.total, self.what = err, total, what
        self.on = total > 0 and hasattr(err, "isatty") and err.isatty()

    def __call__(self, done: int) -> None:
        """Redraw for `done` items."""
        if self.on:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 30)
            self.err.write(f"\r{self.what} [{bar:<30}] {frac:4.0%} {done}/{self.total}")
            self.err.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.on:
            self(self.total)
            self.err.write("\n")


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print totals; write the timeline as PNG, HTML or CSV; returns the exit status."""
    from edge_fer.recorder import report
    from edge_fer.recorder.store import is_url, open_store

    bucket = parse_duration(args.bucket, "--bucket")
    tz = report.parse_tz(args.tz)
    # An empty --since or --out is refused as a bad one is, not taken for "not given".
    since = parse_since(args.since) if args.since is not None else None
    target = Path(args.out) if args.out is not None else None
    if target is not None and target.suffix.lower() not in REPORT_SUFFIXES:
        raise UsageError(f"--out {args.out}: the name must end in .png, .html or .csv")
    if target is not None and not is_url(args.db) and target.resolve() == Path(args.db).expanduser().resolve():
        raise UsageError(f"--out {args.out} is the database itself")
    with open_store(args.db, create=False) as store:
        progress = Progress(err, store.count_events(args.device, since), "reading events")
        timelines = report.build(store.events(args.device, since, report.REPORT_COLUMNS), bucket, progress)
        progress.close()
    print(report.summary(timelines, tz), file=out)
    if target is None:
        return ExitStatus.OK
    if not timelines:
        print(f"edge-fer: no events to report; {args.out} not written", file=err)
        return ExitStatus.INPUT
    title = "edge-fer: emotions over time" + (f" on {args.device}" if args.device else "")
    try:
        report.save(target, timelines, title, tz)
    except WriteError as e:
        print(f"edge-fer: {e}", file=err)
        return ExitStatus.INPUT
    print(f"wrote {args.out}", file=out)
    return ExitStatus.OK
