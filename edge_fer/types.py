"""Plain data shared by every part: frames, boxes, detections, faces, track events and results (no vision
imports here: the event, MQTT and recorder modules load without OpenCV)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in the frame's own pixels
Point = tuple[float, float]
# YuNet's five points, in this order: right eye, left eye, nose tip, right and left mouth corner
# ("right" is the person's right, on the left of the picture).
Landmarks = tuple[Point, Point, Point, Point, Point]
# The emotion of a face the classifier should not label (edge_fer/vision/judge.py says which); its scores stay.
UNSURE = "unsure"
# Home Assistant's emotion when no face is in view: never a model's label.
NO_FACE = "no_face"
# A model's labels travel in every event and state: this many names at most, each this long at most.
MAX_LABELS = 100
MAX_LABEL_LENGTH = 200
# Two boxes covering this much of the smaller one are one face (Haar groups overlapping windows loosely).
SAME_FACE_OVERLAP = 0.5
# Decimal places of what is published and printed: scores, confidences and detector scores to 1e-4 (finer than any
# decision uses), landmarks to a tenth of a pixel. Here, so that --json, events and state round alike.
SCORE_PLACES = 4
POINT_PLACES = 1


def label_problem(labels: object) -> str | None:
    """Why `labels` cannot be a model's labels (what the classifier's sidecar and every document obey), or None."""
    if not isinstance(labels, (list, tuple)) or not 1 <= len(labels) <= MAX_LABELS:
        return f"is not a list of 1 to {MAX_LABELS} names"
    for label in labels:
        if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL_LENGTH or "\x00" in label:
            return f"holds {label!r:.60}, not a name of 1 to {MAX_LABEL_LENGTH} characters"
        try:
            label.encode()
        except UnicodeEncodeError:
            return f"holds {label!r:.60}, not valid Unicode"
    if len(set(labels)) != len(labels) or UNSURE in labels or NO_FACE in labels:
        return f"are not distinct names other than {UNSURE!r} and {NO_FACE!r}"
    return None


class TextEnum(str, enum.Enum):
    """An enum whose members are their text: in JSON, logs and f-strings alike (enum.StrEnum is Python 3.11's)."""

    def __str__(self) -> str:
        return str(self.value)


class EventType(TextEnum):
    """What an event says: a track started, changed its emotion or ended, or a photo's face (--image --publish)."""

    START = "start"
    CHANGE = "change"
    END = "end"
    IMAGE = "image"


@dataclass(frozen=True)
class Detection:
    """A face the detector found: its box, five landmarks where the backend gives them, and its score."""

    box: Box
    landmarks: Landmarks | None = None
    score: float | None = None


@dataclass(frozen=True)
class Face:
    """One classified face: its box, emotion (UNSURE where it is not judged) and the top score, all scores, its
    detection, and why it is not judged (None where it is)."""

    box: Box
    emotion: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    landmarks: Landmarks | None = None
    detector_score: float | None = None
    unsure: str | None = None

    @property
    def caption(self) -> str:
        """How a view names the face: its emotion and confidence, or why it is not judged."""
        return f"{UNSURE} ({self.unsure})" if self.unsure else f"{self.emotion} {self.confidence:.0%}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, rounded as events are."""
        return {"box": [int(v) for v in self.box], "emotion": self.emotion,
                "confidence": round(self.confidence, SCORE_PLACES), "scores": rounded_scores(self.scores),
                "unsure": self.unsure, "landmarks": landmarks_list(self.landmarks),
                "detector_score": None if self.detector_score is None else round(self.detector_score, SCORE_PLACES)}


@dataclass(frozen=True)
class Frame:
    """One captured frame with its sequence number and capture time (monotonic and wall clock)."""

    image: np.ndarray
    seq: int
    t: float
    wall: float


@dataclass(frozen=True)
class TrackEvent:
    """A track started, changed its emotion, or ended."""

    type: EventType
    track_id: int
    emotion: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    box: Box = (0, 0, 0, 0)
    duration: float = 0.0
    landmarks: Landmarks | None = None
    detector_score: float | None = None


@dataclass(frozen=True)
class TrackState:
    """An open track as the state message shows it."""

    track_id: int
    emotion: str
    confidence: float
    box: Box


@dataclass(frozen=True)
class Result:
    """What the pipeline made of one frame: its faces and the track id of each, in the same order."""

    frame: Frame
    faces: list[Face]
    track_ids: list[int]

    @property
    def frame_size(self) -> tuple[int, int]:
        """Width and height of the frame."""
        h, w = self.frame.image.shape[:2]
        return w, h


@dataclass(frozen=True)
class Live:
    """The daemon's newest result with its running figures: what the window shows."""

    result: Result
    fps: float
    dropped: int
    camera: str


def landmarks_list(points: Landmarks | None) -> list[list[float]] | None:
    """Landmarks as JSON: five [x, y] pairs rounded to a tenth of a pixel, or null."""
    return None if points is None else [[round(float(x), POINT_PLACES), round(float(y), POINT_PLACES)]
                                        for x, y in points]


def rounded_scores(scores: dict[str, float]) -> dict[str, float]:
    """Scores as JSON, in their order, each to SCORE_PLACES."""
    return {k: round(float(v), SCORE_PLACES) for k, v in scores.items()}


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    small = min(a[2] * a[3], b[2] * b[3])
    return _intersection(a, b) / small if small > 0 else 0.0


def _intersection(a: Box, b: Box) -> int:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy
