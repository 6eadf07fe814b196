"""When the state goes out: on a change Home Assistant shows, never two within the gap, and the keep-alive; and the
real daemon on a video of a face that comes and goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_fer.messaging.contract import State
from edge_fer.messaging.events import EventFactory
from edge_fer.messaging.homeassistant import CONFIDENCE_STEP, StateGate, discovery_config, shows_change
from edge_fer.types import TrackState
from tests.broker import Broker, Subscriber
from tests.conftest import paste_faces, write_video
from tests.test_daemon import finish, start_daemon, write_config
from tests.test_mqtt_ha import LABELS, render

FACTORY = EventFactory("cam", LABELS)


def state(*tracks: TrackState, camera: str = "ok", fps: float = 15.0, frames: int = 100, dropped: int = 0) -> State:
    """A state as the daemon makes it."""
    return FACTORY.state(camera=camera, tracks=list(tracks), fps=fps, frames=frames, dropped_frames=dropped,
                         dropped_events=dropped, uptime=frames / 15)


HAPPY = TrackState(1, "happy", 0.80, (0, 0, 100, 100))


def test_what_home_assistant_shows_is_a_change_and_what_moves_every_frame_is_not() -> None:
    base = state(HAPPY)
    # Frame rate, counters, uptime, boxes, small moves of the score, and one face for another that looks the same
    # (a face flickering at the detector's edge): nothing an entity shows differently.
    assert not shows_change(base, state(TrackState(1, "happy", 0.80 + CONFIDENCE_STEP / 2, (3, 4, 101, 99)),
                                        fps=9.5, frames=900, dropped=40))
    assert not shows_change(base, state(TrackState(9, "happy", 0.80, HAPPY.box)))
    changes = {
        "emotion": state(TrackState(1, "surprise", 0.80, HAPPY.box)),
        "confidence": state(TrackState(1, "happy", 0.80 + CONFIDENCE_STEP, HAPPY.box)),
        "faces": state(HAPPY, TrackState(2, "sad", 0.6, (200, 0, 50, 50))),
        "nobody": state(),
        "camera": state(HAPPY, camera="stalled"),
    }
    for name, after in changes.items():
        assert shows_change(base, after), name
    two = state(HAPPY, TrackState(2, "sad", 0.6, (200, 0, 50, 50)))
    assert shows_change(two, state(HAPPY, TrackState(2, "fear", 0.6, (200, 0, 50, 50))))  # not the dominant one


def test_the_gate_sends_a_change_at_once_holds_a_burst_to_one_per_gap_and_keeps_alive() -> None:
    gate = StateGate(keep_alive=60.0, min_gap=3.0)
    published: list[tuple[float, int]] = []

    def tick(now: float, s: State) -> None:
        if gate.due(s, now):
            gate.sent(s, now)
            published.append((now, s.faces))

    tick(0.0, state(HAPPY))  # the first state goes at once
    tick(1.0, state(HAPPY, fps=3.0))  # nothing shown changed
    tick(10.0, state())  # a change after a quiet spell: at once
    # A face that comes and goes every half second: one state per gap, each as things are then.
    for i in range(1, 13):
        tick(10.0 + i * 0.5, state(HAPPY) if i % 2 else state())
    tick(17.0, state())  # the burst's last word, once the gap since the state before is over
    tick(40.0, state())
    tick(77.0, state(fps=1.0))  # 60 s after the last state: the keep-alive, though nothing changed
    # At 13.0 nobody was in view, as the state at 10.0 said: only at 13.5 was there something to tell.
    assert published == [(0.0, 1), (10.0, 0), (13.5, 1), (17.0, 0), (77.0, 0)]


def test_a_keep_alive_more_often_than_the_gap_sets_the_pace() -> None:
    gate = StateGate(keep_alive=0.5, min_gap=3.0)
    gate.sent(state(HAPPY), 0.0)
    assert not gate.due(state(), 0.4)
    assert gate.due(state(), 0.5) and gate.due(state(HAPPY), 0.5)
    no_gap = StateGate(keep_alive=60.0, min_gap=0.0)
    no_gap.sent(state(HAPPY), 0.0)
    assert no_gap.due(state(), 0.01) and not no_gap.due(state(HAPPY, fps=2.0), 0.01)


@pytest.fixture
def broker(tmp_path: Path):
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def test_a_face_that_comes_and_goes_costs_home_assistant_one_state_per_gap(tmp_path: Path, broker: Broker,
                                                                           clear_faces) -> None:
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    blank, _ = paste_faces([], size=180)
    # 12 s at 15 fps: 1 s of face, 1 s of nobody, six times; each a track that starts and ends.
    video = write_video(tmp_path / "blink.avi", ([happy] * 15 + [blank] * 15) * 6)
    gap = 3.0
    config = write_config(tmp_path / "c.yaml", video, broker.port,
                          mqtt={"state_interval_seconds": 60.0, "state_min_interval_seconds": gap})
    sub = Subscriber(broker.port, "edge_fer/testcam/#")
    try:
        code, err = finish(start_daemon(config), 90)
        assert code == 0 and "Traceback" not in err, err
        assert sub.wait_for(lambda s: s.on("/availability")[-1:] and s.on("/availability")[-1].payload == b"offline",
                            10)
    finally:
        sub.close()
    events = [m.json() for m in sub.on("/events")]
    states = sub.on("/state")
    assert sum(e["type"] == "start" for e in events) >= 5, [e["type"] for e in events]
    # The old daemon sent a state with every event (12 or more here); this one at most one per gap, the first
    # and the last (at shutdown) aside.
    span = states[-1].received - states[0].received
    assert len(states) <= span / gap + 2, (len(states), span)
    assert len(states) < len(events)
    gaps = [b.received - a.received for a, b in zip(states, states[1:-1])]
    assert all(g >= gap * 0.8 for g in gaps), gaps  # a little slack for delivery
    presence = discovery_config("edge_fer", "testcam", LABELS)["components"]["presence"]["value_template"]
    shown = [render(presence, m.json()) for m in states]
    assert "ON" in shown and shown[-1] == "OFF", shown  # presence was seen, and the last word is nobody
