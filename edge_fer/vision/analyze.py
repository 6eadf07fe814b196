"""Detect and classify the faces of one frame: the pipeline the CLI, daemon and window share."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_fer.config import Config, UnsureConfig
from edge_fer.types import UNSURE, Detection, Face
from edge_fer.vision.align import Framing
from edge_fer.vision.classifier import EmotionClassifier
from edge_fer.vision.detector import FaceDetector, make_detector
from edge_fer.vision.images import read_image
from edge_fer.vision.judge import judge, quality


class Analyzer:
    """A detector and a classifier used together on whole frames."""

    def __init__(self, detector: FaceDetector | None = None, classifier: EmotionClassifier | None = None,
                 max_faces: int = 8, framing: Framing | None = None, unsure: UnsureConfig | None = None) -> None:
        self.detector = detector or make_detector(Config())
        self.classifier = classifier or EmotionClassifier()
        self.max_faces = max_faces
        self.framing = framing or Framing.load()
        self.unsure = unsure or UnsureConfig()

    @classmethod
    def from_config(cls, cfg: Config, photos: bool = False) -> Analyzer:
        """Build both parts from the configuration (with the photo detector settings for one-shot images)."""
        return cls(make_detector(cfg, photos),
                   EmotionClassifier(cfg.classifier.model or None, threads=cfg.classifier.threads),
                   cfg.images.max_faces if photos else cfg.classifier.max_faces, unsure=cfg.unsure)

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.classifier.close()

    def classify(self, gray: np.ndarray, found: list[Detection]) -> list[Face]:
        """Classify the detected faces of a gray frame, each aligned and framed, in one interpreter call."""
        found = found[: self.max_faces]
        side = self.classifier.input_size[1]
        crops = [self.framing.crop(gray, d, side) for d in found]
        probs = self.classifier.predict(crops)
        labels = self.classifier.labels
        faces = []
        for d, crop, p in zip(found, crops, probs):
            top = int(np.argmax(p))
            reason = judge(quality(d, crop, float(p[top])), self.unsure) if self.unsure.enabled else None
            faces.append(Face(d.box, UNSURE if reason else labels[top], float(p[top]),
                              {k: float(v) for k, v in zip(labels, p)}, d.landmarks, d.score,
                              reason.value if reason else None))
        return faces

    def analyze(self, frame: np.ndarray) -> list[Face]:
        """Faces of a BGR (or gray) frame, largest first."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return self.classify(gray, self.detector.detect(frame))


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
