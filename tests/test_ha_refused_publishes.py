"""A publish the broker refuses (MQTT 5 PUBACK reason code >= 0x80, here 135 under examples/mosquitto's ACL) is
reported: logged once for each kind of message, and a refused event is counted in the state's dropped_events."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_fer.config import MqttConfig
from edge_fer.errors import EXIT_OK
from edge_fer.messaging.events import EventFactory
from edge_fer.types import EventType, TrackEvent
from tests.broker import Broker, Subscriber, until
from tests.test_daemon import finish, start_daemon
from tests.test_mqtt_acl import EXAMPLE, USERS, astronaut_video, device_config, secret
from tests.test_mqtt_ha import LABELS

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")


def acl_broker(tmp_path: Path, acl: Path) -> Broker:
    """mosquitto with `acl` and a login for each of the example's users, as examples/mosquitto/README.md says."""
    passwd = tmp_path / "edge-fer.passwd"
    for i, user in enumerate(USERS):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, secret(user)],
                       check=True, capture_output=True, timeout=30)
    return Broker(tmp_path, password_file=passwd, acl_file=acl).start()


@pytest.fixture
def example_broker(tmp_path: Path):
    b = acl_broker(tmp_path, EXAMPLE / "edge-fer.acl")
    yield b
    b.stop()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The publisher's lines about refused messages."""
    return [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]


def test_a_device_that_may_not_write_its_topics_reports_each_kind_once_and_counts_its_events(
        example_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    from edge_fer.messaging.mqtt import Kind, MqttPublisher

    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    # Logged in as front, but set up as device door: the ACL lets front write only front's topics.
    cfg = MqttConfig(host="127.0.0.1", port=example_broker.port, device_id="door", username="front",
                     password=secret("front"), protocol="5")
    factory = EventFactory("door", LABELS)
    pub = MqttPublisher(cfg, "door", labels=LABELS).start()
    try:
        assert pub.connected.wait(10), "front could not log in"
        scores = {k: 0.9 if k == "happy" else 0.1 / 6 for k in LABELS}
        for i in range(1, 6):
            assert pub.publish_event(factory.event(TrackEvent(EventType.START, i, "happy", 0.9, scores), (64, 64)))
            pub.publish_state(factory.state(camera="ok", tracks=[], fps=1.0, frames=i, dropped_frames=0,
                                            dropped_events=pub.dropped, uptime=1.0))
        # Every message was answered: none stays queued as if it might still arrive.
        assert until(lambda: pub.pending() == 0 and pub.refused[Kind.EVENTS] == 5, 10), (pub.pending(), pub.refused)
        assert pub.dropped == 5
        assert pub.refused[Kind.STATE] == 5 and pub.refused[Kind.AVAILABILITY] >= 1
        assert pub.refused[Kind.DISCOVERY] >= 1
    finally:
        pub.stop()
    lines = refusals(caplog)
    kinds = [k for k in Kind if any(f"Refused {k.plural} are" in line for line in lines)]
    assert sorted(kinds) == sorted([Kind.AVAILABILITY, Kind.DISCOVERY, Kind.EVENTS, Kind.STATE]), lines
    assert len(lines) == len(kinds), lines  # one line for each kind, however many were refused
    assert all("Not authorized (reason code 135)" in line and "user 'front'" in line for line in lines), lines
    assert "edge_fer/door/events" in next(line for line in lines if "Refused events are counted" in line)
    assert not any(secret("front") in r.getMessage() for r in caplog.records)


def test_the_right_device_is_refused_nothing(example_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    from edge_fer.messaging.mqtt import MqttPublisher

    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    cfg = MqttConfig(host="127.0.0.1", port=example_broker.port, device_id="front", username="front",
                     password=secret("front"), protocol="5")
    factory = EventFactory("front", LABELS)
    sub = Subscriber(example_broker.port, "edge_fer/front/events", username="homeassistant",
                     password=secret("homeassistant"))
    pub = MqttPublisher(cfg, "front", labels=LABELS).start()
    try:
        assert pub.connected.wait(10)
        assert pub.publish_event(factory.event(TrackEvent(EventType.START, 1, "happy", 0.9,
                                                          {k: 1 / 7 for k in LABELS}), (64, 64)))
        assert sub.wait_for(lambda s: len(s.messages) == 1, 10)
        assert until(lambda: pub.pending() == 0, 10)
    finally:
        pub.stop()
        sub.close()
    assert pub.dropped == 0 and sum(pub.refused.values()) == 0 and refusals(caplog) == []


def test_the_daemon_counts_refused_events_in_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example ACL with front's grant on its events taken away: its state still goes through, its events not.
    example = (EXAMPLE / "edge-fer.acl").read_text()
    grant = "user front\ntopic write edge_fer/front/#\n"
    assert grant in example, "the example ACL changed: update this test"
    acl = tmp_path / "no-events.acl"
    acl.write_text(example.replace(grant, "user front\ntopic write edge_fer/front/state\n"
                                          "topic write edge_fer/front/availability\n"))
    broker = acl_broker(tmp_path, acl)
    monkeypatch.setenv("EDGE_FER_TEST_FRONT_PW", secret("front"))
    ha = Subscriber(broker.port, "edge_fer/#", username="homeassistant", password=secret("homeassistant"))
    try:
        config = device_config(tmp_path, broker.port, "front", astronaut_video(tmp_path / "face.avi"),
                               "EDGE_FER_TEST_FRONT_PW")
        code, err = finish(start_daemon(config), 60)
        assert code == EXIT_OK and "Traceback" not in err, err
        assert ha.wait_for(lambda s: [m.payload for m in s.on("edge_fer/front/availability")][-1:] == [b"offline"],
                           10)
    finally:
        ha.close()
        broker.stop()
    sent = sum(err.count(f" {kind}: ") for kind in ("start", "change", "end"))
    assert sent >= 2, err
    assert not ha.on("edge_fer/front/events")
    # The final state counts every event the broker refused; the log says so once.
    assert ha.on("edge_fer/front/state")[-1].json()["dropped_events"] == sent
    lines = [line for line in err.splitlines() if "refused a message" in line]
    assert len(lines) == 1 and "edge_fer/front/events" in lines[0] and "reason code 135" in lines[0], lines
    assert secret("front") not in err
