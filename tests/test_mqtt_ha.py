"""Home Assistant discovery as its MQTT integration expects it, and run ids, against a real mosquitto."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from edge_fer.config import MqttConfig
from edge_fer.messaging.events import (NO_FACE, EventFactory, discovery_config, discovery_topic, ha_id,
                             legacy_discovery_topics)
from edge_fer.types import UNSURE, TrackEvent, TrackState
from tests.broker import Broker, Subscriber, until

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

# What Home Assistant's MQTT integration requires, written from its documentation
# (home-assistant.io/integrations/mqtt "Device discovery payload", /integrations/sensor.mqtt, /integrations/sensor):
# - a device-based discovery payload needs `device` (with `identifiers` or `connections`), `origin` (with `name`;
#   `sw_version` and `support_url` optional) and `components`, a mapping of component id to a config with
#   `platform`; each component of a device-based payload needs a `unique_id`;
# - options shared by all components may sit at the top: availability, state_topic, command_topic, qos, encoding;
# - topic segments and ids are [a-zA-Z0-9_-];
# - a sensor's keys come from the list below; `device_class: enum` needs `options` and forbids `state_class` and
#   `unit_of_measurement`; `options` needs `device_class: enum`; `state_class` is measurement, total or
#   total_increasing, and a measurement's state is a number (or "None", which Home Assistant shows as unknown).
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version", "hw_version",
               "serial_number", "suggested_area", "configuration_url", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
SHARED_KEYS = {"availability", "availability_topic", "availability_mode", "availability_template",
               "payload_available", "payload_not_available", "state_topic", "command_topic", "qos", "encoding"}
SENSOR_KEYS = SHARED_KEYS | {
    "platform", "unique_id", "name", "device_class", "state_class", "unit_of_measurement", "options",
    "value_template", "json_attributes_topic", "json_attributes_template", "icon", "entity_category",
    "enabled_by_default", "expire_after", "force_update", "last_reset_value_template", "object_id",
    "default_entity_id", "suggested_display_precision", "entity_picture"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
HA_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_device_discovery(topic: str, doc: dict, discovery_prefix: str = "homeassistant") -> None:
    """Assert that `doc` on `topic` is a device-based discovery payload Home Assistant accepts."""
    prefix, kind, object_id, last = topic.rsplit("/", 3)
    assert (prefix, kind, last) == (discovery_prefix, "device", "config") and HA_ID.match(object_id), topic
    assert set(doc) <= {"device", "origin", "components"} | SHARED_KEYS, set(doc) - SHARED_KEYS
    device = doc["device"]
    assert set(device) <= DEVICE_KEYS and (device.get("identifiers") or device.get("connections"))
    assert set(doc["origin"]) <= ORIGIN_KEYS and doc["origin"]["name"]
    assert doc["components"]
    for cid, comp in doc["components"].items():
        assert HA_ID.match(cid), cid
        assert comp["platform"] == "sensor" and set(comp) <= SENSOR_KEYS, set(comp) - SENSOR_KEYS
        assert HA_ID.match(comp["unique_id"]), comp["unique_id"]
        if comp.get("device_class") == "enum":
            assert comp["options"] and all(isinstance(o, str) for o in comp["options"])
            assert "state_class" not in comp and "unit_of_measurement" not in comp
        else:
            assert "options" not in comp
        if "state_class" in comp:
            assert comp["state_class"] in STATE_CLASSES
        assert "state_topic" in comp or "state_topic" in doc
        assert "availability_topic" in comp or "availability_topic" in doc


def render(template: str, state: dict) -> str:
    """A value template rendered as Home Assistant does for a JSON payload (`value_json`)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=state, value=json.dumps(state)).strip()


def test_discovery_payload_is_what_home_assistant_requires() -> None:
    doc = discovery_config("edge_fer", "shop door/1", LABELS, "https://example.org/help")
    check_device_discovery(discovery_topic("homeassistant", "shop door/1"), doc)
    comps = doc["components"]
    assert set(comps) == {"emotion", "faces", "confidence"}
    assert comps["emotion"]["options"] == [*LABELS, UNSURE, NO_FACE]
    assert comps["faces"]["state_class"] == comps["confidence"]["state_class"] == "measurement"
    assert doc["origin"] == {"name": "edge-fer", "sw_version": doc["device"]["sw_version"],
                             "support_url": "https://example.org/help"}
    assert ha_id("shop door/1") == "shop_door_1" and ha_id("çam") == "_am"
    # The schema check rejects what Home Assistant would: it can fail.
    bad = json.loads(json.dumps(doc))
    bad["components"]["emotion"]["state_class"] = "measurement"
    with pytest.raises(AssertionError):
        check_device_discovery(discovery_topic("homeassistant", "x"), bad)


def test_templates_give_each_state_a_valid_value_and_no_face_clears_the_emotion() -> None:
    comps = discovery_config("edge_fer", "cam", LABELS)["components"]
    face = {"faces": 1, "dominant_emotion": "happy", "dominant_confidence": 0.8731}
    none = {"faces": 0, "dominant_emotion": None, "dominant_confidence": None}
    assert render(comps["emotion"]["value_template"], face) == "happy"
    assert render(comps["emotion"]["value_template"], none) == NO_FACE
    unsure = {"faces": 1, "dominant_emotion": UNSURE, "dominant_confidence": 0.31}
    assert render(comps["emotion"]["value_template"], unsure) in comps["emotion"]["options"]
    assert render(comps["faces"]["value_template"], none) == "0"
    assert float(render(comps["confidence"]["value_template"], face)) == pytest.approx(87.3)
    assert render(comps["confidence"]["value_template"], none) == "None"  # unknown, not the last value


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def publisher(port: int, device: str = "cam", **cfg):
    from edge_fer.messaging.mqtt import MqttPublisher

    return MqttPublisher(MqttConfig(host="127.0.0.1", port=port, device_id=device, **cfg), device, labels=LABELS)


def retained(port: int, topic: str, marker: str) -> list:
    """The retained messages under `topic`, read by a new subscriber once `marker`'s retained message is in."""
    sub = Subscriber(port, topic)
    try:
        assert sub.wait_for(lambda s: any(m.topic == marker for m in s.messages), 10), f"no retained {marker}"
        return [m for m in sub.messages if m.retain]
    finally:
        sub.close()


def test_discovery_replaces_old_topics_and_is_announced_again_when_home_assistant_comes_online(broker: Broker) -> None:
    import paho.mqtt.publish as publish

    def send(topic: str, payload: str, retain: bool = False) -> None:
        publish.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1", port=broker.port)

    legacy = legacy_discovery_topics("homeassistant", "cam")
    for old in legacy:  # what edge-fer 0.1 left on the broker
        send(old, json.dumps({"name": "old"}), retain=True)
    send("homeassistant/status", "online", retain=True)  # an old birth message: no reason to announce twice
    sub = Subscriber(broker.port)
    pub = publisher(broker.port).start()
    try:
        topic = discovery_topic("homeassistant", "cam")
        assert sub.wait_for(lambda s: len(s.on(topic)) == 1, 10), "no discovery"
        check_device_discovery(topic, sub.on(topic)[0].json())
        # The old configs are emptied before the new one is sent, so their unique ids are free for it.
        order = [m.topic for m in sub.messages if m.topic in (*legacy, topic) and not m.retain]
        assert order == [*legacy, topic]
        assert all(m.payload == b"" for m in sub.messages if m.topic in legacy and not m.retain)
        kept = retained(broker.port, "homeassistant/#", topic)
        assert [m.topic for m in kept if m.topic.endswith("/config")] == [topic]

        # Home Assistant restarts: its birth message (not retained) asks for discovery again, once per birth.
        send("homeassistant/status", "offline")
        send("homeassistant/status", "online")
        assert sub.wait_for(lambda s: len(s.on(topic)) == 2, 10), "discovery not announced again"
        send("homeassistant/status", "online")
        assert sub.wait_for(lambda s: len(s.on(topic)) >= 3, 10)
        assert len(sub.on(topic)) == 3 and sub.on("cam/availability")[-1].payload == b"online"
    finally:
        pub.stop()
        sub.close()


def test_a_flood_of_birth_messages_is_answered_once_per_window_and_events_still_go_out(broker: Broker,
                                                                                       caplog) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_fer.messaging import mqtt

    window = 5.0  # as README documents it
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    topic = discovery_topic("homeassistant", "cam")
    # Subscribers of their own topics only, so the flood cannot crowd out what they count.
    discovery, events = Subscriber(broker.port, topic), Subscriber(broker.port, "edge_fer/cam/events")
    pub = publisher(broker.port, queue_size=100).start()  # room for every event, not for the flood
    # Anyone on the broker may say Home Assistant is online, as often as they like.
    flood = paho.Client(CallbackAPIVersion.VERSION2)
    flood.connect("127.0.0.1", broker.port)
    flood.loop_start()
    accepted = []
    try:
        assert discovery.wait_for(lambda s: len(s.messages) == 1, 10), "no discovery"
        t0 = time.monotonic()
        for i in range(2000):
            sent = flood.publish("homeassistant/status", "online", qos=1)
            if i % 100 == 0:
                accepted.append(pub.publish_event({"seq": i}))
        sent.wait_for_publish(60)  # the broker has them all (acknowledged in order)
        last = flood.publish("homeassistant/status", "online", qos=1)  # the last request, after the flood
        last.wait_for_publish(10)
        asked = time.time()
        flood_seconds = time.monotonic() - t0
        assert all(accepted), f"{accepted.count(False)} of {len(accepted)} events refused during the flood"
        assert events.wait_for(lambda s: len(s.messages) == len(accepted), 10), "events lost in the flood"
        # The last request is honoured, once the window since the re-announcement before it has ended.
        assert discovery.wait_for(lambda s: s.messages[-1].received >= asked, window + 10), \
            "the last birth message was not answered"
    finally:
        pub.stop()  # nothing is announced after this
        flood.disconnect()
        flood.loop_stop()
        discovery.close()
        events.close()
    announced = [m.received for m in discovery.messages][1:]  # after the one on connect
    assert len(announced) <= 3 + flood_seconds / window, f"{len(announced)} re-announcements"
    gaps = [b - a for a, b in zip(announced, announced[1:])]
    assert gaps and min(gaps) >= 0.8 * window, gaps  # a little slack for delivery
    lines = [r.getMessage() for r in caplog.records if "Home Assistant" in r.getMessage()]
    assert 2 <= len(lines) <= 4, lines  # announced again at once; the flood noticed; every 1000th
    assert mqtt.REANNOUNCE_SECONDS == window


def test_turning_discovery_off_removes_every_entity(broker: Broker) -> None:
    topic = discovery_topic("homeassistant", "cam")
    with publisher(broker.port) as pub:
        assert pub.connected.wait(10)
        assert [m.topic for m in retained(broker.port, "homeassistant/#", topic)] == [topic]
    with publisher(broker.port, discovery=False) as pub:
        assert pub.connected.wait(10)

        # Connected means the removal is on its way, not yet at the broker: look again until it has landed.
        def discovery_left() -> list[str]:
            kept = retained(broker.port, "#", "edge_fer/cam/availability")
            return [m.topic for m in kept if m.topic.startswith("homeassistant/")]

        assert until(lambda: discovery_left() == [], 10), discovery_left()


def test_events_and_image_events_carry_the_run_id_and_each_run_has_its_own() -> None:
    a, b = EventFactory("cam"), EventFactory("cam")
    assert a.run_id != b.run_id and re.fullmatch(r"[0-9a-f]{12}", a.run_id)
    e = a.event(TrackEvent("start", 1, "happy", 0.9, {k: 0.1 for k in LABELS}, (1, 2, 3, 4)), (640, 480))
    face = {"emotion": "sad", "confidence": 0.7, "scores": {}, "box": [0, 0, 1, 1]}
    i = a.image_event("x.jpg", face, 0, (10, 10))
    assert (e["run_id"], e["seq"]) == (a.run_id, 1) and (i["run_id"], i["seq"]) == (a.run_id, 2)
    assert b.event(TrackEvent("end", 1, "happy", 0.9), (640, 480))["seq"] == 1


def test_the_state_names_the_largest_face_dominant_and_null_without_faces() -> None:
    from edge_fer.messaging.events import state_doc

    tracks = [TrackState(3, "sad", 0.61234, (0, 0, 50, 50)), TrackState(4, "happy", 0.9, (100, 0, 80, 90))]
    doc = state_doc("cam", "run", "ok", tracks, 14.987, 300, 2, 1, 20.04)
    assert (doc["faces"], doc["dominant_emotion"], doc["dominant_confidence"]) == (2, "happy", 0.9)
    assert doc["tracks"][0] == {"track_id": 3, "emotion": "sad", "confidence": 0.6123, "box": [0, 0, 50, 50]}
    assert (doc["fps"], doc["dropped_frames"], doc["dropped_events"], doc["uptime"]) == (14.99, 2, 1, 20.0)
    empty = state_doc("cam", "run", "waiting", [], 0.0, 0, 0, 0, 1.0)
    assert (empty["faces"], empty["dominant_emotion"], empty["dominant_confidence"]) == (0, None, None)


def test_a_reload_starts_a_new_run_id_in_events_and_state(tmp_path: Path, broker: Broker, clear_faces) -> None:
    from tests.conftest import paste_faces, write_video
    from tests.test_daemon import finish, start_daemon, write_config

    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    video = write_video(tmp_path / "loop.avi", [happy] * 15)
    sub = Subscriber(broker.port, "edge_fer/#")
    proc = start_daemon(write_config(tmp_path / "c.yaml", video, broker.port, camera={"loop": True}))
    try:
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 1, 30), "no start event"
        proc.send_signal(signal.SIGHUP)
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 3, 30), "no events after the reload"
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 15)
        sub.wait_for(lambda s: len(s.on("/events")) >= 4, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert code == 0, err
    events = [m.json() for m in sub.on("/events")]
    assert [(e["type"], e["seq"]) for e in events] == [("start", 1), ("end", 2), ("start", 1), ("end", 2)]
    runs = [e["run_id"] for e in events]
    assert runs[0] == runs[1] != runs[2] == runs[3]
    # (device, run_id, seq) tells a restart's seq 1 from a duplicate.
    assert len({(e["device"], e["run_id"], e["seq"]) for e in events}) == 4
    states = [m.json() for m in sub.on("/state")]
    assert {s["run_id"] for s in states} == {runs[0], runs[2]}
    assert states[-1]["run_id"] == runs[2] and states[-1]["dominant_emotion"] is None
    assert states[-1]["dominant_confidence"] is None
    assert any(s["dominant_emotion"] == "happy" and s["dominant_confidence"] > 0.5 for s in states)
