"""Following faces across frames: track ids by box overlap, smoothed scores, steady labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edge_fer.config import TrackingConfig
from edge_fer.types import (
    SAME_FACE_OVERLAP,
    UNSURE,
    Box,
    EventType,
    Face,
    Landmarks,
    TrackEvent,
    iou,
    overlap_of_smaller,
)

NOT_JUDGED = -1  # the label of a track none of whose faces could be judged yet


@dataclass
class Track:
    """One face followed over time; its label is NOT_JUDGED until a face of it is judged, then kept through faces
    that are not."""

    id: int
    box: Box
    scores: np.ndarray
    label: int
    started: float
    last_seen: float
    candidate: int = -1
    candidate_since: float = 0.0
    seen_frames: int = 1
    landmarks: Landmarks | None = None
    detector_score: float | None = None

    def confidence(self) -> float:
        """Smoothed probability of the current label (of the top score while not judged)."""
        return float(self.scores.max() if self.label == NOT_JUDGED else self.scores[self.label])


class Tracked(NamedTuple):
    """What one update did: the events it caused, and the track id of each face given, in the faces' order."""

    events: list[TrackEvent]
    ids: list[int]


class Tracker:
    """Match each frame's faces to tracks and report start, change and end events."""

    def __init__(self, config: TrackingConfig, labels: tuple[str, ...]) -> None:
        self.config = config
        self.labels = labels
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def emotion(self, t: Track) -> str:
        """The track's steady emotion, UNSURE while none of its faces could be judged."""
        return UNSURE if t.label == NOT_JUDGED else self.labels[t.label]

    def _event(self, kind: EventType, t: Track) -> TrackEvent:
        # A track's duration is the time its face was seen: an end does not count the grace after it.
        return TrackEvent(kind, t.id, self.emotion(t), t.confidence(),
                          {k: float(v) for k, v in zip(self.labels, t.scores)}, t.box, t.last_seen - t.started,
                          t.landmarks, t.detector_score)

    def _match(self, faces: list[Face]) -> dict[int, int]:
        """Face index -> track id, greedily by highest overlap above the threshold.

        A face left over that lies mostly inside or around a left-over track's box is that track's face too
        (a detector's box can jump in size between frames): one face never starts a second track."""
        matched: dict[int, int] = {}
        used: set[int] = set()
        for measure, floor in ((iou, self.config.iou_threshold), (overlap_of_smaller, SAME_FACE_OVERLAP)):
            pairs = sorted(((measure(f.box, t.box), i, tid) for i, f in enumerate(faces)
                            for tid, t in self.tracks.items()), reverse=True)
            for overlap, i, tid in pairs:
                if overlap < floor:
                    break
                if i not in matched and tid not in used:
                    matched[i] = tid
                    used.add(tid)
        return matched

    def _smooth(self, t: Track, scores: np.ndarray, now: float) -> TrackEvent | None:
        cfg = self.config
        dt = max(0.0, now - t.last_seen)
        alpha = 1.0 if cfg.smoothing_seconds <= 0 else 1.0 - math.exp(-dt / cfg.smoothing_seconds)
        t.scores = (1 - alpha) * t.scores + alpha * scores
        t.last_seen = now
        t.seen_frames += 1
        top = int(np.argmax(t.scores))
        if top == t.label:
            t.candidate = -1
            return None
        if top != t.candidate:
            t.candidate, t.candidate_since = top, now
        lead = t.scores[top] - t.scores[t.label]
        # A new emotion wins when it leads by the margin, or has led for long enough; either way it must be
        # believed: near-even scores (an unsure face) would otherwise flip the label back and forth.
        if t.scores[top] < cfg.switch_min_confidence:
            return None
        if lead >= cfg.switch_margin or now - t.candidate_since >= cfg.switch_seconds:
            t.label, t.candidate = top, -1
            return self._event(EventType.CHANGE, t)
        return None

    def update(self, faces: list[Face], now: float) -> Tracked:
        """Advance to a new frame's faces at time `now` (seconds)."""
        events: list[TrackEvent] = []
        ids: list[int] = []
        matched = self._match(faces)
        for i, face in enumerate(faces):
            scores = np.array([face.scores[k] for k in self.labels], np.float64)
            judged = face.unsure is None
            if i in matched:
                t = self.tracks[matched[i]]
                t.box, t.landmarks, t.detector_score = face.box, face.landmarks, face.detector_score
                if not judged:
                    # A face that cannot be judged says nothing about the emotion: the track keeps what it has.
                    t.last_seen = now
                    t.seen_frames += 1
                elif t.label == NOT_JUDGED:
                    t.scores, t.label, t.last_seen = scores, int(np.argmax(scores)), now
                    t.seen_frames += 1
                    events.append(self._event(EventType.CHANGE, t))
                else:
                    change = self._smooth(t, scores, now)
                    if change:
                        events.append(change)
            else:
                t = Track(self._next_id, face.box, scores, int(np.argmax(scores)) if judged else NOT_JUDGED, now, now,
                          landmarks=face.landmarks, detector_score=face.detector_score)
                self._next_id += 1
                self.tracks[t.id] = t
                events.append(self._event(EventType.START, t))
            ids.append(t.id)
        for tid in [tid for tid, t in self.tracks.items() if now - t.last_seen > self.config.max_missing_seconds]:
            events.append(self._event(EventType.END, self.tracks.pop(tid)))
        return Tracked(events, ids)

    def close_all(self, now: float) -> list[TrackEvent]:
        """End every open track (at shutdown)."""
        events = [self._event(EventType.END, t) for t in self.tracks.values()]
        self.tracks.clear()
        return events
