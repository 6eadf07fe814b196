"""Face detection: OpenCV's YuNet CNN (the default) or its Haar cascade, behind one interface."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_fer.config import Config, HaarConfig, YunetConfig
from edge_fer.errors import ModelError
from edge_fer.models_path import shipped_model
from edge_fer.types import SAME_FACE_OVERLAP, Box, Detection, Landmarks, overlap_of_smaller

log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
YUNET_MODEL = "face_detection_yunet_2023mar.onnx"
# OpenCV Zoo's file as shipped in models/ (see models/YUNET.md); checked at every load.
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


class FaceDetector(Protocol):
    """What the pipeline needs of a detector backend."""

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR or gray frame, in its own pixels, largest first."""

    def refine(self, frame: np.ndarray, last: Detection) -> Detection | None:
        """The face near a known one, searched only around it (cheap, between full detections)."""

    def refine_pays(self, faces: int, frame_w: int, frame_h: int) -> bool:
        """Whether searching near `faces` known faces costs less than a full detection."""


def make_detector(cfg: Config, photos: bool = False) -> FaceDetector:
    """The configured backend, with its camera or its photo settings."""
    if cfg.detector.backend == "haar":
        return HaarDetector(cfg.haar, photos=photos)
    return YuNetDetector(cfg.yunet, photos=photos)


def one_per_face(found: list[Detection]) -> list[Detection]:
    """Drop detections that overlap a larger one mostly (one face found twice), largest first."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True):
        if all(overlap_of_smaller(d.box, k.box) < SAME_FACE_OVERLAP for k in kept):
            kept.append(d)
    return kept


@contextlib.contextmanager
def _memory_errors() -> Iterator[None]:
    """OpenCV's out-of-memory error as Python's MemoryError, which every caller reports in one line."""
    try:
        yield
    except cv2.error as e:
        # cv::Exception carries its code; a C++ std::bad_alloc reaches Python as cv2.error with only its text.
        if getattr(e, "code", None) == cv2.Error.StsNoMem or "bad_alloc" in str(e):
            raise MemoryError("OpenCV could not allocate memory for face detection") from None
        raise


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


def _resized(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _nearest(found: list[Detection], box: Box) -> Detection | None:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return min(found, key=lambda d: (d.box[0] + d.box[2] / 2 - cx) ** 2 + (d.box[1] + d.box[3] / 2 - cy) ** 2,
               default=None)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class YuNetDetector:
    """OpenCV's YuNet CNN (cv2.FaceDetectorYN): boxes, five landmarks and a score per face."""

    REFINE_SIDE = 160  # the refine search runs on a square this size, where the face is about 80 px

    def __init__(self, config: YunetConfig = YunetConfig(), photos: bool = False) -> None:
        self.config = config
        self.photos = photos
        self.path = Path(config.model).expanduser() if config.model else shipped_model(YUNET_MODEL)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such face detector model")
        if not config.model and sha256_of(self.path) != YUNET_SHA256:
            raise ModelError(f"{self.path}: checksum mismatch (corrupt or replaced face detector model)")
        self._net = self._create((320, 240))
        self._size = (320, 240)
        side = self.REFINE_SIDE
        self._refine_net = self._create((side, side))

    def _create(self, size: tuple[int, int]) -> cv2.FaceDetectorYN:
        cfg = self.config
        try:
            return cv2.FaceDetectorYN.create(str(self.path), "", size, cfg.score_threshold, cfg.nms_threshold, 5000)
        except cv2.error:
            raise ModelError(f"{self.path}: not a usable YuNet ONNX model") from None

    def _run(self, net: cv2.FaceDetectorYN, img: np.ndarray, scale: float, offset: tuple[int, int] = (0, 0),
             ) -> list[Detection]:
        """Detections on `img` (already resized by `scale`), mapped back to the frame (plus `offset`)."""
        with _memory_errors():
            _, rows = net.detect(img)
        found = []
        for r in rows if rows is not None else ():
            if not np.isfinite(r[:15]).all():  # YuNet can emit inf for degenerate input (a blank frame)
                continue
            x, y, w, h = (float(v) / scale for v in r[:4])
            points = r[4:14].reshape(5, 2) / scale + offset
            landmarks: Landmarks = tuple((float(px), float(py)) for px, py in points)  # type: ignore[assignment]
            box = (round(x + offset[0]), round(y + offset[1]), round(w), round(h))
            found.append(Detection(box, landmarks, float(r[14])))
        return found

    def _pass(self, small: np.ndarray, scale: float) -> list[Detection]:
        """Detections on `small`, a copy of the frame resized by `scale`."""
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        return self._run(self._net, small, scale)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR or gray frame, largest first, boxes clipped to the frame."""
        bgr = _bgr(frame)
        h, w = bgr.shape[:2]
        cfg = self.config
        if not self.photos:
            scale = min(1.0, cfg.detect_width / w)
            found = self._pass(_resized(bgr, scale), scale)
        else:
            # Large faces are found on a small copy; small faces in big photos need a second, finer pass.
            # A thumbnail is enlarged first: YuNet misses faces that fill a picture of a few dozen pixels (and
            # on such an input, whether it finds them changes from one process to the next).
            coarse = max(min(1.0, cfg.photo_size / max(h, w)), cfg.photo_min_size / max(h, w))
            fine = min(1.0, cfg.photo_small_faces_size / max(h, w))
            if fine > coarse * 1.5:
                # The coarse copy is made from the fine one: one pass over the full-size photo, not two.
                fine_img = _resized(bgr, fine)
                found = self._pass(_resized(fine_img, coarse / fine), coarse)
                # Only faces too small for the coarse pass are taken from the fine one (big ones split there).
                small = [d for d in self._pass(fine_img, fine) if d.box[2] * coarse < cfg.small_face_px]
                found += [d for d in small if all(overlap_of_smaller(d.box, k.box) < 0.3 for k in found)]
            else:
                found = self._pass(_resized(bgr, coarse), coarse)
        return one_per_face([_clipped(d, w, h) for d in found if d.box[2] > 0 and d.box[3] > 0])

    def refine_pays(self, faces: int, frame_w: int, frame_h: int) -> bool:
        """The network's work grows with its input's pixels: one small square per face against the whole frame."""
        scale = min(1.0, self.config.detect_width / frame_w)
        return faces * self.REFINE_SIDE ** 2 < frame_w * frame_h * scale * scale

    def refine(self, frame: np.ndarray, last: Detection) -> Detection | None:
        """The face near `last`, searched in a square twice its size around it."""
        x, y, w, h = last.box
        side = 2 * max(w, h)
        x0, y0 = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
        bgr = _bgr(frame)
        # Out-of-frame parts of the square are padded, so the face keeps its place and size in the search.
        patch = _window(bgr, x0, y0, side)
        scale = self.REFINE_SIDE / side
        found = self._run(self._refine_net, cv2.resize(patch, (self.REFINE_SIDE, self.REFINE_SIDE),
                                                       interpolation=cv2.INTER_AREA), scale, (x0, y0))
        best = _nearest(found, last.box)
        return _clipped(best, bgr.shape[1], bgr.shape[0]) if best is not None else None


def _window(img: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The square img[y0:y0+side, x0:x0+side], padded with the edge pixels where it leaves the image."""
    h, w = img.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - h), max(0, x0 + side - w)
    inside = img[max(0, y0):min(h, y0 + side), max(0, x0):min(w, x0 + side)]
    if not (top or left or bottom or right):
        return inside
    return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REPLICATE)


def _clipped(d: Detection, w: int, h: int) -> Detection:
    x, y, bw, bh = d.box
    x0, y0 = min(max(0, x), w - 1), min(max(0, y), h - 1)
    x1, y1 = min(w, max(x0 + 1, x + bw)), min(h, max(y0 + 1, y + bh))
    return Detection((x0, y0, x1 - x0, y1 - y0), d.landmarks, d.score)


class HaarDetector:
    """OpenCV's packaged frontal-face Haar cascade on a downscaled gray frame (no landmarks)."""

    def __init__(self, config: HaarConfig = HaarConfig(), photos: bool = False,
                 cascade: str | Path | None = None) -> None:
        self.config = config
        self.detect_width = config.photo_detect_width if photos else config.detect_width
        self.min_face_fraction = config.photo_min_face_fraction if photos else config.min_face_fraction
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]
        try:
            self._cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # a file that is not a cascade makes OpenCV raise, not return empty
            raise ModelError(f"{path}: the Haar cascade could not be loaded") from None
        if self._cascade.empty():
            raise ModelError(f"{path}: the Haar cascade could not be loaded")

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR or gray frame, largest first."""
        gray = _gray(frame)
        h, w = gray.shape[:2]
        scale = min(1.0, self.detect_width / w)
        side = max(24, int(self.min_face_fraction * min(h, w) * scale))
        return one_per_face(self._cascade_boxes(gray, scale, (side, side), None))

    def refine_pays(self, faces: int, frame_w: int, frame_h: int) -> bool:
        """Always: a few hundred cascade windows per face against a whole pyramid."""
        return True

    def refine(self, frame: np.ndarray, last: Detection) -> Detection | None:
        """The face near a known box, searched only around it (a cheap update between full detections)."""
        x, y, w, h = last.box
        h_img, w_img = frame.shape[:2]
        # Search twice the box's size, at a scale where the face is about 48 px: a few hundred windows.
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        x1, y1 = min(w_img, x + w + w // 2), min(h_img, y + h + h // 2)
        gray = _gray(frame[y0:y1, x0:x1])  # only the searched region: one conversion per face is small
        scale = min(1.0, 48 / max(w, 1))
        found = self._cascade_boxes(gray, scale, (int(w * scale * 0.7), int(h * scale * 0.7)),
                                    (int(w * scale * 1.4) + 1, int(h * scale * 1.4) + 1))
        best = _nearest(found, (x - x0, y - y0, w, h))
        if best is None:
            return None
        bx, by, bw, bh = best.box
        return Detection((bx + x0, by + y0, bw, bh), None, best.score)

    def _cascade_boxes(self, gray: np.ndarray, scale: float, min_size: tuple[int, int],
                       max_size: tuple[int, int] | None) -> list[Detection]:
        """Cascade boxes on `gray` resized by `scale`, in `gray`'s own pixels, above the level-weight floor."""
        cfg = self.config
        small = cv2.equalizeHist(_resized(gray, scale) if scale < 1.0 else gray)
        with _memory_errors():
            rects, _levels, weights = self._cascade.detectMultiScale3(
                small, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=min_size,
                maxSize=max_size or (0, 0), outputRejectLevels=True)
        found: list[Detection] = []
        for (x, y, bw, bh), weight in zip(rects, np.asarray(weights).reshape(-1)):
            # The last stage's weight separates real faces from textures that barely pass.
            if weight < cfg.min_level_weight:
                continue
            box = (round(x / scale), round(y / scale), round(bw / scale), round(bh / scale))
            found.append(Detection(box, None, float(weight)))
        return found
