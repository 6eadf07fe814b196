"""Face detection with OpenCV's packaged Haar cascade, on a downscaled gray frame."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge_fer.config import DetectorConfig
from edge_fer.errors import ModelError

log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
Box = tuple[int, int, int, int]


class FaceDetector:
    """Find frontal faces; boxes (x, y, w, h) in the frame's own pixels, largest first."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), cascade: str | Path | None = None) -> None:
        self.config = config
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"{path}: the Haar cascade could not be loaded")

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in a BGR or gray frame."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return self.detect_gray(gray)

    def detect_gray(self, gray: np.ndarray) -> list[Box]:
        """Faces in a gray frame."""
        cfg = self.config
        h, w = gray.shape[:2]
        scale = min(1.0, cfg.detect_width / w)
        small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else gray
        small = cv2.equalizeHist(small)
        side = max(24, int(cfg.min_face_fraction * min(small.shape[:2])))
        rects, _levels, weights = self._cascade.detectMultiScale3(
            small, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
            minSize=(side, side), outputRejectLevels=True)
        boxes: list[Box] = []
        for (x, y, bw, bh), weight in zip(rects, np.asarray(weights).reshape(-1)):
            # The last stage's weight separates real faces from textures that barely pass.
            if weight < cfg.min_level_weight:
                continue
            boxes.append((round(x / scale), round(y / scale), round(bw / scale), round(bh / scale)))
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        return boxes
