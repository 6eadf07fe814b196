"""Building what edge-fer publishes: events and state (their fields are in contract.py)."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import PurePath

from edge_fer.messaging.contract import FER_LABELS, Event, State, Track, utc_iso
from edge_fer.messaging.homeassistant import discovery_config, discovery_topic, ha_id, legacy_discovery_topics
from edge_fer.types import NO_FACE, EventType, Face, TrackEvent, TrackState

# Home Assistant's discovery is homeassistant.py's; its names are still imported from here too.
__all__ = ["NO_FACE", "EventFactory", "discovery_config", "discovery_topic", "ha_id", "legacy_discovery_topics",
           "utc_iso"]


class EventFactory:
    """Numbers and stamps the events and states of one device run: `run_id` is new for every factory, `seq`
    counts from 1, and each document carries the model's `labels`."""

    def __init__(self, device: str, labels: tuple[str, ...] = FER_LABELS) -> None:
        self.device = device
        self.labels = labels
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)

    def event(self, e: TrackEvent, frame_size: tuple[int, int], captured: float | None = None) -> Event:
        """One start/change/end event; `captured` is the wall time of the frame that caused it."""
        kind = EventType(e.type)
        return Event(type=kind, device=self.device, track_id=e.track_id, emotion=e.emotion,
                     confidence=e.confidence, scores=dict(e.scores), box=tuple(e.box), landmarks=e.landmarks,
                     detector_score=e.detector_score, frame_size=tuple(frame_size), ts=time.time(),
                     run_id=self.run_id, seq=next(self._seq), frame_ts=captured,
                     duration=e.duration if kind is EventType.END else None, labels=self.labels)

    def image_event(self, image: str, face: Face, index: int, frame_size: tuple[int, int]) -> Event:
        """A one-shot result (edge-fer --image --publish) in the same schema, type 'image'."""
        # The file's name alone: the folders above it can say whose photo it is, and every subscriber gets it.
        return Event(type=EventType.IMAGE, device=self.device, image=PurePath(image).name, face_index=index,
                     emotion=face.emotion, confidence=face.confidence, scores=dict(face.scores), unsure=face.unsure,
                     box=tuple(face.box), landmarks=face.landmarks, detector_score=face.detector_score,
                     frame_size=tuple(frame_size), ts=time.time(), run_id=self.run_id, seq=next(self._seq),
                     labels=self.labels)

    def state(self, *, camera: str, tracks: list[TrackState], fps: float, frames: int, dropped_frames: int,
              dropped_events: int, uptime: float) -> State:
        """The retained state now; the dominant face is the largest, and with none in view it is null."""
        dominant = max(tracks, key=lambda t: t.box[2] * t.box[3]) if tracks else None
        return State(device=self.device, run_id=self.run_id, camera=str(camera), faces=len(tracks),
                     dominant_emotion=dominant.emotion if dominant else None,
                     dominant_confidence=dominant.confidence if dominant else None,
                     tracks=tuple(Track(track_id=t.track_id, emotion=t.emotion, confidence=t.confidence,
                                        box=tuple(t.box)) for t in tracks),
                     fps=fps, frames=frames, dropped_frames=dropped_frames, dropped_events=dropped_events,
                     uptime=uptime, ts=time.time(), labels=self.labels)
