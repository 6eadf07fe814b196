"""Home Assistant: the device discovery edge-fer announces, and when a state is worth publishing to it.

What the entities show is defined here once: discovery_config() says how each reads the state or the events,
and shows_change() says which differences between two states an entity would show."""

from __future__ import annotations

import math
from typing import Any

from edge_fer import __version__
from edge_fer.messaging.contract import State
from edge_fer.types import NO_FACE, SCORE_PLACES, UNSURE, EventType

# The capture's states (edge_fer.live.capture.CameraState, a layer above; a test keeps the two equal).
CAMERA_STATES = ("starting", "ok", "down", "stalled", "ended", "failed")
# The event entity's types: what happened to a face in view (a photo's `image` events are not shown).
FACE_EVENTS = (EventType.START.value, EventType.CHANGE.value, EventType.END.value)
# The confidence sensor follows the smoothed score, which moves a little on every frame: a move this large is a
# change worth a state of its own; smaller ones ride along with the next state that goes out for another reason.
CONFIDENCE_STEP = 0.1


def ha_id(text: str) -> str:
    """`text` with every character outside [a-zA-Z0-9_-] replaced by '_', as discovery topics and ids need."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in text)


def discovery_topic(discovery_prefix: str, device: str) -> str:
    """The device-based discovery topic: one retained config for all of a device's entities."""
    return f"{discovery_prefix}/device/edge_fer_{ha_id(device)}/config"


def legacy_discovery_topics(discovery_prefix: str, device: str) -> list[str]:
    """The per-sensor topics edge-fer 0.1 published; cleared so that no entity is announced twice."""
    return [f"{discovery_prefix}/sensor/{ha_id(device)}/{name}/config" for name in ("emotion", "faces")]


def snapshot_topic(prefix: str, device: str) -> str:
    """Where the annotated pictures for the image entity go (not retained: a face is not kept on the broker)."""
    return f"{prefix}/{device}/snapshot"


def _unknown_unless_number(field: str) -> str:
    # "None" is Home Assistant's word for "unknown": a measurement must be a number or nothing.
    return f"{{% if value_json.{field} is number %}}{{{{ value_json.{field} }}}}{{% else %}}None{{% endif %}}"


def _trigger_ids(labels: tuple[str, ...]) -> list[str]:
    """A component id per label, distinct even where two labels differ only in characters ids cannot hold."""
    ids: list[str] = []
    for label in labels:
        cid = f"emotion_{ha_id(label)}"
        while cid in ids:
            cid += "_"
        ids.append(cid)
    return ids


def discovery_config(prefix: str, device: str, labels: tuple[str, ...], support_url: str = "",
                     snapshot: bool = False) -> dict[str, Any]:
    """Home Assistant device-based discovery: sensors, presence, diagnostics, a face event entity, a device
    trigger per emotion, and with `snapshot` an image entity."""
    base = f"{prefix}/{device}"
    node = ha_id(device)
    origin = {"name": "edge-fer", "sw_version": __version__}
    if support_url:
        origin["support_url"] = support_url
    percent = ("{% if value_json.dominant_confidence is number %}"
               "{{ (value_json.dominant_confidence * 100) | round(1) }}{% else %}None{% endif %}")
    # The emotion of every face in view, sorted: not their boxes and scores, which move on every frame, nor their
    # track ids, which a face that flickers at the detector's edge renews every second (every change of an
    # entity's attributes is a row in Home Assistant's recorder; the face event carries the track id).
    tracks = "{{ {'emotions': value_json.tracks | map(attribute='emotion') | sort | list} | tojson }}"
    face_event = ("{% if value_json.type in " + repr(list(FACE_EVENTS)) + " %}{{ {'event_type': value_json.type, "
                  "'emotion': value_json.emotion, 'confidence': value_json.confidence, "
                  "'track_id': value_json.track_id} | tojson }}{% endif %}")
    # A device trigger fires when its topic's message, through the template, equals its payload.
    judged = "{{ value_json.emotion if value_json.type in ['start', 'change'] else '' }}"

    def uid(name: str) -> str:
        return f"edge_fer_{node}_{name}"

    diagnostic = {"entity_category": "diagnostic"}
    components: dict[str, dict[str, Any]] = {
        "emotion": {"platform": "sensor", "name": "Emotion", "unique_id": uid("emotion"),
                    "device_class": "enum", "options": [*labels, UNSURE, NO_FACE],
                    "value_template": f"{{{{ value_json.dominant_emotion or '{NO_FACE}' }}}}",
                    "json_attributes_topic": f"{base}/state", "json_attributes_template": tracks,
                    "icon": "mdi:emoticon-outline"},
        "faces": {"platform": "sensor", "name": "Faces", "unique_id": uid("faces"),
                  "state_class": "measurement", "value_template": "{{ value_json.faces }}",
                  "icon": "mdi:account-group"},
        "confidence": {"platform": "sensor", "name": "Emotion confidence", "unique_id": uid("confidence"),
                       "state_class": "measurement", "unit_of_measurement": "%", "value_template": percent,
                       "icon": "mdi:percent"},
        "presence": {"platform": "binary_sensor", "name": "Presence", "unique_id": uid("presence"),
                     "device_class": "occupancy",
                     "value_template": "{{ 'ON' if value_json.faces > 0 else 'OFF' }}"},
        "face": {"platform": "event", "name": "Face", "unique_id": uid("face"), "state_topic": f"{base}/events",
                 "event_types": list(FACE_EVENTS), "value_template": face_event, "icon": "mdi:face-recognition"},
        "fps": {"platform": "sensor", "name": "Frame rate", "unique_id": uid("fps"), "state_class": "measurement",
                "unit_of_measurement": "fps", "suggested_display_precision": 1,
                "value_template": "{{ value_json.fps | round(1) }}", "icon": "mdi:speedometer", **diagnostic},
        "camera": {"platform": "sensor", "name": "Camera", "unique_id": uid("camera"), "device_class": "enum",
                   "options": list(CAMERA_STATES),
                   "value_template": "{% if value_json.camera %}{{ value_json.camera }}{% else %}None{% endif %}",
                   "icon": "mdi:cctv", **diagnostic},
        "dropped_frames": {"platform": "sensor", "name": "Dropped frames", "unique_id": uid("dropped_frames"),
                           "state_class": "total_increasing",
                           "value_template": _unknown_unless_number("dropped_frames"), "icon": "mdi:filmstrip-off",
                           **diagnostic},
        "dropped_events": {"platform": "sensor", "name": "Dropped events", "unique_id": uid("dropped_events"),
                           "state_class": "total_increasing",
                           "value_template": _unknown_unless_number("dropped_events"),
                           "icon": "mdi:message-alert-outline", **diagnostic},
    }
    for cid, label in zip(_trigger_ids(labels), labels):
        components[cid] = {"platform": "device_automation", "automation_type": "trigger",
                           "topic": f"{base}/events", "type": "emotion", "subtype": label, "payload": label,
                           "value_template": judged, "qos": 1}
    if snapshot:
        components["snapshot"] = {"platform": "image", "name": "Snapshot", "unique_id": uid("snapshot"),
                                  "image_topic": snapshot_topic(prefix, device), "content_type": "image/jpeg"}
    return {
        "device": {"identifiers": [f"edge_fer_{node}"], "name": f"edge-fer {device}", "manufacturer": "edge-fer",
                   "model": "edge-fer", "sw_version": __version__},
        "origin": origin,
        "availability_topic": f"{base}/availability", "state_topic": f"{base}/state", "qos": 1,
        "components": components,
    }


def _emotions(state: State) -> list[str]:
    return sorted(t.emotion for t in state.tracks)


def shows_change(before: State, after: State) -> bool:
    """Whether an entity would show `after` otherwise than `before`: the camera, the faces, the dominant emotion,
    the emotions in view, or the confidence by CONFIDENCE_STEP or more. Frame rate, counters and times are not
    news: they go out with the next state that is."""
    if (before.camera, before.faces, before.dominant_emotion) != (after.camera, after.faces, after.dominant_emotion):
        return True
    if _emotions(before) != _emotions(after):
        return True
    a, b = before.dominant_confidence, after.dominant_confidence
    if a is None or b is None:
        return (a is None) != (b is None)
    return round(abs(b - a), SCORE_PLACES) >= CONFIDENCE_STEP  # as published: 0.9 - 0.8 is a step


class StateGate:
    """When the daemon publishes its state: at once on a change an entity shows, never twice within `min_gap`
    (a change that comes sooner goes out when the gap is over, as the state is then), and every `keep_alive`
    seconds whatever happens, so that frame rate and counters stay fresh."""

    def __init__(self, keep_alive: float, min_gap: float) -> None:
        self.keep_alive = keep_alive
        self.min_gap = min(min_gap, keep_alive)  # a keep-alive asked for more often than the gap sets the pace
        self._last: State | None = None
        self._at = -math.inf

    def due(self, state: State, now: float) -> bool:
        """Whether `state` (made at monotonic time `now`) should be published."""
        if self._last is None:
            return True
        waited = now - self._at
        return waited >= self.keep_alive or (waited >= self.min_gap and shows_change(self._last, state))

    def sent(self, state: State, now: float) -> None:
        """`state` was published at `now`: what later states are compared with."""
        self._last, self._at = state, now
