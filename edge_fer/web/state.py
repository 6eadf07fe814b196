"""The state document of /api/state and the event feed: faces in view, camera, MQTT, figures, recent events."""

from __future__ import annotations

import time
from typing import Any

from edge_fer import __version__
from edge_fer.messaging.connection import ConnectionState
from edge_fer.vision.annotate import COLORS
from edge_fer.web.feed import Feed

# Faces of a frame older than this are not "in view": the camera stopped delivering.
STALE_SECONDS = 2.0


def hex_color(bgr: tuple[int, int, int]) -> str:
    """A CSS colour from a BGR tuple."""
    return f"#{bgr[2]:02x}{bgr[1]:02x}{bgr[0]:02x}"


def state_doc(feed: Feed, events: bool = True, recent: int = 20) -> dict[str, Any]:
    """The state now; `events` adds the last `recent` events and the page's colours (the first load)."""
    live = feed.latest
    counts = feed.counts()
    now = time.monotonic()
    faces: list[dict[str, Any]] = []
    size = [0, 0]
    fps = 0.0
    if live is not None:
        result = live.result
        size = list(result.frame_size)
        if now - result.frame.t <= STALE_SECONDS:
            fps = live.fps
            faces = [{"track_id": t, **f.to_dict()} for f, t in zip(result.faces, result.track_ids)]
    doc: dict[str, Any] = {
        "device": feed.device, "run_id": feed.run_id, "version": __version__, "camera": feed.camera,
        "fps": round(fps, 2), "frames": counts.frames, "frame_size": size, "faces": faces,
        "mqtt": {"enabled": counts.mqtt_state is not ConnectionState.DISABLED, "state": str(counts.mqtt_state),
                 "connected": counts.mqtt_state is ConnectionState.CONNECTED, "reconnects": counts.mqtt_reconnects},
        "dropped_frames": counts.dropped_frames, "dropped_events": counts.dropped_events,
        "uptime": round(now - feed.started, 1), "event_no": feed.event_no,
    }
    if events:
        doc["events"] = [doc for _, doc in feed.events_after(feed.event_no - recent)]
        doc["colors"] = {name: hex_color(bgr) for name, bgr in COLORS.items()}
    return doc
