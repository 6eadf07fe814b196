"""Shared fixtures: paths, the shared FER-2013 faces, and frames built from them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # training/ is not installed; its data reader is plain numpy

EXAMPLES = ROOT / "examples"
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(os.environ.get("EDGE_FER_SHARED", ROOT.parent / "shared" / "data"))
FER_TARBALL = SHARED / "fer2013.tar.gz"
ASTRONAUT = EXAMPLES / "astronaut.png"
NO_FACE_IMAGES = [TEST_DATA / "coffee.png", TEST_DATA / "chelsea.png", TEST_DATA / "rocket.jpg"]


@pytest.fixture(scope="session")
def fer_private():
    """FER-2013 PrivateTest faces (read once, cached as arrays); skipped where the shared data is absent."""
    if not FER_TARBALL.exists():
        pytest.skip(f"FER-2013 is not at {FER_TARBALL} (set EDGE_FER_SHARED to its folder)")
    from training import data

    return data.load(FER_TARBALL)["PrivateTest"]


def paste_faces(faces: list[np.ndarray], size: int = 160, frame_wh: tuple[int, int] = (640, 480),
                background: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A BGR frame with the 48x48 faces upscaled to `size` and pasted side by side; returns the paste boxes."""
    w, h = frame_wh
    frame = np.full((h, w, 3), 128, np.uint8) if background is None else cv2.resize(background, (w, h))
    boxes = []
    gap = (w - len(faces) * size) // (len(faces) + 1)
    for i, face in enumerate(faces):
        x, y = gap + i * (size + gap), (h - size) // 2
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        frame[y:y + size, x:x + size] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
        boxes.append((x, y, size, size))
    return frame, boxes


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def write_video(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """An MJPG .avi of BGR frames (OpenCV's built-in encoder)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def pick_clear_faces(fer_private, analyzer) -> dict[str, list[np.ndarray]]:
    """Per emotion, up to 3 PrivateTest faces that, pasted into a frame, this analyzer finds and classifies as labelled."""
    chosen: dict[str, list[np.ndarray]] = {}
    for code, name in ((3, "happy"), (5, "surprise"), (6, "neutral")):
        picks = []
        for i in np.flatnonzero(fer_private.y == code)[:300]:
            frame, _ = paste_faces([fer_private.x[i]], size=180)
            faces = analyzer.analyze(frame)
            if len(faces) == 1 and faces[0].emotion == name and faces[0].confidence > 0.6:
                picks.append(fer_private.x[i])
            if len(picks) == 3:
                break
        chosen[name] = picks
    return chosen


@pytest.fixture(scope="session")
def clear_faces(fer_private):
    """Clear faces for the default detector (YuNet)."""
    from edge_fer import Analyzer

    return pick_clear_faces(fer_private, Analyzer())


@pytest.fixture(scope="session")
def clear_faces_haar(fer_private):
    """Clear faces the Haar backend finds (it misses many of FER-2013's tight crops)."""
    from edge_fer import Analyzer, HaarDetector

    return pick_clear_faces(fer_private, Analyzer(HaarDetector()))


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, clear_faces) -> Path:
    """2 s of a happy face, 2 s of a surprised one in the same place, then 1.5 s of no face (15 fps)."""
    if not clear_faces["happy"] or not clear_faces["surprise"]:
        pytest.skip("no clear happy and surprised faces found for the video")
    blank, _ = paste_faces([], size=180)
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    surprise, _ = paste_faces([clear_faces["surprise"][0]], size=180)
    frames = [happy] * 30 + [surprise] * 30 + [blank] * 22
    return write_video(tmp_path_factory.mktemp("video") / "faces.avi", frames)
