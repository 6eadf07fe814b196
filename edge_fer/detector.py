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
        try:
            self._cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # a file that is not a cascade makes OpenCV raise, not return empty
            raise ModelError(f"{path}: the Haar cascade could not be loaded") from None
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
        side = max(24, int(cfg.min_face_fraction * min(h, w) * scale))
        boxes = self._cascade_boxes(gray, scale, (side, side), None)
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        return boxes

    def refine(self, gray: np.ndarray, box: Box) -> Box | None:
        """The face near a known box, searched only around it (a cheap update between full detections)."""
        x, y, w, h = box
        h_img, w_img = gray.shape[:2]
        # Search twice the box's size, at a scale where the face is about 48 px: a few hundred windows.
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        x1, y1 = min(w_img, x + w + w // 2), min(h_img, y + h + h // 2)
        scale = min(1.0, 48 / max(w, 1))
        found = self._cascade_boxes(gray[y0:y1, x0:x1], scale, (int(w * scale * 0.7), int(h * scale * 0.7)),
                                    (int(w * scale * 1.4) + 1, int(h * scale * 1.4) + 1))
        if not found:
            return None
        cx, cy = x + w / 2 - x0, y + h / 2 - y0
        bx, by, bw, bh = min(found, key=lambda b: (b[0] + b[2] / 2 - cx) ** 2 + (b[1] + b[3] / 2 - cy) ** 2)
        return (bx + x0, by + y0, bw, bh)

    def _cascade_boxes(self, gray: np.ndarray, scale: float, min_size: tuple[int, int],
                       max_size: tuple[int, int] | None) -> list[Box]:
        """Cascade boxes on `gray` resized by `scale`, in `gray`'s own pixels, above the level-weight floor."""
        cfg = self.config
        h, w = gray.shape[:2]
        small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else gray
        small = cv2.equalizeHist(small)
        rects, _levels, weights = self._cascade.detectMultiScale3(
            small, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=min_size,
            maxSize=max_size or (0, 0), outputRejectLevels=True)
        boxes: list[Box] = []
        for (x, y, bw, bh), weight in zip(rects, np.asarray(weights).reshape(-1)):
            # The last stage's weight separates real faces from textures that barely pass.
            if weight < cfg.min_level_weight:
                continue
            boxes.append((round(x / scale), round(y / scale), round(bw / scale), round(bh / scale)))
        return boxes
