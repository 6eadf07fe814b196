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
from edge_fer.messaging.contract import Event, State
from edge_fer.messaging.events import (
    NO_FACE,
    EventFactory,
    discovery_config,
    discovery_topic,
    ha_id,
    legacy_discovery_topics,
)
from edge_fer.types import UNSURE, EventType, Face, TrackEvent, TrackState
from tests.broker import Broker, Subscriber, until

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

# What Home Assistant's MQTT integration requires, written from its documentation (home-assistant.io/integrations/
# mqtt "Device discovery payload"; sensor.mqtt, binary_sensor.mqtt, event.mqtt, image.mqtt, device_trigger.mqtt) and
# from the schemas that check it (homeassistant/components/mqtt: schemas.py DEVICE_DISCOVERY_SCHEMA and
# MQTT_ENTITY_COMMON_SCHEMA, discovery.py, sensor.py, binary_sensor.py, event.py, image.py, device_trigger.py):
# - a device-based payload needs `device` (with `identifiers` or `connections`), `origin` (with `name`) and
#   `components`, a mapping of component id to a config with `platform`; an entity component also needs a
#   `unique_id`; a device trigger (`device_automation`) has none;
# - options shared by the components may sit at the top: availability, state_topic, command_topic, qos, encoding;
# - topic segments and ids are [a-zA-Z0-9_-];
# - sensor, binary_sensor and event read `state_topic` (their own, or the shared one); a sensor's
#   `device_class: enum` needs `options` and forbids `state_class` and `unit_of_measurement`; `options` needs
#   `device_class: enum`; `state_class` is measurement, total or total_increasing, and a measurement's state is a
#   number (or "None", which Home Assistant shows as unknown); a binary sensor's state is its payload_on or
#   payload_off (ON and OFF by default);
# - an event needs `event_types`, and its template must give a JSON object whose `event_type` is one of them
#   (an empty result is ignored);
# - an image needs exactly one of `image_topic` and `url_topic`, and `content_type` only with `image_topic`;
# - a device trigger needs `automation_type: trigger`, `topic`, `type` and `subtype`, that pair unique on the
#   device; it fires when its message, through `value_template`, equals `payload`;
# - `entity_category` is config or diagnostic, and read-only entities (sensors, events, images) can only be
#   diagnostic.
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version", "hw_version",
               "serial_number", "suggested_area", "configuration_url", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
SHARED_KEYS = {"availability", "availability_topic", "availability_mode", "availability_template",
               "payload_available", "payload_not_available", "state_topic", "command_topic", "qos", "encoding"}
ENTITY_KEYS = SHARED_KEYS | {
    "platform", "unique_id", "name", "icon", "entity_category", "enabled_by_default", "json_attributes_topic",
    "json_attributes_template", "object_id", "default_entity_id", "entity_picture", "value_template"}
PLATFORM_KEYS = {
    "sensor": ENTITY_KEYS | {"device_class", "state_class", "unit_of_measurement", "options", "expire_after",
                             "force_update", "last_reset_value_template", "suggested_display_precision"},
    "binary_sensor": ENTITY_KEYS | {"device_class", "expire_after", "force_update", "off_delay", "payload_on",
                                    "payload_off"},
    "event": ENTITY_KEYS | {"device_class", "event_types"},
    "image": (ENTITY_KEYS - {"value_template", "state_topic"}) | {"image_topic", "url_topic", "content_type",
                                                                   "image_encoding", "url_template"},
    "device_automation": {"platform", "automation_type", "topic", "type", "subtype", "payload", "value_template",
                          "qos", "encoding"},
}
STATE_READERS = {"sensor", "binary_sensor", "event"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"}
HA_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _check_component(cid: str, comp: dict, doc: dict) -> None:
    """Assert that one component of a device payload is what Home Assistant accepts for its platform."""
    assert HA_ID.match(cid), cid
    platform = comp["platform"]
    assert platform in PLATFORM_KEYS, platform
    assert set(comp) <= PLATFORM_KEYS[platform], (cid, set(comp) - PLATFORM_KEYS[platform])
    if platform == "device_automation":
        assert comp["automation_type"] == "trigger" and comp["topic"] and comp["type"] and comp["subtype"], cid
        return
    assert HA_ID.match(comp["unique_id"]), comp["unique_id"]
    assert comp.get("entity_category", "diagnostic") == "diagnostic", cid  # none of these can be "config"
    assert "availability_topic" in comp or "availability_topic" in doc, cid
    if platform in STATE_READERS:
        assert comp.get("state_topic") or doc.get("state_topic"), cid
    if platform == "sensor":
        if comp.get("device_class") == "enum":
            assert comp["options"] and all(isinstance(o, str) for o in comp["options"]), cid
            assert "state_class" not in comp and "unit_of_measurement" not in comp, cid
        else:
            assert "options" not in comp, cid
        assert comp.get("state_class", "measurement") in STATE_CLASSES, cid
    if platform == "binary_sensor":
        assert comp.get("device_class", "occupancy") in BINARY_SENSOR_CLASSES, cid
    if platform == "event":
        assert comp["event_types"] and all(isinstance(t, str) for t in comp["event_types"]), cid
    if platform == "image":
        assert ("image_topic" in comp) != ("url_topic" in comp), cid
        assert "content_type" not in comp or "image_topic" in comp, cid


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
        _check_component(cid, comp, doc)
    triggers = [(c["type"], c["subtype"]) for c in doc["components"].values() if c["platform"] == "device_automation"]
    assert len(set(triggers)) == len(triggers), triggers
    unique_ids = [c["unique_id"] for c in doc["components"].values() if "unique_id" in c]
    assert len(set(unique_ids)) == len(unique_ids), unique_ids


def render(template: str, doc: dict) -> str:
    """A template rendered as Home Assistant does for a JSON payload (`value_json`)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=doc, value=json.dumps(doc)).strip()


def platforms(doc: dict, platform: str) -> dict[str, dict]:
    """The components of one platform."""
    return {cid: c for cid, c in doc["components"].items() if c["platform"] == platform}


ENTITIES = {"emotion", "faces", "confidence", "presence", "face", "fps", "camera", "dropped_frames",
            "dropped_events"}


def test_discovery_payload_is_what_home_assistant_requires() -> None:
    doc = discovery_config("edge_fer", "shop door/1", LABELS, "https://example.org/help")
    check_device_discovery(discovery_topic("homeassistant", "shop door/1"), doc)
    comps = doc["components"]
    triggers = platforms(doc, "device_automation")
    assert set(comps) - set(triggers) == ENTITIES
    assert sorted(c["subtype"] for c in triggers.values()) == sorted(LABELS)  # one per emotion, unsure aside
    assert all(c["topic"] == "edge_fer/shop door/1/events" for c in triggers.values())
    assert comps["emotion"]["options"] == [*LABELS, UNSURE, NO_FACE]
    assert comps["faces"]["state_class"] == comps["confidence"]["state_class"] == "measurement"
    assert (comps["presence"]["platform"], comps["presence"]["device_class"]) == ("binary_sensor", "occupancy")
    assert (comps["face"]["platform"], comps["face"]["event_types"]) == ("event", ["start", "change", "end"])
    assert comps["face"]["state_topic"] == "edge_fer/shop door/1/events"
    assert {cid for cid, c in comps.items() if c.get("entity_category") == "diagnostic"} == {
        "fps", "camera", "dropped_frames", "dropped_events"}
    from edge_fer.live.capture import CameraState

    assert comps["camera"]["options"] == [s.value for s in CameraState]
    assert doc["origin"] == {"name": "edge-fer", "sw_version": doc["device"]["sw_version"],
                             "support_url": "https://example.org/help"}
    assert ha_id("shop door/1") == "shop_door_1" and ha_id("çam") == "_am"
    assert "snapshot" not in comps  # off unless asked for
    with_image = discovery_config("edge_fer", "cam", LABELS, snapshot=True)
    check_device_discovery(discovery_topic("homeassistant", "cam"), with_image)
    assert with_image["components"]["snapshot"]["image_topic"] == "edge_fer/cam/snapshot"
    # Labels that differ only where ids cannot hold them still get a trigger each.
    odd = discovery_config("edge_fer", "cam", ("a b", "a/b", "c"))
    check_device_discovery(discovery_topic("homeassistant", "cam"), odd)
    assert len(platforms(odd, "device_automation")) == 3


@pytest.mark.parametrize("cid, change", [
    ("emotion", {"state_class": "measurement"}),
    ("face", {"event_types": []}),
    ("presence", {"device_class": "someone"}),
    ("fps", {"entity_category": "config"}),
    ("snapshot", {"url_topic": "edge_fer/cam/url"}),
    ("emotion_happy", {"subtype": "sad"}),  # two triggers with one type and subtype
    ("emotion_happy", {"automation_type": "action"}),
    ("faces", {"unique_id": "edge_fer_cam_emotion"}),
])
def test_the_schema_check_refuses_what_home_assistant_would(cid: str, change: dict) -> None:
    bad = discovery_config("edge_fer", "cam", LABELS, snapshot=True)
    check_device_discovery(discovery_topic("homeassistant", "cam"), bad)
    bad["components"][cid].update(change)
    with pytest.raises(AssertionError):
        check_device_discovery(discovery_topic("homeassistant", "cam"), bad)


def published_state(*tracks: TrackState, camera: str = "ok") -> dict:
    """A state as the daemon publishes it, through JSON."""
    state = EventFactory("cam", LABELS).state(camera=camera, tracks=list(tracks), fps=14.987, frames=10,
                                              dropped_frames=3, dropped_events=0, uptime=1.0)
    return json.loads(json.dumps(state.to_json()))


def published_event(kind: EventType, emotion: str = "happy", track_id: int = 1) -> dict:
    """An event as the daemon publishes it, through JSON."""
    scores = {k: 0.9 if k == emotion else 0.1 / 6 for k in LABELS}
    factory = EventFactory("cam", LABELS)
    if kind is EventType.IMAGE:
        doc = factory.image_event("x.jpg", Face((0, 0, 10, 10), emotion, 0.9, scores), 0, (64, 64))
    else:
        doc = factory.event(TrackEvent(kind, track_id, emotion, 0.9, scores, (0, 0, 10, 10), duration=2.0), (64, 64))
    return json.loads(json.dumps(doc.to_json()))


def test_templates_give_each_state_a_valid_value_and_no_face_clears_the_emotion() -> None:
    doc = discovery_config("edge_fer", "cam", LABELS, snapshot=True)
    comps = doc["components"]
    face = published_state(TrackState(1, "happy", 0.8731, (0, 0, 10, 10)))
    none = published_state()
    unsure = published_state(TrackState(1, UNSURE, 0.31, (0, 0, 10, 10)), TrackState(4, "sad", 0.7, (20, 0, 5, 5)))
    down = published_state(camera="down")
    # The templates read only what the documents define.
    fields = {name for name, _ in State.specs()} | {name for name, _ in Event.specs()} | {"track_id", "emotion"}
    for comp in comps.values():
        for key in ("value_template", "json_attributes_template"):
            assert set(re.findall(r"value_json\.(\w+)", comp.get(key, ""))) <= fields, comp[key]
    # Every entity reading the state gets a value it accepts, for every state.
    for state in (face, none, unsure, down):
        for cid, comp in comps.items():
            if comp["platform"] not in ("sensor", "binary_sensor"):
                continue
            value = render(comp["value_template"], state)
            if comp["platform"] == "binary_sensor":
                assert value in ("ON", "OFF"), (cid, value)
            elif comp.get("device_class") == "enum":
                assert value in comp["options"], (cid, value)
            else:
                assert value == "None" or float(value) >= 0, (cid, value)
    assert render(comps["emotion"]["value_template"], face) == "happy"
    assert render(comps["emotion"]["value_template"], none) == NO_FACE
    assert render(comps["faces"]["value_template"], none) == "0"
    assert float(render(comps["confidence"]["value_template"], face)) == pytest.approx(87.3)
    assert render(comps["confidence"]["value_template"], none) == "None"  # unknown, not the last value
    assert [render(comps["presence"]["value_template"], s) for s in (face, none, unsure)] == ["ON", "OFF", "ON"]
    assert render(comps["fps"]["value_template"], face) == "15.0"
    assert render(comps["camera"]["value_template"], down) == "down"
    assert (render(comps["dropped_frames"]["value_template"], face),
            render(comps["dropped_events"]["value_template"], face)) == ("3", "0")
    # The emotion's attributes: the emotions in view, nothing that moves with every frame or face.
    attributes = comps["emotion"]["json_attributes_template"]
    assert json.loads(render(attributes, unsure)) == {"emotions": ["sad", UNSURE]}
    assert json.loads(render(attributes, none)) == {"emotions": []}


def test_the_face_event_and_the_emotion_triggers_read_the_events() -> None:
    doc = discovery_config("edge_fer", "cam", LABELS)
    entity = doc["components"]["face"]
    triggers = platforms(doc, "device_automation")

    def fired(event: dict) -> list[str]:
        return [c["subtype"] for c in triggers.values() if render(c["value_template"], event) == c["payload"]]

    for kind in (EventType.START, EventType.CHANGE, EventType.END):
        event = published_event(kind, "surprise", track_id=7)
        shown = json.loads(render(entity["value_template"], event))
        assert shown == {"event_type": kind.value, "emotion": "surprise", "confidence": 0.9, "track_id": 7}
        assert shown["event_type"] in entity["event_types"]
        assert fired(event) == ([] if kind is EventType.END else ["surprise"])
    # A photo's result and an unsure face are no face event and fire no trigger.
    photo = published_event(EventType.IMAGE)
    assert render(entity["value_template"], photo) == "" and fired(photo) == []
    assert fired(published_event(EventType.START, UNSURE)) == []


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
    factory = EventFactory("cam", LABELS)
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
                accepted.append(pub.publish_event(factory.event(TrackEvent(EventType.START, i, "happy", 0.9, {
                    k: 0.9 if k == "happy" else 0.1 / 6 for k in LABELS}, (1, 2, 3, 4)), (640, 480))))
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
    a, b = EventFactory("cam", LABELS), EventFactory("cam", LABELS)
    assert a.run_id != b.run_id and re.fullmatch(r"[0-9a-f]{12}", a.run_id)
    e = a.event(TrackEvent(EventType.START, 1, "happy", 0.9, {k: 0.1 for k in LABELS}, (1, 2, 3, 4)),
                (640, 480)).to_json()
    face = Face((0, 0, 1, 1), "sad", 0.7, {k: 0.05 for k in LABELS})
    i = a.image_event("/home/someone/x.jpg", face, 0, (10, 10)).to_json()
    assert (e["run_id"], e["seq"]) == (a.run_id, 1) and (i["run_id"], i["seq"]) == (a.run_id, 2)
    assert i["image"] == "x.jpg" and "track_id" not in i and i["labels"] == list(LABELS)
    assert b.event(TrackEvent(EventType.END, 1, "happy", 0.9), (640, 480)).seq == 1


def test_the_state_names_the_largest_face_dominant_and_null_without_faces() -> None:
    factory = EventFactory("cam", LABELS)
    tracks = [TrackState(3, "sad", 0.61234, (0, 0, 50, 50)), TrackState(4, "happy", 0.9, (100, 0, 80, 90))]
    doc = factory.state(camera="ok", tracks=tracks, fps=14.987, frames=300, dropped_frames=2, dropped_events=1,
                        uptime=20.04).to_json()
    assert (doc["faces"], doc["dominant_emotion"], doc["dominant_confidence"]) == (2, "happy", 0.9)
    assert doc["tracks"][0] == {"track_id": 3, "emotion": "sad", "confidence": 0.6123, "box": [0, 0, 50, 50]}
    assert (doc["fps"], doc["dropped_frames"], doc["dropped_events"], doc["uptime"]) == (14.99, 2, 1, 20.0)
    assert (doc["device"], doc["run_id"], doc["camera"], doc["labels"]) == ("cam", factory.run_id, "ok", list(LABELS))
    empty = factory.state(camera="waiting", tracks=[], fps=0.0, frames=0, dropped_frames=0, dropped_events=0,
                          uptime=1.0).to_json()
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
