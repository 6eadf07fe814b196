"""The Haar detector: real photos, pasted faces, following a face, and a broken cascade."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.config import Config, DetectorConfig, photo_detector
from edge_fer.detector import FaceDetector
from edge_fer.errors import ModelError
from edge_fer.images import read_image
from tests.conftest import ASTRONAUT, NO_FACE_IMAGES, overlap, paste_faces

PHOTO = FaceDetector(photo_detector(Config()))
VIDEO = FaceDetector(DetectorConfig())


@pytest.mark.parametrize("detector", [PHOTO, VIDEO], ids=["photo", "video"])
def test_one_face_in_the_astronaut_and_none_in_photos_without_faces(detector: FaceDetector) -> None:
    boxes = detector.detect(read_image(ASTRONAUT, 10**8))
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180
    for path in NO_FACE_IMAGES:
        assert detector.detect(read_image(path, 10**8)) == [], path.name


def test_pasted_faces_are_found_where_they_are(clear_faces) -> None:
    frame, truth = paste_faces([clear_faces["happy"][0], clear_faces["surprise"][0]], size=170)
    boxes = VIDEO.detect(frame)
    assert len(boxes) == 2
    assert all(any(overlap(t, b) > 0.5 for b in boxes) for t in truth)


def test_refine_follows_a_moving_face_and_lets_go_of_a_vanished_one(clear_faces) -> None:
    frame, _ = paste_faces([clear_faces["happy"][0]], size=170)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    (box,) = VIDEO.detect_gray(gray)
    moved = np.roll(gray, (10, 25), axis=(0, 1))
    x, y, w, h = VIDEO.refine(moved, box)
    assert abs((x + w / 2) - (box[0] + box[2] / 2 + 25)) < 12
    assert abs((y + h / 2) - (box[1] + box[3] / 2 + 10)) < 12
    assert VIDEO.refine(np.full_like(gray, 128), box) is None


def test_a_cascade_that_does_not_load_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "cascade.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ModelError, match="the Haar cascade could not be loaded"):
        FaceDetector(cascade=bad)
