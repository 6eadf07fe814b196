"""The JSON documents edge-fer publishes: events, state and Home Assistant discovery."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from edge_fer import __version__
from edge_fer.tracking import TrackEvent
from edge_fer.types import landmarks_list


def utc_iso(t: float | None = None) -> str:
    """ISO 8601 UTC time with milliseconds, of `t` (seconds since the epoch) or now."""
    when = dt.datetime.now(dt.timezone.utc) if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventFactory:
    """Numbers and stamps the events of one device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._seq = itertools.count(1)

    def event(self, e: TrackEvent, frame_size: tuple[int, int], captured: float | None = None) -> dict[str, Any]:
        """One start/change/end event; `captured` is the wall time of the frame that caused it."""
        doc = {"type": e.type, "device": self.device, "track_id": e.track_id, "emotion": e.emotion,
               "confidence": round(e.confidence, 4), "scores": {k: round(v, 4) for k, v in e.scores.items()},
               "box": [int(v) for v in e.box], "landmarks": landmarks_list(e.landmarks),
               "detector_score": None if e.detector_score is None else round(e.detector_score, 4),
               "frame_size": [int(frame_size[0]), int(frame_size[1])], "ts": utc_iso(), "seq": next(self._seq)}
        if captured is not None:
            doc["frame_ts"] = utc_iso(captured)
        if e.type == "end":
            doc["duration"] = round(e.duration, 3)
        return doc

    def image_event(self, image: str, face: dict[str, Any], index: int, frame_size: tuple[int, int]) -> dict[str, Any]:
        """A one-shot result (edge-fer --image --publish) in the same schema, type 'image'."""
        return {"type": "image", "device": self.device, "image": image, "face_index": index,
                "emotion": face["emotion"], "confidence": face["confidence"], "scores": face["scores"],
                "box": face["box"], "landmarks": face["landmarks"], "detector_score": face["detector_score"],
                "frame_size": list(frame_size), "ts": utc_iso(), "seq": next(self._seq)}


def discovery_messages(prefix: str, discovery_prefix: str, device: str) -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: a sensor for the dominant emotion and one for the face count."""
    base = f"{prefix}/{device}"
    node = "".join(c if c.isalnum() or c in "_-" else "_" for c in device)
    dev = {"identifiers": [f"edge_fer_{node}"], "name": f"edge-fer {device}", "manufacturer": "edge-fer",
           "model": "edge-fer", "sw_version": __version__}
    common = {"availability_topic": f"{base}/availability", "state_topic": f"{base}/state", "device": dev}
    return {
        f"{discovery_prefix}/sensor/{node}/emotion/config": {
            **common, "name": "Dominant emotion", "unique_id": f"edge_fer_{node}_emotion",
            "value_template": "{{ value_json.dominant_emotion | default('none', true) }}", "icon": "mdi:emoticon-outline",
            "json_attributes_topic": f"{base}/state"},
        f"{discovery_prefix}/sensor/{node}/faces/config": {
            **common, "name": "Faces", "unique_id": f"edge_fer_{node}_faces", "value_template": "{{ value_json.faces }}",
            "state_class": "measurement", "icon": "mdi:account-group"},
    }
