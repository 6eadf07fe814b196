"""Face crops framed the way FER-2013 frames its faces: eyes level, from landmarks or from a box."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.errors import ModelError
from edge_fer.models_path import shipped_model
from edge_fer.types import Detection

FRAMING_FILE = "face_framing.json"


@dataclass(frozen=True)
class Framing:
    """Where FER-2013's 48x48 frame sits relative to a detection (measured by training/calibrate_framing.py)."""

    landmarks: np.ndarray  # (5, 2): YuNet's five points in the 48x48 frame, eyes level
    haar_frame: tuple[float, float, float, float]  # the 48x48 frame in units of a Haar box: x, y, w, h

    @classmethod
    def load(cls, path: Path | None = None) -> Framing:
        """The shipped calibration (models/face_framing.json)."""
        path = path or shipped_model(FRAMING_FILE)
        try:
            doc = json.loads(path.read_text())
            points = np.asarray(doc["yunet"]["landmarks"], np.float64).reshape(5, 2)
            frame = tuple(float(v) for v in doc["haar"]["frame_in_box"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: unreadable face framing calibration ({e})") from None
        if len(frame) != 4:
            raise ModelError(f"{path}: haar.frame_in_box must be four numbers")
        return cls(points, frame)

    def transform(self, d: Detection, size: int) -> np.ndarray:
        """The 2x3 affine map from frame pixels to a size x size crop framed like FER-2013."""
        k = size / 48.0
        if d.landmarks is not None:
            src = np.asarray(d.landmarks, np.float64)
            m = _similarity(src, self.landmarks * k)
            if m is not None:
                return m
        x, y, w, h = d.box
        fx, fy, fw, fh = self.haar_frame
        # The box maps to the frame its calibration says, scaled to the crop; no rotation is known.
        left, top, side_w, side_h = x + fx * w, y + fy * h, fw * w, fh * h
        return np.array([[size / side_w, 0, -left * size / side_w], [0, size / side_h, -top * size / side_h]])

    def crop(self, image: np.ndarray, d: Detection, size: int = 48) -> np.ndarray:
        """The face as a size x size crop; large faces are warped at a finer size first, then averaged down."""
        m = self.transform(d, size)
        # Source pixels per crop pixel; warping straight down by a large factor would alias.
        shrink = float(np.sqrt(abs(np.linalg.det(m[:, :2])))) ** -1
        fine = int(min(4, max(1, round(shrink))))
        # Warp only the region the crop reads from: OpenCV refuses sources 32767 px or more on a side.
        region, m = _source_region(image, m, size)
        out = cv2.warpAffine(region, m * np.array([[fine], [fine]]), (size * fine, size * fine),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out if fine == 1 else cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def _source_region(image: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of `image` that a size x size crop through `m` reads, and `m` moved to that part's corner."""
    inverse = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    h, w = image.shape[:2]
    # Two pixels of margin for the bilinear reads; at the picture's own edge, replication is the same as before.
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 3, y0 + 1, h))
    moved = m.copy()
    moved[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return image[y0:y1, x0:x1], moved


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Rotation that levels src's eyes, then the least-squares scale and shift taking src onto dst."""
    a = -np.radians(eye_angle(src))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    turned = src @ rot.T
    r, d = turned - turned.mean(0), dst - dst.mean(0)
    spread = (r ** 2).sum()
    if spread < 1e-6:
        return None
    scale = (r * d).sum() / spread
    shift = dst.mean(0) - scale * turned.mean(0)
    return np.hstack([scale * rot, shift[:, None]])


def eye_angle(points: np.ndarray) -> float:
    """The eye line's angle in degrees (0 = level), from five landmarks."""
    (rx, ry), (lx, ly) = points[0], points[1]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))
