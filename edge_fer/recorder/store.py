"""Where `edge-fer record` keeps events: the schema, its migrations, and writes to SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlsplit

from edge_fer.errors import EXIT_INPUT, EdgeFerError, redacted
from edge_fer.messaging.contract import FER_LABELS, Event, MalformedDocument, State
from edge_fer.messaging.contract import parse_time as parse_time  # where the CLI and tests have found it

log = logging.getLogger(__name__)

# The seven score columns: the shipped model's labels. Another model's scores are in the `scores` column.
EMOTIONS = FER_LABELS


class StoreError(EdgeFerError):
    """A database that cannot be opened, created, migrated or written."""

    exit_code = EXIT_INPUT


# A message on an events or state topic that is not what edge-fer publishes (messaging/contract.py says what is).
MalformedMessage = MalformedDocument


class EventRow(NamedTuple):
    """One event as stored (README: The schema); a tuple, as the drivers take it."""

    device: str
    run_id: str
    seq: int
    type: str
    track_id: int | None
    emotion: str
    confidence: float
    angry: float | None  # the score of each FER-2013 label the model has; null for one it lacks
    disgust: float | None
    fear: float | None
    happy: float | None
    sad: float | None
    surprise: float | None
    neutral: float | None
    box_x: int
    box_y: int
    box_w: int
    box_h: int
    frame_w: int
    frame_h: int
    ts: float
    frame_ts: float | None
    received: float
    duration: float | None
    detector_score: float | None
    scores: str | None  # every score, as a JSON object in the model's order (null in rows from schema 1)


class StateRow(NamedTuple):
    """The compact part of one state message: how many faces, the dominant emotion, the camera."""

    device: str
    run_id: str
    ts: float
    received: float
    faces: int
    dominant_emotion: str | None
    camera: str
    fps: float


EVENT_COLUMNS = EventRow._fields
STATE_COLUMNS = StateRow._fields
Row = EventRow | StateRow


class Table(NamedTuple):
    """Where one kind of row is stored."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # unique together: a row whose key is stored is skipped
    probe: Row  # a row any working database takes, only ever rolled back


# A probe's device "/" is no topic level, so it never meets a stored key.
EVENTS = Table("events", EVENT_COLUMNS, ("device", "run_id", "seq"),
               EventRow("/", "", 0, "image", None, "neutral", 1.0, *(0.0,) * 6, 1.0, 0, 0, 1, 1, 1, 1, 0.0,
                        None, 0.0, None, None, '{"neutral": 1.0}'))
STATES = Table("states", STATE_COLUMNS, ("device", "ts"), StateRow("/", "", 0.0, 0.0, 0, None, "", 0.0))


class Written(NamedTuple):
    """What one write did with one table's rows."""

    added: int
    repeats: int  # already stored with the same content (`received` aside): a QoS 1 redelivery
    conflicts: list[Row]  # skipped, their key stored with other content (one is forged): the first row is kept
    refused: list[tuple[Row, str]]  # rows the database refused on their own, and why


V1_EVENT_COLUMNS = EVENT_COLUMNS[:-1]  # schema 1 had no `scores`
# Each version is the statements that take the schema from the one before to it; `{id}` and `{real}`
# are the backend's auto-increment key and double type. Never edit a released version: add one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id {id}, device TEXT NOT NULL, run_id TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL,
            track_id BIGINT, emotion TEXT NOT NULL, confidence {real} NOT NULL,
            angry {real} NOT NULL, disgust {real} NOT NULL, fear {real} NOT NULL, happy {real} NOT NULL,
            sad {real} NOT NULL, surprise {real} NOT NULL, neutral {real} NOT NULL,
            box_x INTEGER NOT NULL, box_y INTEGER NOT NULL, box_w INTEGER NOT NULL, box_h INTEGER NOT NULL,
            frame_w INTEGER NOT NULL, frame_h INTEGER NOT NULL,
            ts {real} NOT NULL, frame_ts {real}, received {real} NOT NULL, duration {real}, detector_score {real},
            UNIQUE (device, run_id, seq))""",
        "CREATE INDEX events_device_ts ON events (device, ts)",
        "CREATE INDEX events_ts ON events (ts)",
        """CREATE TABLE states (
            id {id}, device TEXT NOT NULL, run_id TEXT NOT NULL, ts {real} NOT NULL, received {real} NOT NULL,
            faces INTEGER NOT NULL, dominant_emotion TEXT, camera TEXT NOT NULL, fps {real} NOT NULL,
            UNIQUE (device, ts))""",
        "CREATE INDEX states_ts ON states (ts)",
    ),
    (
        # Labels travel with the events: a model without some FER-2013 label leaves its column null, and every
        # score is kept in `scores`. Neither database can drop NOT NULL in a way the other understands, so the
        # table is copied (ids renumbered in their order; nothing refers to them).
        """CREATE TABLE events_v2 (
            id {id}, device TEXT NOT NULL, run_id TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL,
            track_id BIGINT, emotion TEXT NOT NULL, confidence {real} NOT NULL,
            angry {real}, disgust {real}, fear {real}, happy {real}, sad {real}, surprise {real}, neutral {real},
            box_x INTEGER NOT NULL, box_y INTEGER NOT NULL, box_w INTEGER NOT NULL, box_h INTEGER NOT NULL,
            frame_w INTEGER NOT NULL, frame_h INTEGER NOT NULL,
            ts {real} NOT NULL, frame_ts {real}, received {real} NOT NULL, duration {real}, detector_score {real},
            scores TEXT, UNIQUE (device, run_id, seq))""",
        f"INSERT INTO events_v2 ({', '.join(V1_EVENT_COLUMNS)}) SELECT {', '.join(V1_EVENT_COLUMNS)} FROM events "
        "ORDER BY id",
        "DROP TABLE events",
        "ALTER TABLE events_v2 RENAME TO events",
        "CREATE INDEX events_device_ts ON events (device, ts)",
        "CREATE INDEX events_ts ON events (ts)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


MAX_PAYLOAD = 256 * 1024  # ten times the largest state edge-fer publishes (256 faces), so parsing costs little


def _json_object(payload: bytes, device: str) -> dict[str, object]:
    """The payload as a JSON object that names `device`, its topic's device, as its own."""
    if len(payload) > MAX_PAYLOAD:
        raise MalformedMessage(f"larger than {MAX_PAYLOAD // 1024} KiB")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MalformedMessage("not JSON") from None
    except RecursionError:  # the parser's depth is bounded by the interpreter's recursion limit
        raise MalformedMessage("nested too deep") from None
    if not isinstance(doc, dict):
        raise MalformedMessage("not a JSON object")
    if doc.get("device") != device:
        raise MalformedMessage("its device does not match its topic")
    return doc


def event_row(device: str, payload: bytes, received: float) -> EventRow:
    """The row for one events message from `device`'s topic; MalformedMessage if it is not an edge-fer event."""
    e = Event.parse(_json_object(payload, device))
    # A topic level may be 65535 bytes long: the contract bounds the device's name like any other string.
    x, y, w, h = e.box
    fw, fh = e.frame_size
    s = e.scores
    return EventRow(device, e.run_id, e.seq, e.type.value, e.track_id, e.emotion, e.confidence, s.get("angry"),
                    s.get("disgust"), s.get("fear"), s.get("happy"), s.get("sad"), s.get("surprise"),
                    s.get("neutral"), x, y, w, h, fw, fh, e.ts, e.frame_ts, received, e.duration, e.detector_score,
                    json.dumps(s))


def state_row(device: str, payload: bytes, received: float) -> StateRow:
    """The compact row for one state message; MalformedMessage if it is not an edge-fer state."""
    s = State.parse(_json_object(payload, device))
    return StateRow(device, s.run_id, s.ts, received, s.faces, s.dominant_emotion, s.camera, s.fps)


def redact(db: str) -> str:
    """The database as it may be shown: a URL's password (in the authority or the query) replaced by ***."""
    return redacted(db) if is_url(db) else db


def is_url(db: str) -> bool:
    """A database given as a URL rather than a path."""
    return "://" in db


def is_postgres(db: str) -> bool:
    """True for a postgresql:// (or postgres://) URL."""
    return db.startswith(("postgresql://", "postgres://"))


class _Connection(Protocol):
    """What Store needs of a DB-API connection."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class Dialect(NamedTuple):
    """How SQL differs between the two databases."""

    placeholder: str
    id: str  # an auto-increment primary key
    real: str
    lock: str  # takes a lock for the current transaction, so migrations run one at a time


SQLITE = Dialect("?", "INTEGER PRIMARY KEY", "REAL", "BEGIN IMMEDIATE")
POSTGRES = Dialect("%s", "BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "SELECT pg_advisory_xact_lock(7411)")


def _detail(e: Exception, secret: str) -> str:
    """A driver's message on one line, with no password in it."""
    detail = " ".join(str(e).split()) or type(e).__name__
    return detail.replace(secret, "***") if secret else detail


class OpenFile(NamedTuple):
    """The file a SQLite connection opened, by device and inode: what its path must still hold."""

    path: Path
    device: int
    inode: int

    @classmethod
    def at(cls, path: Path) -> OpenFile:
        """The file at `path` now."""
        st = os.stat(path)
        return cls(path, st.st_dev, st.st_ino)

    def still_there(self) -> bool:
        """True while the path holds this file: not deleted, not moved away, nothing moved over it."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.device, self.inode)


class Store:
    """A database of events and states, with the schema at SCHEMA_VERSION; one connection, one thread."""

    def __init__(self, conn: _Connection, name: str, dialect: Dialect, errors: tuple[type[Exception], ...],
                 data_errors: tuple[type[Exception], ...], secret: str = "", file: OpenFile | None = None) -> None:
        """`data_errors`: what the driver raises for one row it cannot take (some are not among `errors`).

        `file`: a SQLite file, checked around each write so that nothing is committed unseen into a deleted one."""
        self.conn = conn
        self.name = name
        self._dialect = dialect
        self._errors = errors
        self._data_errors = data_errors
        self._secret = secret
        self._file = file

    def _moved(self) -> bool:
        """True for a SQLite file deleted, moved away or moved over since it was opened."""
        return self._file is not None and not self._file.still_there()

    def _keep_wal_with_file(self) -> None:
        """Copy the WAL's committed pages into the open file: SQLite skips that when it closes a moved file."""
        with contextlib.suppress(*self._errors):  # at worst the pages stay in the -wal file next to the path
            self.conn.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _check_file(self) -> None:
        """StoreError once the path no longer holds the file this connection writes."""
        if self._moved():
            # Rows committed into a deleted file are lost; the path's -wal would be taken for a newcomer's.
            self._keep_wal_with_file()
            raise StoreError(f"{self.name}: the database file was deleted or replaced while open")

    def _sql(self, text: str) -> str:
        return text.replace("?", self._dialect.placeholder)

    def _rollback(self) -> None:
        with contextlib.suppress(*self._errors):  # a connection that is gone has nothing to roll back
            self.conn.rollback()

    def _fail(self, what: str, e: Exception) -> StoreError:
        """A one-line StoreError for a driver error (its transaction rolled back), with no password in it."""
        self._rollback()
        return StoreError(f"{self.name}: {what}: {_detail(e, self._secret)}")

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version found before. A newer schema is refused."""
        try:
            cur = self.conn.cursor()
            cur.execute(self._dialect.lock)  # one migration at a time when recorders share a database
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            found = cur.fetchone()[0] or 0
            if found > SCHEMA_VERSION:
                self._rollback()
                raise StoreError(f"{self.name}: schema version {found} is newer than this edge-fer knows "
                                 f"({SCHEMA_VERSION}); upgrade edge-fer")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    cur.execute(statement.format(id=self._dialect.id, real=self._dialect.real))
                cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
                log.info("%s: schema migrated to version %d", self.name, version)
            self.conn.commit()
            return found
        except self._errors as e:
            raise self._fail("cannot create the schema", e) from None

    def write(self, events: list[EventRow], states: list[StateRow]) -> tuple[Written, Written]:
        """Insert in one transaction: rows already there are skipped, rows refused alone are left out."""
        batches: tuple[tuple[Table, list[Row]], ...] = ((EVENTS, list(events)), (STATES, list(states)))
        self._check_file()
        try:
            cur = self.conn.cursor()
            try:
                inserted: list[tuple[int, list[tuple[Row, str]]]] = [
                    (self._insert_many(cur, table, rows), []) for table, rows in batches]
            except self._data_errors:  # one bad row fails its batch: find it, or the batch would fail forever
                self._rollback()
                # Still one transaction: SQLite commits as soon as a savepoint that began one is released.
                cur.execute("SAVEPOINT batch")
                inserted = [self._insert_each(cur, table, rows) for table, rows in batches]
            event_outcome, state_outcome = (self._outcome(cur, table, rows, added, refused)
                                            for (table, rows), (added, refused) in zip(batches, inserted))
            self.conn.commit()
            # Gone during the transaction: the rows are in the old file only, so none is acknowledged.
            self._check_file()
            return event_outcome, state_outcome
        except (*self._errors, *self._data_errors) as e:
            raise self._fail("cannot write", e) from None

    def _insert_many(self, cur: Any, table: Table, rows: list[Row]) -> int:
        if not rows:
            return 0
        cur.executemany(self._insert(table), rows)
        return cur.rowcount  # both drivers sum executemany's row counts; a skipped duplicate counts 0

    def _insert_each(self, cur: Any, table: Table, rows: list[Row]) -> tuple[int, list[tuple[Row, str]]]:
        """Row by row, each in a savepoint: the rows added, and those the database refused (with why)."""
        added, refused = 0, []
        for row in rows:
            cur.execute("SAVEPOINT one")
            try:
                cur.execute(self._insert(table), row)
                added += cur.rowcount
            except self._data_errors as e:
                cur.execute("ROLLBACK TO SAVEPOINT one")
                refused.append((row, _detail(e, self._secret)))
            cur.execute("RELEASE SAVEPOINT one")
        if refused:
            # A database that refuses even the probe refuses every row: that is retried, not malformed messages.
            cur.execute("SAVEPOINT probe")
            cur.execute(self._insert(table), table.probe)
            cur.execute("ROLLBACK TO SAVEPOINT probe")
        return added, refused

    def _outcome(self, cur: Any, table: Table, rows: list[Row], added: int, refused: list[tuple[Row, str]]) -> Written:
        """Tell the rows skipped as repeats from those whose key was stored with other content."""
        left_out = {row for row, _ in refused}
        taken = [row for row in rows if row not in left_out]
        conflicts = []
        if added < len(taken):
            compared = [c for c in table.columns if c != "received"]
            sql = self._sql(f"SELECT {', '.join(compared)} FROM {table.name} WHERE "
                            + " AND ".join(f"{k} = ?" for k in table.key))
            for row in taken:
                cur.execute(sql, [getattr(row, k) for k in table.key])
                if tuple(cur.fetchone()) != tuple(getattr(row, c) for c in compared):
                    conflicts.append(row)
        return Written(added, len(taken) - added - len(conflicts), conflicts, refused)

    def _insert(self, table: Table) -> str:
        marks = ", ".join("?" * len(table.columns))
        return self._sql(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks}) "
                         f"ON CONFLICT ({', '.join(table.key)}) DO NOTHING")

    def prune(self, before: float) -> int:
        """Delete events and states older than `before` (seconds since the epoch); returns rows deleted."""
        try:
            cur = self.conn.cursor()
            cur.execute(self._sql("DELETE FROM events WHERE ts < ?"), (before,))
            n = cur.rowcount
            cur.execute(self._sql("DELETE FROM states WHERE ts < ?"), (before,))
            n += cur.rowcount
            self.conn.commit()
            return n
        except self._errors as e:
            raise self._fail("cannot prune", e) from None

    def _where(self, device: str | None, since: float | None) -> tuple[str, list[Any]]:
        terms: list[str] = []
        args: list[Any] = []
        if device is not None:
            terms.append("device = ?")
            args.append(device)
        if since is not None:
            terms.append("ts >= ?")
            args.append(since)
        return (" WHERE " + " AND ".join(terms) if terms else ""), args

    def count_events(self, device: str | None = None, since: float | None = None) -> int:
        """How many stored events match."""
        where, args = self._where(device, since)
        return self._query(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]

    def events(self, device: str | None = None, since: float | None = None,
               columns: tuple[str, ...] = EVENT_COLUMNS) -> Iterator[tuple[Any, ...]]:
        """Stored events, by device then time, as tuples of `columns`."""
        where, args = self._where(device, since)
        cur = self._query(f"SELECT {', '.join(columns)} FROM events{where} ORDER BY device, ts, seq", args,
                          stream=True)
        try:
            while rows := cur.fetchmany(5000):
                yield from rows
        except self._errors as e:
            raise self._fail("cannot read", e) from None

    def _query(self, sql: str, args: list[Any], stream: bool = False) -> Any:
        try:
            # psycopg's default cursor fetches the whole result at once; a named one is read on the server.
            cur = self.conn.cursor(name="edge_fer_events") if stream and self._dialect is POSTGRES else \
                self.conn.cursor()
            cur.execute(self._sql(sql), args)
            return cur
        except self._errors as e:
            raise self._fail("cannot read", e) from None

    def close(self) -> None:
        """Close the connection (a SQLite file moved away keeps what was committed into it)."""
        if self._moved():
            self._keep_wal_with_file()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlite(path: str, create: bool) -> Store:
    target = Path(path).expanduser()
    if not create and not target.is_file():
        raise StoreError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(target, check_same_thread=False)
        # WAL lets `report` read while `record` writes; FULL syncs each commit before messages are acknowledged.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        opened = OpenFile.at(target)  # setting WAL has written the file's header: it exists now
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"{path}: cannot open the database: {e}") from None
    # OverflowError: an integer beyond SQLite's; InterfaceError: a value it cannot bind.
    return Store(conn, path, SQLITE, (sqlite3.Error,),
                 (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, UnicodeEncodeError),
                 file=opened)


def _postgres(url: str) -> Store:
    try:
        import psycopg
    except ImportError:
        raise StoreError('PostgreSQL needs psycopg: pip install "edge-fer[postgres]"') from None
    shown = redact(url)
    secret = urlsplit(url).password or dict(parse_qsl(urlsplit(url).query)).get("password", "")
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except (psycopg.Error, ValueError) as e:
        raise StoreError(f"{shown}: cannot connect: {_detail(e, secret)}") from None
    # UnicodeEncodeError: text the database's encoding lacks (an emoji into LATIN1), found before it is sent.
    return Store(conn, shown, POSTGRES, (psycopg.Error,),
                 (psycopg.DataError, psycopg.IntegrityError, UnicodeEncodeError), secret)


def open_store(db: str, create: bool = True) -> Store:
    """A SQLite path or a postgresql:// URL, migrated to SCHEMA_VERSION (`create=False`: must exist)."""
    if not db.strip():
        raise StoreError("--db is empty")
    if is_url(db) and not is_postgres(db):
        raise StoreError(f"{redact(db)}: not a SQLite path or a postgresql:// URL")
    store = _postgres(db) if is_postgres(db) else _sqlite(db, create)
    try:
        store.migrate()
    except StoreError:
        store.close()
        raise
    return store
