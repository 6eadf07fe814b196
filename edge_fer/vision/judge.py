"""Which faces the classifier should not label: too small, too dark or flat, blurred, turned away, or unsure.

Such a face is still found, tracked and scored; its emotion is reported as `types.UNSURE` with the reason,
so that a confident wrong label never fires an automation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_fer.config import UnsureConfig
from edge_fer.types import Detection, TextEnum

# Where the nose tip sits between the eye line and the mouth line of a frontal face (models/face_framing.json:
# eyes at y 18.37, nose 28.23, mouth corners 36.06 in the 48x48 frame).
FRONTAL_NOSE_HEIGHT = (28.23 - 18.37) / (36.06 - 18.37)


class Reason(TextEnum):
    """Why a face is not labelled (the first rule it fails, in this order)."""

    SMALL = "small"
    FAINT = "faint"  # the detector itself barely believes it is a face
    DARK = "dark"
    FLAT = "flat"
    BLURRED = "blurred"
    TURNED = "turned"
    UNCERTAIN = "uncertain"  # the calibrated top score is too low


@dataclass(frozen=True)
class FaceQuality:
    """What the rules look at: the face's size, its crop's light and sharpness, its pose, and the scores."""

    face_px: int
    detector_score: float | None
    brightness: float
    contrast: float
    sharpness: float
    yaw_deg: float | None
    pitch: float | None  # the nose's height between eyes and mouth, minus a frontal face's (0 = level)
    confidence: float


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """Yaw in degrees (0 = frontal) and pitch (nose height off its frontal place) from YuNet's five points."""
    eye_r, eye_l, nose, mouth_r, mouth_l = (np.asarray(p, np.float64) for p in landmarks)
    eyes, mouth = (eye_r + eye_l) / 2, (mouth_r + mouth_l) / 2
    across = eye_l - eye_r
    half = float(np.hypot(*across)) / 2
    down = mouth - eyes
    height = float(np.hypot(*down))
    if half < 1e-6 or height < 1e-6:
        return 90.0, 1.0
    # The nose tip leaves the face's midline as the head turns: its offset along the eye line, over half the
    # eye distance, is the sine of the yaw for a nose as long as that half (close to real proportions).
    side = float(np.dot(nose - eyes, across / (2 * half))) / half
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, side))))
    pitch = float(np.dot(nose - eyes, down / height)) / height - FRONTAL_NOSE_HEIGHT
    return abs(yaw), pitch


def quality(d: Detection, crop: np.ndarray, confidence: float) -> FaceQuality:
    """The measures of one face from its detection and its gray classifier crop."""
    small = crop if crop.shape[0] <= 48 else cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(small, cv2.CV_32F).var())
    yaw, pitch = pose(np.asarray(d.landmarks)) if d.landmarks is not None else (None, None)
    return FaceQuality(int(min(d.box[2], d.box[3])), d.score, float(small.mean()), float(small.std()), sharpness,
                       yaw, pitch, confidence)


def judge(q: FaceQuality, cfg: UnsureConfig) -> Reason | None:
    """The reason this face is not to be labelled, or None where its label stands."""
    if q.face_px < cfg.min_face_px:
        return Reason.SMALL
    if q.detector_score is not None and q.detector_score < cfg.min_detector_score:
        return Reason.FAINT
    if q.brightness < cfg.min_brightness:
        return Reason.DARK
    if q.contrast < cfg.min_contrast:
        return Reason.FLAT
    if q.sharpness < cfg.min_sharpness:
        return Reason.BLURRED
    if q.yaw_deg is not None and q.pitch is not None and (q.yaw_deg > cfg.max_yaw_deg or abs(q.pitch) > cfg.max_pitch):
        return Reason.TURNED
    if q.confidence < cfg.min_confidence:
        return Reason.UNCERTAIN
    return None
