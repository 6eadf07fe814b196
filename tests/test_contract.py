"""One message contract: what the daemon and `--image --publish` build is what the recorder takes, for the shipped
model and for a model with other labels, through a real mosquitto into a real recorder."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_fer.cli.main import main
from edge_fer.messaging.contract import DOCUMENTS, FER_LABELS, NO_FACE, Event, State, schema_markdown
from edge_fer.messaging.events import EventFactory
from edge_fer.models_path import shipped_model
from edge_fer.recorder import store
from edge_fer.recorder.store import MalformedMessage, event_row, open_store, state_row
from edge_fer.types import UNSURE, EventType, Face, TrackEvent, TrackState
from tests.broker import Broker, Subscriber, until
from tests.conftest import ASTRONAUT, ROOT, write_video
from tests.postgres import db, postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.test_daemon import finish, start_daemon, write_config
from tests.test_daemon import pytestmark as needs_mosquitto
from tests.test_record import Recorder, broker, seqs, summary  # noqa: F401  (broker: a fixture)

# Seven labels, none of them FER-2013's, for the shipped network under another sidecar.
OTHER_LABELS = ("rage", "yuck", "dread", "joy", "gloom", "awe", "calm")
POINTS = ((200.1, 120.2), (240.3, 119.9), (221.0, 150.4), (205.5, 170.1), (238.8, 169.7))


def scores_for(labels: tuple[str, ...], top: int) -> dict[str, float]:
    """Scores that sum to 1, the `top`-th label's the largest, as float32 (the model's own type)."""
    raw = np.full(len(labels), 0.3 / max(1, len(labels) - 1), np.float32)
    raw[top] = 0.7
    return {k: raw[i] for i, k in enumerate(labels)}


def documents(labels: tuple[str, ...]) -> tuple[list[Event], list[State]]:
    """One of each document the producer builds, with every optional field set and unset."""
    f = EventFactory("cam", labels)
    scores = scores_for(labels, len(labels) - 1)
    top, conf = labels[-1], float(scores[labels[-1]])
    now = time.time()
    events = [f.event(TrackEvent(EventType.START, 1, top, conf, scores, (10, 20, 90, 110), 0.0, POINTS, 0.91234),
                      (640, 480), now - 0.02),
              f.event(TrackEvent(EventType.CHANGE, 1, UNSURE, conf, scores, (12, 20, 90, 110)), (640, 480), now),
              f.event(TrackEvent(EventType.END, 1, top, conf, scores, (12, 20, 90, 110), 12.34567, None, -3.5),
                      (640, 480)),
              f.image_event("/home/someone/photo.jpg", Face((178, 63, 90, 113), top, conf, scores, POINTS, 0.9), 0,
                            (512, 512)),
              f.image_event("x.png", Face((1, 2, 3, 4), UNSURE, conf, scores, unsure="face too small"), 1, (8, 8))]
    states = [f.state(camera="ok", tracks=[TrackState(1, top, conf, (10, 20, 90, 110)),
                                           TrackState(2, UNSURE, 0.4, (300, 20, 120, 140))],
                      fps=14.98765, frames=300, dropped_frames=2, dropped_events=1, uptime=20.04),
              f.state(camera="down", tracks=[], fps=0.0, frames=0, dropped_frames=0, dropped_events=0, uptime=0.5)]
    # A state is stored once per device and time: these two, made within a millisecond, are a second apart.
    return events, [states[0], dataclasses.replace(states[1], ts=states[1].ts + 1)]


def wire(doc: Event | State) -> bytes:
    """The payload the publisher sends."""
    return json.dumps(doc.to_json()).encode()


@pytest.mark.parametrize("labels", [FER_LABELS, OTHER_LABELS, ("yes", "no")], ids=["fer", "other", "two"])
def test_every_document_the_producer_builds_passes_the_recorders_validation(labels: tuple[str, ...],
                                                                            tmp_path: Path) -> None:
    events, states = documents(labels)
    rows = [event_row("cam", wire(e), 1.0) for e in events]
    assert [r.type for r in rows] == ["start", "change", "end", "image", "image"]
    assert [r.emotion for r in rows] == [labels[-1], UNSURE, labels[-1], labels[-1], UNSURE]
    assert [r.track_id for r in rows] == [1, 1, 1, None, None] and [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2].duration == 12.346 and rows[2].frame_ts is None and rows[0].frame_ts is not None
    assert rows[0].detector_score == 0.9123 and rows[2].detector_score == -3.5
    for row in rows:
        stored = json.loads(row.scores or "")
        assert list(stored) == list(labels) and stored[labels[-1]] == 0.7  # float32 0.7, rounded as published
        assert [getattr(row, k) for k in FER_LABELS] == [stored.get(k) for k in FER_LABELS]
    # What a subscriber reads is what the contract promises: the labels, and the scores in their order.
    doc = json.loads(wire(events[0]))
    assert doc["labels"] == list(labels) and list(doc["scores"]) == list(labels)
    assert doc["landmarks"][0] == [200.1, 120.2] and "duration" not in doc and "image" not in doc
    photo = json.loads(wire(events[3]))
    assert photo["image"] == "photo.jpg" and "track_id" not in photo and photo["unsure"] is None
    assert json.loads(wire(events[4]))["unsure"] == "face too small"
    srows = [state_row("cam", wire(s), 1.0) for s in states]
    assert [(r.faces, r.dominant_emotion, r.camera, r.fps) for r in srows] == [(2, UNSURE, "ok", 14.99),
                                                                                 (0, None, "down", 0.0)]
    with open_store(str(tmp_path / "e.db")) as s:  # and the database takes every row
        written = s.write(rows, srows)
    assert [w.added for w in written] == [5, 2]


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               min_size=1, max_size=40), min_size=1, max_size=12, unique=True),
       top=st.integers(0, 11), box=st.tuples(*[st.integers(0, 10_000)] * 4), track=st.integers(1, 2**40),
       confidence=st.floats(0, 1), detector=st.none() | st.floats(-1e6, 1e6), duration=st.floats(0, 1e6))
def test_any_model_labels_and_values_the_producer_can_meet_are_taken(labels: list[str], top: int, box: tuple,
                                                                     track: int, confidence: float,
                                                                     detector: float | None, duration: float) -> None:
    names = tuple(x for x in labels if x not in (UNSURE, NO_FACE)) or ("only",)
    scores = scores_for(names, top % len(names))
    f = EventFactory("cam", names)
    for kind in EventType:
        if kind is EventType.IMAGE:
            e = f.image_event("a.jpg", Face(box, names[0], confidence, scores, None, detector), 0, (640, 480))
        else:
            e = f.event(TrackEvent(kind, track, names[top % len(names)], confidence, scores, box, duration, None,
                                   detector), (640, 480), time.time())
        row = event_row("cam", wire(e), 0.0)
        assert row.emotion in names and list(json.loads(row.scores or "")) == list(names)
    state = f.state(camera="ok", tracks=[TrackState(track, names[-1], confidence, box)], fps=15.0, frames=1,
                    dropped_frames=0, dropped_events=0, uptime=1.0)
    assert state_row("cam", wire(state), 0.0).dominant_emotion == names[-1]


def test_labels_travel_with_the_data_and_bound_what_is_valid() -> None:
    events, states = documents(OTHER_LABELS)
    doc = json.loads(wire(events[0]))

    def refused(change: dict, why: str) -> None:
        with pytest.raises(MalformedMessage, match=why):
            event_row("cam", json.dumps({**doc, **change}).encode(), 0.0)

    refused({"emotion": "happy"}, "emotion 'happy' is not one of the labels")  # a FER label, not this model's
    refused({"labels": list(FER_LABELS), "emotion": UNSURE}, "scores are not one per label")
    assert event_row("cam", json.dumps({**doc, "emotion": UNSURE}).encode(), 0.0).emotion == UNSURE
    refused({"labels": [*OTHER_LABELS, UNSURE]}, "labels are not distinct names")
    refused({"labels": ["joy", "joy"]}, "labels are not distinct names")
    refused({"labels": []}, "labels is not a list of 1 to 100 names")
    refused({"labels": ["x" * 201]}, "labels holds .*not a name of 1 to 200 characters")
    old = {k: v for k, v in doc.items() if k != "labels"}  # a daemon from before labels were sent
    with pytest.raises(MalformedMessage, match="emotion 'calm' is not one of the labels"):
        event_row("cam", json.dumps(old).encode(), 0.0)
    fer_doc = json.loads(wire(documents(FER_LABELS)[0][0]))
    fer_old = {k: v for k, v in fer_doc.items() if k not in ("labels", "unsure", "landmarks", "detector_score")}
    assert event_row("cam", json.dumps(fer_old).encode(), 0.0).emotion == "neutral"
    state = json.loads(wire(states[0]))
    with pytest.raises(MalformedMessage, match="tracks\\[0\\].emotion 'happy' is not one of the labels"):
        state_row("cam", json.dumps({**state, "tracks": [{**state["tracks"][0], "emotion": "happy"}]}).encode(), 0)
    with pytest.raises(MalformedMessage, match="dominant_emotion 'happy'"):
        state_row("cam", json.dumps({**state, "dominant_emotion": "happy"}).encode(), 0.0)


def test_the_schema_table_describes_every_field_of_every_document() -> None:
    md = schema_markdown()
    for cls in DOCUMENTS:
        assert f"#### {cls.TITLE}" in md
        for name, spec in cls.specs():
            row = next(line for line in md.splitlines() if line.startswith(f"| `{name}` |") and spec.doc in line)
            assert row.count("|") == 5, row
    # What the producer sends is what the table names, no more.
    events, states = documents(FER_LABELS)
    for doc in (*events, *states):
        assert set(doc.to_json()) <= {name for name, _ in type(doc).specs()}


def v1_database(db: str) -> None:
    """A database as edge-fer made it before schema 2, holding one event and one state."""
    dialect = store.POSTGRES if store.is_postgres(db) else store.SQLITE
    if dialect is store.POSTGRES:
        import psycopg

        conn = psycopg.connect(db)
    else:
        conn = sqlite3.connect(db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in store.MIGRATIONS[0]:
        cur.execute(statement.format(id=dialect.id, real=dialect.real))
    p = dialect.placeholder
    row = ("cam", "run-old", 1, "start", 1, "happy", 0.8, *(0.2 / 6,) * 3, 0.8, *(0.2 / 6,) * 3, 1, 2, 3, 4, 640, 480,
           1.8e9, 1.8e9, 1.8e9 + 1, None, None)
    cur.execute(f"INSERT INTO events ({', '.join(store.V1_EVENT_COLUMNS)}) VALUES ({', '.join([p] * len(row))})",
                row)
    cur.execute(f"INSERT INTO states (device, run_id, ts, received, faces, dominant_emotion, camera, fps) "
                f"VALUES ({', '.join([p] * 8)})", ("cam", "run-old", 1.8e9, 1.8e9, 1, "happy", "ok", 15.0))
    cur.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.commit()
    conn.close()


def test_a_schema_1_database_keeps_its_rows_and_then_takes_any_models_events(db: str) -> None:  # noqa: F811
    v1_database(db)
    with open_store(db) as s:  # migrated on open
        cur = s.conn.cursor()
        cur.execute("SELECT MAX(version) FROM schema_version")
        assert cur.fetchone()[0] == store.SCHEMA_VERSION == 2
        events, _ = documents(OTHER_LABELS)
        fer, _ = documents(FER_LABELS)
        rows = [event_row("cam", wire(e), 2e9) for e in (events[0], fer[0])]
        added, _ = s.write(rows, [])
        assert added.added == 2 and added.conflicts == [] and added.refused == []
        cur.execute("SELECT run_id, emotion, happy, scores FROM events ORDER BY id")
        kept, other, shipped = cur.fetchall()
        assert kept == ("run-old", "happy", 0.8, None)  # schema 1's row, its scores in their columns
        assert other[1:3] == ("calm", None) and list(json.loads(other[3])) == list(OTHER_LABELS)
        assert shipped[1] == "neutral" and shipped[2] == pytest.approx(0.05) and json.loads(shipped[3])["happy"]
        assert s.count_events() == 3
        cur.execute("SELECT faces FROM states")
        assert cur.fetchall() == [(1,)]
    with open_store(db) as s:  # a second open finds nothing to migrate; the new rows' keys are still unique
        again, _ = s.write([event_row("cam", wire(events[0]), 3e9)], [])
        assert (again.added, again.repeats) == (0, 1)


@pytest.fixture(params=["shipped", "other-labels"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """The shipped model, or its network copied under a sidecar that names other labels."""
    shipped = shipped_model("edge_fer_int8.tflite")
    meta = json.loads(shipped.with_suffix(".json").read_text())
    if request.param == "shipped":
        return shipped, tuple(meta["labels"])
    copy = tmp_path / "relabelled.tflite"
    shutil.copyfile(shipped, copy)
    copy.with_suffix(".json").write_text(json.dumps({**meta, "labels": list(OTHER_LABELS)}))
    return copy, OTHER_LABELS


@needs_mosquitto
def test_the_daemon_and_image_publish_are_recorded_whatever_the_models_labels(
        tmp_path: Path, broker: Broker, model: tuple[Path, tuple[str, ...]]) -> None:
    path, labels = model
    photo = cv2.imread(str(ASTRONAUT))
    blank = np.full_like(photo, 128)
    video = write_video(tmp_path / "astronaut.avi", [photo] * 20 + [blank] * 15)  # a face for 1.3 s, then none
    db = str(tmp_path / "events.db")
    rec = Recorder(tmp_path, db, broker.port)
    sub = Subscriber(broker.port, "#")
    try:
        config = write_config(tmp_path / "c.yaml", video, broker.port, classifier={"model": str(path)})
        code, err = finish(start_daemon(config), 90)
        assert code == 0, err
        out, err_out = io.StringIO(), io.StringIO()
        assert main(["--image", str(ASTRONAUT), "--publish", "--config", str(config)], out, err_out) == 0, \
            err_out.getvalue()
        assert sub.wait_for(lambda s: any(m.json()["type"] == "image" for m in s.on("/events")), 10)
        events = [m.json() for m in sub.on("edge_fer/testcam/events")]
        assert until(lambda: len(seqs(db)) == len(events), 20), (seqs(db), len(events))
        code, log = rec.stop()
    finally:
        sub.close()
    assert code == 0 and "Traceback" not in log, log
    assert " 0 malformed messages" in summary(log), summary(log)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and "end" in kinds and kinds[-1] == "image", kinds
    for e in events:  # each as the recorder reads it, and as the model's labels say
        row = event_row("testcam", json.dumps(e).encode(), 0.0)
        assert e["labels"] == list(labels) and list(e["scores"]) == list(labels) and row.emotion in (*labels, UNSURE)
    judged = [e["emotion"] for e in events if e["emotion"] != UNSURE]
    assert judged and judged[0] == labels[FER_LABELS.index("happy")]  # the same network: the same smile
    states = [m.json() for m in sub.on("edge_fer/testcam/state")]
    rows = [state_row("testcam", json.dumps(s).encode(), 0.0) for s in states]
    assert any(r.faces == 1 and r.dominant_emotion in labels for r in rows) and rows[-1].faces == 0
    discovery = sub.on("homeassistant/device/edge_fer_testcam/config")[0].json()
    assert discovery["components"]["emotion"]["options"] == [*labels, UNSURE, NO_FACE]
    with open_store(db, create=False) as s:
        cur = s.conn.cursor()
        cur.execute("SELECT type, emotion, happy, scores FROM events ORDER BY id")
        stored = cur.fetchall()
    assert [t for t, *_ in stored] == kinds
    for _, _, happy, scores in stored:
        assert list(json.loads(scores)) == list(labels)
        assert happy == (json.loads(scores)["happy"] if labels == FER_LABELS else None)


def test_the_documented_fields_are_the_contracts() -> None:
    page = (ROOT / "docs" / "messages.md").read_text()
    assert page.endswith(schema_markdown()), "docs/messages.md is out of date: print schema_markdown() into it"
