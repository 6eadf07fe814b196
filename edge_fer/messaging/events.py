"""The JSON documents edge-fer publishes: events, image events, state and Home Assistant discovery."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from pathlib import PurePath
from typing import Any

from edge_fer import __version__
from edge_fer.types import UNSURE, TrackEvent, TrackState, landmarks_list


def utc_iso(t: float | None = None) -> str:
    """ISO 8601 UTC time with milliseconds, of `t` (seconds since the epoch) or now."""
    when = dt.datetime.now(dt.timezone.utc) if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventFactory:
    """Numbers and stamps the events of one device run: `run_id` is new for every factory, `seq` counts from 1."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)

    def event(self, e: TrackEvent, frame_size: tuple[int, int], captured: float | None = None) -> dict[str, Any]:
        """One start/change/end event; `captured` is the wall time of the frame that caused it."""
        doc = {"type": e.type, "device": self.device, "track_id": e.track_id, "emotion": e.emotion,
               "confidence": round(e.confidence, 4), "scores": {k: round(v, 4) for k, v in e.scores.items()},
               "box": [int(v) for v in e.box], "landmarks": landmarks_list(e.landmarks),
               "detector_score": None if e.detector_score is None else round(e.detector_score, 4),
               "frame_size": [int(frame_size[0]), int(frame_size[1])], "ts": utc_iso(), "run_id": self.run_id,
               "seq": next(self._seq)}
        if captured is not None:
            doc["frame_ts"] = utc_iso(captured)
        if e.type == "end":
            doc["duration"] = round(e.duration, 3)
        return doc

    def image_event(self, image: str, face: dict[str, Any], index: int, frame_size: tuple[int, int]) -> dict[str, Any]:
        """A one-shot result (edge-fer --image --publish) in the same schema, type 'image'."""
        # The file's name alone: the folders above it can say whose photo it is, and every subscriber gets it.
        return {"type": "image", "device": self.device, "image": PurePath(image).name, "face_index": index,
                "emotion": face["emotion"], "confidence": face["confidence"], "scores": face["scores"],
                "unsure": face.get("unsure"),
                "box": face["box"], "landmarks": face.get("landmarks"), "detector_score": face.get("detector_score"),
                "frame_size": list(frame_size), "ts": utc_iso(), "run_id": self.run_id, "seq": next(self._seq)}


def state_doc(device: str, run_id: str, camera: str, tracks: list[TrackState], fps: float, frames: int,
              dropped_frames: int, dropped_events: int, uptime: float) -> dict[str, Any]:
    """The retained state message; with no face in view the dominant emotion and confidence are null."""
    docs = [{"track_id": t.track_id, "emotion": t.emotion, "confidence": round(t.confidence, 4), "box": list(t.box)}
            for t in tracks]
    dominant = max(docs, key=lambda t: t["box"][2] * t["box"][3]) if docs else {}
    return {"device": device, "run_id": run_id, "camera": camera, "faces": len(docs),
            "dominant_emotion": dominant.get("emotion"), "dominant_confidence": dominant.get("confidence"),
            "tracks": docs, "fps": round(fps, 2), "frames": frames, "dropped_frames": dropped_frames,
            "dropped_events": dropped_events, "uptime": round(uptime, 1), "ts": utc_iso()}


NO_FACE = "no_face"  # the emotion sensor's state when no face is in view


def ha_id(text: str) -> str:
    """`text` with every character outside [a-zA-Z0-9_-] replaced by '_', as discovery topics and ids need."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in text)


def discovery_topic(discovery_prefix: str, device: str) -> str:
    """The device-based discovery topic: one retained config for all of a device's entities."""
    return f"{discovery_prefix}/device/edge_fer_{ha_id(device)}/config"


def legacy_discovery_topics(discovery_prefix: str, device: str) -> list[str]:
    """The per-sensor topics edge-fer 0.1 published; cleared so that no entity is announced twice."""
    return [f"{discovery_prefix}/sensor/{ha_id(device)}/{name}/config" for name in ("emotion", "faces")]


def discovery_config(prefix: str, device: str, labels: tuple[str, ...], support_url: str = "") -> dict[str, Any]:
    """Home Assistant device-based discovery: an enum sensor for the emotion, the face count and the confidence."""
    base = f"{prefix}/{device}"
    node = ha_id(device)
    origin = {"name": "edge-fer", "sw_version": __version__}
    if support_url:
        origin["support_url"] = support_url
    # "None" is Home Assistant's word for "unknown": a measurement must be a number or nothing.
    percent = ("{% if value_json.dominant_confidence is number %}{{ (value_json.dominant_confidence * 100) | round(1) }}"
               "{% else %}None{% endif %}")
    return {
        "device": {"identifiers": [f"edge_fer_{node}"], "name": f"edge-fer {device}", "manufacturer": "edge-fer",
                   "model": "edge-fer", "sw_version": __version__},
        "origin": origin,
        "availability_topic": f"{base}/availability", "state_topic": f"{base}/state", "qos": 1,
        "components": {
            "emotion": {"platform": "sensor", "name": "Emotion", "unique_id": f"edge_fer_{node}_emotion",
                        "device_class": "enum", "options": [*labels, UNSURE, NO_FACE],
                        "value_template": f"{{{{ value_json.dominant_emotion or '{NO_FACE}' }}}}",
                        "json_attributes_topic": f"{base}/state", "icon": "mdi:emoticon-outline"},
            "faces": {"platform": "sensor", "name": "Faces", "unique_id": f"edge_fer_{node}_faces",
                      "state_class": "measurement", "value_template": "{{ value_json.faces }}",
                      "icon": "mdi:account-group"},
            "confidence": {"platform": "sensor", "name": "Emotion confidence",
                           "unique_id": f"edge_fer_{node}_confidence", "state_class": "measurement",
                           "unit_of_measurement": "%", "value_template": percent, "icon": "mdi:percent"},
        },
    }
