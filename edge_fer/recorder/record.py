"""The recorder: MQTT events and states from every device, validated and stored, each acknowledged once committed."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable

from edge_fer.config import MqttConfig
from edge_fer.errors import EXIT_OK, EXIT_RUNTIME
from edge_fer.messaging.events import utc_iso
from edge_fer.messaging.mqtt import Incoming, MqttSubscriber
from edge_fer.recorder.store import (
    EventRow,
    MalformedMessage,
    Row,
    StateRow,
    Store,
    StoreError,
    event_row,
    open_store,
    state_row,
)

log = logging.getLogger(__name__)

BATCH = 500  # messages per transaction at most
INBOX_LIMIT = 100_000  # messages waiting for the database; only QoS 0 ones can pile up this far
PRUNE_EVERY = 3600.0  # seconds between retention passes
# How a retention is said in the log: its largest whole unit.
_AGO_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


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
    unit, size = next((u, n) for u, n in _AGO_UNITS if seconds >= n or u == "s")
    return f"{seconds / size:g}{unit}"


def record(mqtt: MqttConfig, db: str, *, client_id: str, share: str | None, retention: float | None,
           session_expiry: int) -> int:
    """Record into `db` until SIGTERM or SIGINT; returns the exit status (StoreError if `db` cannot be opened)."""
    store = open_store(db)
    recorder = Recorder(store, db, mqtt.prefix)
    group = f"$share/{share}/" if share else ""
    topics = [f"{group}{mqtt.prefix}/+/events", f"{group}{mqtt.prefix}/+/state"]
    subscriber = MqttSubscriber(mqtt, client_id, topics, recorder.put, session_expiry)
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
