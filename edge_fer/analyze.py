"""Detect and classify the faces of one frame: the pipeline the CLI, daemon and window share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_fer.classifier import EmotionClassifier
from edge_fer.config import Config, photo_detector
from edge_fer.detector import Box, FaceDetector
from edge_fer.images import read_image


@dataclass(frozen=True)
class Face:
    """One face: its box (x, y, w, h), top emotion, that emotion's probability, and all scores."""

    box: Box
    emotion: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"box": [int(v) for v in self.box], "emotion": self.emotion,
                "confidence": round(self.confidence, 4),
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


class Analyzer:
    """A detector and a classifier used together on whole frames."""

    def __init__(self, detector: FaceDetector | None = None, classifier: EmotionClassifier | None = None,
                 max_faces: int = 8) -> None:
        self.detector = detector or FaceDetector()
        self.classifier = classifier or EmotionClassifier()
        self.max_faces = max_faces

    @classmethod
    def from_config(cls, cfg: Config, photos: bool = False) -> "Analyzer":
        """Build both parts from the configuration (with the photo detector settings for one-shot images)."""
        return cls(FaceDetector(photo_detector(cfg) if photos else cfg.detector),
                   EmotionClassifier(cfg.classifier.model or None, threads=cfg.classifier.threads),
                   cfg.classifier.max_faces)

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.classifier.close()

    def classify(self, gray: np.ndarray, boxes: list[Box]) -> list[Face]:
        """Classify the given boxes of a gray frame in one interpreter call."""
        boxes = boxes[: self.max_faces]
        crops = [gray[y:y + h, x:x + w] for x, y, w, h in boxes]
        probs = self.classifier.predict(crops)
        labels = self.classifier.labels
        faces = []
        for box, p in zip(boxes, probs):
            top = int(np.argmax(p))
            faces.append(Face(box, labels[top], float(p[top]), {k: float(v) for k, v in zip(labels, p)}))
        return faces

    def analyze(self, frame: np.ndarray) -> list[Face]:
        """Faces of a BGR (or gray) frame, largest first."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return self.classify(gray, self.detector.detect_gray(gray))


def analyze_image(image: str | Path | np.ndarray, analyzer: Analyzer | None = None,
                  max_pixels: int = 50_000_000) -> list[Face]:
    """Faces of an image file or BGR array, using the shipped model unless an analyzer is given."""
    frame = image if isinstance(image, np.ndarray) else read_image(image, max_pixels)
    return (analyzer or _default_analyzer()).analyze(frame)


_DEFAULT: Analyzer | None = None


def _default_analyzer() -> Analyzer:
    # Loading the model once per process keeps repeated analyze_image calls fast.
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Analyzer.from_config(Config(), photos=True)
    return _DEFAULT
