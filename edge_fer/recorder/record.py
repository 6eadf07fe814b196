"""`edge-fer record` (MQTT events into a database) and `edge-fer report` (timelines and totals out of it)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import queue
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from edge_fer.cli.main import _Parser, _setup_logging
from edge_fer.config import load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError, WriteError
from edge_fer.messaging.events import utc_iso
from edge_fer.messaging.mqtt import Incoming, MqttSubscriber
from edge_fer.recorder.store import (EventRow, MalformedMessage, Row, StateRow, Store, StoreError, event_row, is_url,
                            open_store, parse_time, state_row)

log = logging.getLogger(__name__)

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
BATCH = 500  # messages per transaction at most
INBOX_LIMIT = 100_000  # messages waiting for the database; only QoS 0 ones can pile up this far
PRUNE_EVERY = 3600.0  # seconds between retention passes
REPORT_SUFFIXES = (".png", ".html", ".csv")


def parse_duration(text: str, what: str) -> float:
    """'90s', '15m', '12h', '30d', '2w' (a bare number is seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"{what} {text!r}: expected a duration such as 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_since(text: str) -> float:
    """An ISO 8601 time (UTC unless it says otherwise), or a duration meaning that long ago."""
    with contextlib.suppress(ValueError):
        return parse_time(text)
    try:
        return time.time() - parse_duration(text, "--since")
    except UsageError:
        raise UsageError(f"--since {text!r}: expected an ISO 8601 time (2026-11-27T09:00) "
                         f"or a duration ago (90m, 12h, 7d)") from None


def build_parser() -> argparse.ArgumentParser:
    """The record and report subcommands."""
    p = _Parser(prog="edge-fer", description="Record emotion events into a database, and report on them.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    db_help = "a SQLite file, or a postgresql://user@host/db URL (password from PGPASSWORD or ~/.pgpass)"
    rec = sub.add_parser("record", help="subscribe to every device's events and state and store them")
    rec.add_argument("--db", required=True, help=db_help)
    rec.add_argument("--config", metavar="FILE", help="config file for the mqtt section (broker, prefix, login)")
    rec.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    rec.add_argument("--client-id", default="", help="MQTT client id, fixed so the session persists "
                                                    "(default edge-fer-recorder-<hostname>)")
    rec.add_argument("--share", metavar="GROUP", help="MQTT 5 shared subscription: recorders in one group "
                                                       "split the messages between them")
    rec.add_argument("--retention", metavar="DURATION", help="delete rows older than this (e.g. 30d), hourly")
    rec.add_argument("--session-expiry", metavar="DURATION", default="7d",
                     help="how long the broker keeps messages for a stopped recorder (default 7d)")
    rep = sub.add_parser("report", help="emotion timeline per device, totals, CSV/PNG/HTML export")
    rep.add_argument("--db", required=True, help=db_help)
    rep.add_argument("--device", help="only this device")
    rep.add_argument("--since", help="only events from this time: ISO 8601 (UTC) or a duration ago (12h, 7d)")
    rep.add_argument("--bucket", default="1m", help="timeline step (default 1m)")
    rep.add_argument("--out", metavar="FILE", help="also write report.png, report.html or report.csv")
    return p


class Recorder:
    """Validates messages, writes them in transactions, and acknowledges each only once it is committed."""

    def __init__(self, store: Store, db: str, prefix: str) -> None:
        self.store = store
        self.db = db
        self.prefix = prefix.rstrip("/") + "/"
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.stored = self.duplicates = self.conflicts = self.malformed = self.states = self.dropped = 0
        self.failing = False

    def put(self, msg: Incoming) -> None:
        """Called on the MQTT thread for each message; QoS 1 ones are bounded by the broker's in-flight window."""
        if self.inbox.qsize() >= INBOX_LIMIT:
            self.dropped += 1  # not acknowledged: a QoS 1 message comes again on the next connection
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d messages wait for the database: %d dropped so far", INBOX_LIMIT, self.dropped)
            return
        self.inbox.put(msg)

    def parse(self, msg: Incoming, received: float) -> EventRow | StateRow | None:
        """The row for one message; None (counted and logged) for anything that is not an edge-fer message."""
        device, _, kind = msg.topic[len(self.prefix):].rpartition("/")
        try:
            if not msg.topic.startswith(self.prefix) or "/" in device or not device:
                raise MalformedMessage("topic is not <prefix>/<device>/events or state")
            if kind == "events":
                return event_row(device, msg.payload, received)
            if kind == "state":
                return state_row(device, msg.payload, received)
            raise MalformedMessage("topic is not <prefix>/<device>/events or state")
        except MalformedMessage as e:
            self._malformed(msg.topic, e)
            return None

    def _malformed(self, topic: str, reason: object) -> None:
        self.malformed += 1
        if _worth_logging(self.malformed):
            log.warning("malformed message on %s (%s): not stored; %d so far", topic[:200], reason, self.malformed)

    def _conflict(self, row: Row) -> None:
        self.conflicts += 1
        if _worth_logging(self.conflicts):
            key = f"run_id {row.run_id!r} seq {row.seq}" if isinstance(row, EventRow) else f"ts {utc_iso(row.ts)}"
            log.warning("conflict on %s: %s is already stored with other content; the first is kept, this one "
                        "is not; %d so far", self._topic(row)[:200], key, self.conflicts)

    def _topic(self, row: Row) -> str:
        """The topic `row` came on (parse checked it is this)."""
        return f"{self.prefix}{row.device}/{'events' if isinstance(row, EventRow) else 'state'}"

    def write(self, batch: list[Incoming]) -> None:
        """Store a batch in one transaction (StoreError if it could not be)."""
        now = time.time()
        rows = [r for r in (self.parse(m, now) for m in batch) if r is not None]
        events, states = self.store.write([r for r in rows if isinstance(r, EventRow)],
                                          [r for r in rows if isinstance(r, StateRow)])
        for written in (events, states):
            for row, reason in written.refused:
                self._malformed(self._topic(row), f"the database refused it: {reason}")
            for row in written.conflicts:
                self._conflict(row)
        self.stored += events.added
        self.duplicates += events.repeats
        self.states += states.added + states.repeats + len(states.conflicts)

    def _take(self, pending: list[Incoming], timeout: float) -> None:
        if not pending:
            try:
                pending.append(self.inbox.get(timeout=timeout))
            except queue.Empty:
                return
        while len(pending) < BATCH:
            try:
                pending.append(self.inbox.get_nowait())
            except queue.Empty:
                return

    def _recover(self, e: StoreError, stop: threading.Event, delay: float) -> None:
        if not self.failing:
            log.error("%s; retrying, nothing is acknowledged until it is stored", e)
            self.failing = True
        if stop.wait(delay):
            return
        with contextlib.suppress(Exception):  # the broken connection may refuse to close; a new one replaces it
            self.store.close()
        try:
            self.store = open_store(self.db)
        except StoreError as again:
            log.debug("reopen failed: %s", again)

    def run(self, ack: Callable[[Incoming], None], stop: threading.Event, retention: float | None) -> int:
        """Write and acknowledge until `stop`, then what has arrived; returns the exit status."""
        pending: list[Incoming] = []
        next_prune = 0.0
        delay = 1.0
        while True:
            if retention and time.monotonic() >= next_prune and not self.failing:
                self._prune(retention)
                next_prune = time.monotonic() + PRUNE_EVERY
            stopping = stop.is_set()
            self._take(pending, 0.0 if stopping else 0.2)
            if not pending:
                if stopping:
                    return EXIT_OK
                continue
            try:
                self.write(pending)
            except StoreError as e:
                if stopping:
                    log.error("%s; %d messages not stored: the broker keeps them for the next run", e, len(pending))
                    return EXIT_RUNTIME
                self._recover(e, stop, delay)
                delay = min(30.0, delay * 2)
                continue
            if self.failing:
                log.info("%s: writing again", self.store.name)
                self.failing, delay = False, 1.0
            for msg in pending:
                ack(msg)
            pending = []
            if stopping:  # one last pass: what arrives from now on waits in the broker for the next run
                return EXIT_OK

    def _prune(self, retention: float) -> None:
        try:
            n = self.store.prune(time.time() - retention)
        except StoreError as e:
            log.error("%s", e)
            return
        if n:
            log.info("retention: deleted %d rows older than %s", n, _ago(retention))


def _worth_logging(count: int) -> bool:
    """The first ten of a kind of message are logged, then every thousandth."""
    return count <= 10 or count % 1000 == 0


def _ago(seconds: float) -> str:
    unit = next(u for u in ("w", "d", "h", "m", "s") if seconds >= UNITS[u] or u == "s")
    return f"{seconds / UNITS[unit]:g}{unit}"


def run_record(args: argparse.Namespace) -> int:
    """Record until SIGTERM or SIGINT."""
    cfg = load(args.config, args.set)
    _setup_logging(cfg.logging.level)
    # An empty value is refused as a bad one is: taken for "not given", it would silently keep everything.
    retention = parse_duration(args.retention, "--retention") if args.retention is not None else None
    expiry = int(parse_duration(args.session_expiry, "--session-expiry"))
    if expiry > 0xFFFFFFFF:
        raise UsageError("--session-expiry: at most 136 years")
    if args.share is not None and not re.fullmatch(r"[^/+#]+", args.share):
        raise UsageError(f"--share {args.share!r}: a group name without /, + or #")
    store = open_store(args.db)
    recorder = Recorder(store, args.db, cfg.mqtt.prefix)
    share = f"$share/{args.share}/" if args.share else ""
    topics = [f"{share}{cfg.mqtt.prefix}/+/events", f"{share}{cfg.mqtt.prefix}/+/state"]
    client_id = args.client_id or f"edge-fer-recorder-{socket.gethostname()}"
    subscriber = MqttSubscriber(cfg.mqtt, client_id, topics, recorder.put, expiry)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("recording into %s as MQTT client %s", store.name, client_id)
    subscriber.start()
    try:
        status = recorder.run(subscriber.ack, stop, retention)
    finally:
        subscriber.stop()
        recorder.store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped: %d events stored, %d duplicates skipped, %d conflicts (the first row kept), "
             "%d malformed messages, %d state messages", recorder.stored, recorder.duplicates, recorder.conflicts,
             recorder.malformed, recorder.states)
    return status


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


def run_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print totals; write the timeline as PNG, HTML or CSV."""
    from edge_fer.recorder import report

    bucket = parse_duration(args.bucket, "--bucket")
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
    print(report.summary(timelines), file=out)
    if target is None:
        return EXIT_OK
    if not timelines:
        print(f"edge-fer: no events to report; {args.out} not written", file=err)
        return EXIT_INPUT
    title = "edge-fer: emotions over time" + (f" on {args.device}" if args.device else "")
    try:
        report.save(target, timelines, title)
    except WriteError as e:
        print(f"edge-fer: {e}", file=err)
        return EXIT_INPUT
    print(f"wrote {args.out}", file=out)
    return EXIT_OK


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    """`edge-fer record ...` and `edge-fer report ...`; returns the exit status (see README)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "record":
            return run_record(args)
        return run_report(args, out, err)
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # --help ends argparse this way
        return int(e.code or 0)
