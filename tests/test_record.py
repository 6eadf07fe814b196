"""`edge-fer record`: a real mosquitto, a real recorder process, SQLite and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge_fer.cli.main import main
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from edge_fer.recorder.store import EMOTIONS, SCHEMA_VERSION, MalformedMessage, event_row, open_store, state_row
from tests.broker import Broker, Subscriber, until
from tests.conftest import ROOT
from tests.postgres import PASSWORD, db, postgres_server, postgres_url, started_server  # noqa: F401  (fixtures)
from tests.test_daemon import _blinking_video, finish, start_daemon, write_config
from tests.test_daemon import pytestmark as needs_mosquitto

pytestmark = needs_mosquitto


def event(seq: int, device: str = "cam1", kind: str = "start", track: int = 1, emotion: str = "happy",
          ts: str = "2026-11-27T09:00:00.000Z", run_id: str | None = "run-a", **extra: Any) -> dict[str, Any]:
    """An event as the daemon publishes it."""
    doc = {"type": kind, "device": device, "track_id": track, "emotion": emotion, "confidence": 0.8,
           "scores": {e: (0.8 if e == emotion else 0.2 / 6) for e in EMOTIONS}, "box": [10, 20, 100, 100],
           "frame_size": [640, 480], "ts": ts, "frame_ts": ts, "seq": seq, **extra}
    if run_id is not None:
        doc["run_id"] = run_id
    return doc


def publish(port: int, messages: list[tuple[str, Any]], retain: bool = False) -> None:
    """Send each (topic, payload) at QoS 1 and wait until the broker has them all."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(t, p if isinstance(p, bytes) else json.dumps(p), qos=1, retain=retain)
                 for t, p in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class Recorder:
    """`edge-fer record` as a subprocess with its log in a file."""

    running: list[Recorder] = []

    def __init__(self, tmp_path: Path, db: str, port: int, *extra: str, name: str = "rec",
                 client: str = "test-rec") -> None:
        self.log = tmp_path / f"{name}.log"
        self._skip = self.log.stat().st_size if self.log.exists() else 0  # an earlier run's lines
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "record", "--db", db, "--set",
                                          "mqtt.host=127.0.0.1", "--set", f"mqtt.port={port}",
                                          "--client-id", client, *extra],
                                         env=env, stdout=subprocess.DEVNULL, stderr=log)
        Recorder.running.append(self)
        self.wait_log("subscribed to", 20)

    def text(self) -> str:
        """Its log so far."""
        return self.log.read_bytes()[self._skip:].decode()

    def wait_log(self, needle: str, timeout: float, count: int = 1) -> None:
        """Until `needle` is in the log `count` times; fails if the process ends first."""
        ok = until(lambda: self.text().count(needle) >= count or self.proc.poll() is not None, timeout)
        assert ok and self.proc.poll() is None, f"recorder: no {needle!r}:\n{self.text()[-3000:]}"

    def stop(self) -> tuple[int, str]:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        return code, self.text()

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.proc.kill()
        self.proc.wait(5)


def seqs(db: str, device: str | None = None) -> list[int]:
    """The stored events' seq numbers, in order."""
    with open_store(db, create=False) as store:
        return [row[0] for row in store.events(device, columns=("seq",))]


STATE = {"device": "cam1", "run_id": "run-a", "camera": "ok", "faces": 1, "dominant_emotion": "happy", "tracks": [],
         "fps": 14.5, "ts": "2026-11-27T09:00:01.000Z"}


def summary(log: str) -> str:
    """The counts of the recorder's last `stopped:` line."""
    return log.rsplit("stopped: ", 1)[1].splitlines()[0]


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path, persistent=True).start()
    yield b
    for rec in Recorder.running:  # a failed test leaves none behind
        if rec.proc.poll() is None:
            rec.kill()
    Recorder.running.clear()
    b.stop()


def test_events_and_states_stored_once_malformed_counted(tmp_path: Path, broker: Broker, db: str) -> None:
    rec = Recorder(tmp_path, db, broker.port)
    good = [event(i, track=i) for i in range(1, 31)]
    malformed: list[Any] = [b"not json", b"[1, 2]", b"\xff\xfe", event(31, device="other"),
                            {**event(32), "scores": {"happy": 1.0}}, {**event(33), "seq": "33"},
                            {**event(34), "type": "dance"}, {**event(35), "ts": "yesterday"},
                            {**event(36), "box": [1, 2, 3]}, {**event(37), "confidence": None},
                            {**event(38), "emotion": "x" * 100000}, {**event(39), "box": [0, 0, 2**40, 1]},
                            {**event(41), "run_id": "a\x00b"}, {**event(42), "camera": 1, "run_id": "\ud800"}]
    photo = {**event(40, kind="image"), "image": "/home/someone/private.jpg", "face_index": 0}
    del photo["track_id"]
    state = {"device": "cam1", "run_id": "run-a", "camera": "ok", "faces": 2, "dominant_emotion": "happy",
             "tracks": [], "fps": 14.5, "ts": "2026-11-27T09:00:01.000Z"}
    publish(broker.port, [("edge_fer/cam1/events", e) for e in good + good[:5]]  # five sent twice
            + [("edge_fer/cam1/events", m) for m in malformed] + [("edge_fer/cam1/events", photo),
                                                                  ("edge_fer/cam1/state", state),
                                                                  ("edge_fer/cam1/other", b"{}")])
    publish(broker.port, [("edge_fer/cam1/state", state)])  # the same state again: stored once
    assert until(lambda: len(seqs(db)) >= 31, 20), seqs(db)
    rec.wait_log("malformed message", 20, count=10)  # the log names the first ten, then every 1000th
    code, log = rec.stop()
    assert code == EXIT_OK, log
    assert seqs(db) == list(range(1, 31)) + [40]
    assert "Traceback" not in log
    assert summary(log) == ("31 events stored, 5 duplicates skipped, 0 conflicts (the first row kept), "
                            "14 malformed messages, 2 state messages")
    with open_store(db, create=False) as store:
        cur = store.conn.cursor()
        cur.execute("SELECT device, run_id, type, track_id, emotion, happy, box_w, frame_w, ts FROM events "
                    "WHERE seq = 40")
        assert cur.fetchone() == ("cam1", "run-a", "image", None, "happy", 0.8, 100, 640, 1795770000.0)
        cur.execute("SELECT device, faces, dominant_emotion, camera, fps FROM states")
        assert cur.fetchall() == [("cam1", 2, "happy", "ok", 14.5)]
        cur.execute("SELECT MAX(version) FROM schema_version")
        assert cur.fetchall() == [(SCHEMA_VERSION,)]
    if not db.startswith("postgresql"):
        assert b"private.jpg" not in Path(db).read_bytes()  # the photo's name is not kept either


def test_a_message_out_of_bounds_is_malformed_and_never_stops_a_recorder(tmp_path: Path, broker: Broker,
                                                                         db: str) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    publish(broker.port, [("edge_fer/cam1/events", deep)], retain=True)  # every new subscriber gets it
    rec = Recorder(tmp_path, db, broker.port)
    long_name = "c" * 201
    bad: list[tuple[str, Any]] = [
        ("edge_fer/cam1/events", {**event(8), "padding": "x" * 300_000}),
        ("edge_fer/cam1/state", {**STATE, "faces": 2**64}), ("edge_fer/cam1/state", {**STATE, "faces": 2**31}),
        ("edge_fer/cam1/state", {**STATE, "fps": float("inf")}),
        ("edge_fer/cam1/events", {**event(2), "confidence": float("nan")}),
        ("edge_fer/cam1/events", {**event(3), "duration": -1.0}),
        ("edge_fer/cam1/events", event(4, ts="0001-01-01T00:00:00+01:00")),
        ("edge_fer/cam1/events", event(5, ts="9999-12-31T23:59:59Z")),
        ("edge_fer/cam1/events", {**event(6), "frame_ts": "1970-01-01T00:00:00Z"}),
        ("edge_fer/cam1/events", {**event(7), "scores": {e: 1e400 for e in EMOTIONS}}),
        (f"edge_fer/{long_name}/events", event(9, device=long_name))]
    publish(broker.port, [("edge_fer/cam1/events", event(1))] + bad + [("edge_fer/cam1/events", event(10)),
                                                                          ("edge_fer/cam1/state", STATE)])
    assert until(lambda: seqs(db) == [1, 10], 20), seqs(db)
    rec.wait_log("malformed message", 20, count=10)
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert summary(log) == ("2 events stored, 0 duplicates skipped, 0 conflicts (the first row kept), "
                            "12 malformed messages, 1 state messages")
    for reason in ("(nested too deep)", "(faces is not a count from 0 to 10000)", "(fps is not a number from 0 to",
                   "(ts is not a time from 2000 to 2099)", "(larger than 256 KiB)"):
        assert reason in log, reason
    rec = Recorder(tmp_path, db, broker.port, name="fresh", client="test-rec-fresh")  # a new session: retained again
    rec.wait_log("(nested too deep)", 20)
    code, log = rec.stop()
    assert code == EXIT_OK and "1 malformed messages" in summary(log) and "Traceback" not in log


def test_values_at_their_bounds_are_taken() -> None:
    edge = {**event(1, device="c" * 200, ts="2099-12-31T23:59:59.999Z"), "frame_ts": "2000-01-01T00:00:00Z",
            "confidence": 1, "scores": {e: int(e == "happy") for e in EMOTIONS}, "duration": 0, "detector_score": -3.5}
    assert event_row("c" * 200, json.dumps(edge).encode(), 0.0).ts == 4102444799.999
    assert state_row("cam1", json.dumps({**STATE, "faces": 10_000, "fps": 0}).encode(), 0.0).faces == 10_000


def refuse(db: str, rule: str, condition: str | None) -> None:
    """Have the database refuse events where `condition` (on a column) holds, by its own rule; None drops it."""
    with open_store(db, create=False) as store:
        if db.startswith("postgresql"):
            sql = (f"ALTER TABLE events ADD CONSTRAINT {rule} CHECK (NOT ({condition})) NOT VALID" if condition
                   else f"ALTER TABLE events DROP CONSTRAINT {rule}")
        else:
            sql = (f"CREATE TRIGGER {rule} BEFORE INSERT ON events WHEN NEW.{condition} "
                   f"BEGIN SELECT RAISE(ABORT, 'refused by {rule}'); END" if condition else f"DROP TRIGGER {rule}")
        store.conn.cursor().execute(sql)
        store.conn.commit()


def test_a_row_the_database_refuses_is_malformed_a_database_refusing_every_row_is_retried(
        tmp_path: Path, broker: Broker, db: str) -> None:
    rec = Recorder(tmp_path, db, broker.port)
    refuse(db, "refuse_one", "run_id = 'refused'")
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(1, 6)]
            + [("edge_fer/cam1/events", event(6, run_id="refused"))]
            + [("edge_fer/cam1/events", event(i)) for i in range(7, 11)])
    assert until(lambda: seqs(db) == [1, 2, 3, 4, 5, 7, 8, 9, 10], 20), seqs(db)
    rec.wait_log("malformed message on edge_fer/cam1/events (the database refused it: ", 20)
    refuse(db, "refuse_all", "seq >= 0")  # now no row can be stored: that is the database's fault, not theirs
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(11, 16)])
    rec.wait_log("nothing is acknowledged until it is stored", 20)
    refuse(db, "refuse_all", None)
    rec.wait_log("writing again", 60)
    assert until(lambda: seqs(db) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15], 20), seqs(db)
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert summary(log).startswith("14 events stored, 0 duplicates skipped, 0 conflicts (the first row kept), "
                                   "1 malformed messages")


def test_text_a_latin1_postgres_cannot_hold_is_malformed_and_acknowledged(tmp_path: Path, broker: Broker,
                                                                          postgres_server) -> None:  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS latin1")
        conn.execute("CREATE DATABASE latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    url = postgres_server.url("latin1")
    rec = Recorder(tmp_path, url, broker.port)
    publish(broker.port, [("edge_fer/café/events", event(1, device="café")),
                          ("edge_fer/cam😀/events", event(1, device="cam😀")),
                          ("edge_fer/cam1/state", {**STATE, "camera": "ok 😀"}),
                          ("edge_fer/cam1/events", event(1))])
    assert until(lambda: len(seqs(url)) == 2, 20), seqs(url)
    rec.wait_log("malformed message", 20, count=2)
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert "malformed message on edge_fer/cam😀/events (the database refused it: 'latin-1' codec" in log
    assert summary(log) == ("2 events stored, 0 duplicates skipped, 0 conflicts (the first row kept), "
                            "2 malformed messages, 0 state messages")
    rec = Recorder(tmp_path, url, broker.port)  # the same session: what was refused was acknowledged all the same
    publish(broker.port, [("edge_fer/cam1/events", event(2))])
    assert until(lambda: len(seqs(url)) == 3, 20), seqs(url)
    code, log = rec.stop()
    assert code == EXIT_OK and summary(log) == ("1 events stored, 0 duplicates skipped, 0 conflicts (the first row "
                                                "kept), 0 malformed messages, 0 state messages"), log


def test_a_forged_duplicate_is_a_conflict_logged_and_counted_and_the_first_row_kept(tmp_path: Path, broker: Broker,
                                                                                    db: str) -> None:
    rec = Recorder(tmp_path, db, broker.port)
    topic = "edge_fer/kitchen/events"
    # run_id is public (retained state): a forger can take the seqs the device has not sent yet.
    forged = [(topic, event(i, device="kitchen", emotion="angry")) for i in range(2, 51)]
    real = [(topic, event(i, device="kitchen")) for i in range(1, 51)]
    states = [("edge_fer/kitchen/state", {**STATE, "device": "kitchen", "faces": f}) for f in (5, 1)]
    publish(broker.port, forged + real + [real[0], forged[0]] + states + [("edge_fer/cam1/events", event(1))])
    assert until(lambda: seqs(db, "cam1") == [1], 20), seqs(db)  # the last one sent: all before it are in
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert summary(log) == ("51 events stored, 2 duplicates skipped, 50 conflicts (the first row kept), "
                            "0 malformed messages, 2 state messages")
    assert log.count("conflict on edge_fer/kitchen/") == 10  # the first ten, then every thousandth
    assert "conflict on edge_fer/kitchen/events: run_id 'run-a' seq 2 is already stored with other content" in log
    with open_store(db, create=False) as store:
        emotions = [e for (e,) in store.events("kitchen", columns=("emotion",))]
        cur = store.conn.cursor()
        cur.execute("SELECT faces FROM states")
        assert cur.fetchall() == [(5,)]
    assert emotions == ["happy"] + ["angry"] * 49  # stored first, kept


def test_same_seq_in_another_run_is_a_new_event(tmp_path: Path, broker: Broker) -> None:
    db = str(tmp_path / "e.db")
    rec = Recorder(tmp_path, db, broker.port)
    publish(broker.port, [("edge_fer/cam1/events", event(1, run_id="r1")),
                          ("edge_fer/cam1/events", event(1, run_id="r2")),
                          ("edge_fer/cam2/events", event(1, device="cam2", run_id="r1")),
                          ("edge_fer/cam1/events", event(2, run_id=None))])
    assert until(lambda: len(seqs(db)) == 4, 20)
    rec.stop()
    with open_store(db, create=False) as store:
        cur = store.conn.cursor()
        cur.execute("SELECT device, run_id, seq FROM events ORDER BY device, run_id")
        assert cur.fetchall() == [("cam1", "", 2), ("cam1", "r1", 1), ("cam1", "r2", 1), ("cam2", "r1", 1)]


def test_killed_recorder_gets_what_was_published_while_it_was_down(tmp_path: Path, broker: Broker) -> None:
    db = str(tmp_path / "e.db")
    rec = Recorder(tmp_path, db, broker.port)
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(1, 11)])
    assert until(lambda: len(seqs(db)) == 10, 20)
    rec.kill()
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(11, 41)])
    broker.stop(graceful=True)  # and the broker restarts while the recorder is away
    broker.start()
    rec = Recorder(tmp_path, db, broker.port)
    assert until(lambda: len(seqs(db)) == 40, 20), seqs(db)
    code, log = rec.stop()
    assert code == EXIT_OK and seqs(db) == list(range(1, 41))
    assert "(resumed session)" in log


def test_shared_subscription_splits_the_load_into_one_postgres(tmp_path: Path, broker: Broker,
                                                               postgres_url: str) -> None:
    recs = [Recorder(tmp_path, postgres_url, broker.port, "--share", "fleet", name=f"rec{i}",
                     client=f"test-rec{i}") for i in (1, 2)]
    publish(broker.port, [(f"edge_fer/cam{d}/events", event(i, device=f"cam{d}")) for i in range(1, 101)
                          for d in (1, 2)])
    assert until(lambda: len(seqs(postgres_url)) == 200, 30), len(seqs(postgres_url))
    stored = []
    for rec in recs:
        code, log = rec.stop()
        assert code == EXIT_OK
        stored.append(int(log.rsplit("stopped: ", 1)[1].split(" ")[0]))
    assert sum(stored) == 200 and min(stored) > 0, stored  # each message went to one recorder
    assert seqs(postgres_url, "cam1") == list(range(1, 101)) and seqs(postgres_url, "cam2") == list(range(1, 101))


def test_postgres_restart_is_retried_and_loses_nothing(tmp_path: Path, broker: Broker) -> None:
    server = started_server()  # its own, to restart without disturbing the other tests
    try:
        url = server.create_database("outage")
        rec = Recorder(tmp_path, url, broker.port)
        publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(1, 11)])
        assert until(lambda: len(seqs(url)) == 10, 20)
        server.stop(remove=False)
        publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(11, 21)])
        rec.wait_log("nothing is acknowledged until it is stored", 20)
        server.run()
        rec.wait_log("writing again", 60)
        assert until(lambda: len(seqs(url)) == 20, 20)
        code, log = rec.stop()
        assert code == EXIT_OK and seqs(url) == list(range(1, 21))
    finally:
        server.stop()
    assert "Traceback" not in log and PASSWORD not in log


def test_retention_prunes_old_rows(tmp_path: Path, broker: Broker, db: str) -> None:
    now = time.time()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3 * 86400))
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    rec = Recorder(tmp_path, db, broker.port)
    publish(broker.port, [("edge_fer/cam1/events", event(1, ts=old)), ("edge_fer/cam1/events", event(2, ts=recent))])
    assert until(lambda: len(seqs(db)) == 2, 20)
    rec.stop()
    rec = Recorder(tmp_path, db, broker.port, "--retention", "2d")
    rec.wait_log("retention: deleted 1 rows older than 2d", 20)
    rec.stop()
    assert seqs(db) == [2]


def test_daemon_with_broker_restart_and_recorder_restart_loses_no_seq(tmp_path: Path, broker: Broker,
                                                                     clear_faces) -> None:
    faces = clear_faces["happy"] + clear_faces["surprise"] + clear_faces["neutral"]
    video = _blinking_video(tmp_path / "blink.avi", faces * 2)  # about 36 s of faces coming and going
    db = str(tmp_path / "e.db")
    rec = Recorder(tmp_path, db, broker.port)
    proc = start_daemon(write_config(tmp_path / "c.yaml", video, broker.port))
    try:
        assert until(lambda: len(seqs(db)) >= 3, 40), "nothing recorded from the daemon"
        broker_down = time.time()
        broker.stop(graceful=True)  # the broker restarts mid-run
        rec.wait_log("connection to 127.0.0.1", 10)  # ... lost
        time.sleep(3)  # the daemon makes events meanwhile
        broker_up = time.time()
        broker.start()
        have = len(seqs(db))
        assert until(lambda: len(seqs(db)) >= have + 3, 40), "nothing recorded after the broker restart"
        rec_down = time.time()
        rec.kill()  # the recorder is killed mid-run and comes back a few events later
        time.sleep(5)
        rec_up = time.time()
        rec = Recorder(tmp_path, db, broker.port, name="rec-again")
        code, err = finish(proc, 90)
        assert code == 0, err
        sent = sum(err.count(f" {kind}: ") for kind in ("start", "change", "end"))
        assert sent >= 12
        assert until(lambda: len(seqs(db)) >= sent, 30), (len(seqs(db)), sent)
        code, log = rec.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "(resumed session)" in log
    assert seqs(db) == list(range(1, sent + 1))  # every seq the daemon sent, once
    assert "lost" in err
    with open_store(db, create=False) as store:
        times = [ts for (ts,) in store.events(columns=("ts",))]
    # Events made while the broker was down, and while the recorder was, are among them.
    assert any(broker_down < t < broker_up for t in times) and any(rec_down < t < rec_up for t in times)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=5), max_leaves=10)


@settings(max_examples=400, deadline=None)
@example(kind="events", key="confidence", value=10**400, drop=False)
@example(kind="events", key="run_id", value="\ud800", drop=False)
@example(kind="state", key="faces", value=2**64, drop=False)
@example(kind="events", key="ts", value="0001-01-01T00:00:00+01:00", drop=False)
@given(kind=st.sampled_from(["events", "state"]), key=st.sampled_from(sorted(event(1)) + ["faces", "camera"]),
       value=JSON_VALUES, drop=st.booleans())
def test_any_change_to_a_message_is_stored_or_malformed_and_a_stored_row_fits_the_database(
        tmp_path_factory: pytest.TempPathFactory, kind: str, key: str, value: Any, drop: bool) -> None:
    doc = event(1) if kind == "events" else {"device": "cam1", "camera": "ok", "faces": 1, "dominant_emotion": None,
                                             "fps": 15.0, "ts": "2026-11-27T09:00:00.000Z"}
    if drop:
        doc.pop(key, None)
    else:
        doc[key] = value
    payload = json.dumps(doc).encode()
    try:
        row = (event_row if kind == "events" else state_row)("cam1", payload, 0.0)
    except MalformedMessage:
        return
    with open_store(str(tmp_path_factory.mktemp("fuzz") / "e.db")) as store:
        written = store.write(*(([row], []) if kind == "events" else ([], [row])))
    assert sum(w.added for w in written) == 1, written


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_database_path_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run("record", "--db", str(tmp_path / "file" / "events.db"))
    assert code == EXIT_INPUT
    assert err.startswith("edge-fer: ") and err.count("\n") == 1 and "cannot open the database" in err
    (tmp_path / "notdb").write_text("this is not a database, it is plain text" * 100)
    code, _, err = run("record", "--db", str(tmp_path / "notdb"))
    assert code == EXIT_INPUT and "not a database" in err and err.count("\n") == 1


def test_postgres_that_refuses_never_shows_the_password(postgres_server) -> None:  # noqa: F811
    wrong = postgres_server.url(password="Wr0ng-s3cret")
    code, _, err = run("record", "--db", wrong)
    assert code == EXIT_INPUT and err.count("\n") == 1, err
    assert "password authentication failed" in err and "Wr0ng-s3cret" not in err and "postgres:***@" in err
    code, _, err = run("report", "--db", f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x?password={PASSWORD}")
    assert code == EXIT_INPUT and "cannot connect" in err and PASSWORD not in err and err.count("\n") == 1


def test_usage_errors(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    for argv, needle in ((["record"], "--db"), (["record", "--db", db, "--retention", "soon"], "--retention"),
                         (["record", "--db", db, "--share", "a/b"], "--share"),
                         (["record", "--db", "mysql://u:pw@h/db"], "not a SQLite path"),
                         (["report", "--db", db, "--since", "whenever"], "--since"),
                         (["report", "--db", db, "--out", "report.pdf"], ".png, .html or .csv"),
                         (["report", "--db", db + ".csv", "--out", db + ".csv"], "the database itself")):
        code, _, err = run(*argv)
        assert code in (EXIT_USAGE, EXIT_INPUT) and needle in err and err.count("\n") == 1, (argv, err)
        assert "pw@" not in err
    assert run("record", "--db", db, "--retention", "soon")[0] == EXIT_USAGE
    assert run("report", "--db", db)[0] == EXIT_INPUT  # no such database: report never creates one
    assert not Path(db).exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    open_store(str(db)).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    code, _, err = run("report", "--db", str(db))
    assert code == EXIT_INPUT and f"schema version {SCHEMA_VERSION + 1} is newer" in err


def test_faces_not_judged_travel_as_unsure_to_the_broker_the_recorder_and_the_report(
        tmp_path: Path, broker: Broker, face_video: Path) -> None:
    db = str(tmp_path / "e.db")
    rec = Recorder(tmp_path, db, broker.port)
    sub = Subscriber(broker.port)
    try:
        # No calibrated score reaches 0.999: every face is found and tracked, none is labelled.
        config = write_config(tmp_path / "c.yaml", face_video, broker.port, unsure={"min_confidence": 0.999})
        code, err = finish(start_daemon(config), 60)
        assert code == 0, err
        assert until(lambda: len(seqs(db)) >= 2, 20), seqs(db)
        rec.stop()
    finally:
        sub.close()
    events = [m.json() for m in sub.on("edge_fer/testcam/events")]
    assert [(e["type"], e["emotion"]) for e in events] == [("start", "unsure"), ("end", "unsure")]
    assert all(len(e["scores"]) == 7 and e["confidence"] == max(e["scores"].values()) for e in events)
    states = [m.json() for m in sub.on("edge_fer/testcam/state")]
    assert any(s["faces"] == 1 and s["dominant_emotion"] == "unsure" for s in states)
    discovery = sub.on("homeassistant/device/edge_fer_testcam/config")[0].json()
    assert "unsure" in discovery["components"]["emotion"]["options"]
    with open_store(db, create=False) as store:
        assert [e for (e,) in store.events(columns=("emotion",))] == ["unsure", "unsure"]
    out, err_out = io.StringIO(), io.StringIO()
    assert main(["report", "--db", db], out=out, err=err_out) == EXIT_OK, err_out.getvalue()
    line = next(row for row in out.getvalue().splitlines() if row.startswith("testcam"))
    assert line.split()[-1] == "100.0%"  # all of the face time is in the unsure column


def seqs_at(db: Path) -> list[int]:
    """The stored seqs of the database at `db`; [] while no file is there (reading never creates one)."""
    return seqs(str(db)) if db.exists() else []


def whole(db: Path) -> bool:
    """SQLite's own check of every page of the file finds nothing wrong."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize("how", ["deleted", "moved away", "replaced"])
def test_a_sqlite_file_deleted_or_replaced_while_recording_is_noticed_and_nothing_is_acknowledged_into_it(
        tmp_path: Path, broker: Broker, how: str) -> None:
    db, old = tmp_path / "e.db", tmp_path / "old.db"
    rec = Recorder(tmp_path, str(db), broker.port)
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(1, 6)])
    assert until(lambda: seqs_at(db) == [1, 2, 3, 4, 5], 20), seqs_at(db)
    expected = [6, 7, 8, 9, 10]
    if how == "deleted":
        db.unlink()  # rm events.db: its -wal and -shm stay behind
    elif how == "moved away":
        db.rename(old)
    else:  # another edge-fer database moved over it, as a restore from a backup would be
        other = tmp_path / "other.db"
        with open_store(str(other)) as store:
            store.write([event_row("cam9", json.dumps(event(100, device="cam9")).encode(), 0.0)], [])
        other.replace(db)
        expected += [100]
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(6, 11)])
    # Read only once the recorder has let go of the file: a reader would take the old file's WAL for the new one's.
    rec.wait_log("the database file was deleted or replaced", 20)
    rec.wait_log("writing again", 20)
    assert until(lambda: seqs_at(db) == expected, 20), seqs_at(db)
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert summary(log).startswith("10 events stored, 0 duplicates skipped"), log  # 6-10 counted once, where they are
    assert whole(db)
    if how == "moved away":  # the file taken away keeps what was acknowledged into it, and is whole
        assert seqs(str(old)) == [1, 2, 3, 4, 5] and whole(old)


def test_a_sqlite_file_moved_away_keeps_what_was_acknowledged_into_it_when_the_recorder_stops(
        tmp_path: Path, broker: Broker) -> None:
    db, old = tmp_path / "e.db", tmp_path / "old.db"
    rec = Recorder(tmp_path, str(db), broker.port)
    publish(broker.port, [("edge_fer/cam1/events", event(i)) for i in range(1, 4)])
    assert until(lambda: seqs_at(db) == [1, 2, 3], 20), seqs_at(db)
    db.rename(old)
    code, log = rec.stop()  # SQLite itself leaves a moved file's last commits in the -wal at the old name
    assert code == EXIT_OK and "Traceback" not in log, log
    assert seqs(str(old)) == [1, 2, 3] and whole(old)
