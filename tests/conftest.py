"""Shared fixtures: paths, the faces the repository ships (and FER-2013's, where ../shared has it), frames of them."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    from edge_fer.vision.analyze import Analyzer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # training/ is not installed; its data reader is plain numpy

EXAMPLES = ROOT / "examples"
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(os.environ.get("EDGE_FER_SHARED", ROOT.parent / "shared" / "data"))
FER_TARBALL = SHARED / "fer2013.tar.gz"
ASTRONAUT = EXAMPLES / "astronaut.png"
NO_FACE_IMAGES = [TEST_DATA / "coffee.png", TEST_DATA / "chelsea.png", TEST_DATA / "rocket.jpg"]
FACES = TEST_DATA / "faces"  # made from the public-domain photos by tests/data/faces/make.py
# Set (one substring of a skip's reason a line), every skip must match one, or the run fails: .ci/run sets it.
ALLOWED_SKIPS = "EDGE_FER_ALLOWED_SKIPS"


@pytest.fixture(scope="session")
def fer_private():
    """FER-2013 PrivateTest faces (read once, cached as arrays); skipped where the shared data is absent."""
    if not FER_TARBALL.exists():
        pytest.skip(f"FER-2013 is not at {FER_TARBALL} (set EDGE_FER_SHARED to its folder)")
    from training import data

    return data.load(FER_TARBALL)["PrivateTest"]


def paste_faces(faces: list[np.ndarray], size: int = 160, frame_wh: tuple[int, int] = (640, 480),
                background: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A BGR frame with the square gray faces scaled to `size` and pasted side by side; returns the paste boxes."""
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
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def shipped_faces() -> dict[str, list[np.ndarray]]:
    """The gray faces in tests/data/faces, by the emotion their file name starts with, in name order."""
    faces: dict[str, list[np.ndarray]] = {}
    for path in sorted(FACES.glob("*.png")):
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert face is not None, f"{path} is not an image"
        faces.setdefault(path.name.split("-", 1)[0], []).append(face)
    return faces


def pick_clear_faces(candidates: Mapping[str, Sequence[np.ndarray]], analyzer: Analyzer) -> dict[str, list[np.ndarray]]:
    """Per emotion, up to 3 candidates that, pasted into a frame, this analyzer finds and classifies as labelled."""
    chosen: dict[str, list[np.ndarray]] = {}
    for name in ("happy", "surprise", "neutral"):
        picks = []
        for face in candidates.get(name, []):
            frame, _ = paste_faces([face], size=180)
            faces = analyzer.analyze(frame)
            if len(faces) == 1 and faces[0].emotion == name and faces[0].confidence > 0.6:
                picks.append(face)
            if len(picks) == 3:
                break
        chosen[name] = picks
    # The shipped set has no neutral face (tests/data/README.md says why); the daemon tests need the other two.
    missing = [name for name in ("happy", "surprise") if not chosen[name]]
    if missing:
        pytest.fail(f"no shipped {' or '.join(missing)} face is found and classified as such: the model or the "
                    f"detector changed; rebuild tests/data/faces with tests/data/faces/make.py")
    return chosen


@pytest.fixture(scope="session")
def clear_faces():
    """Clear faces for the default detector (YuNet), from the faces the repository ships."""
    from edge_fer.vision.analyze import Analyzer

    return pick_clear_faces(shipped_faces(), Analyzer())


@pytest.fixture(scope="session")
def clear_faces_haar():
    """Clear faces the Haar backend finds (it misses some of the shipped ones, framed tightly like FER-2013)."""
    from edge_fer import Analyzer, HaarDetector

    return pick_clear_faces(shipped_faces(), Analyzer(HaarDetector()))


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, clear_faces) -> Path:
    """2 s of a happy face, 2 s of a surprised one in the same place, then 1.5 s of no face (15 fps)."""
    blank, _ = paste_faces([], size=180)
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    surprise, _ = paste_faces([clear_faces["surprise"][0]], size=180)
    frames = [happy] * 30 + [surprise] * 30 + [blank] * 22
    return write_video(tmp_path_factory.mktemp("video") / "faces.avi", frames)


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """Why a test or a module was skipped, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


_SKIPS: list[tuple[str, str]] = []  # (test id, reason) of each skip in this run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _SKIPS.append((report.nodeid, _skip_reason(report)))


def _unlisted_skips() -> list[tuple[str, str]]:
    """The skips whose reason matches no line of EDGE_FER_ALLOWED_SKIPS (none when it is unset)."""
    if ALLOWED_SKIPS not in os.environ:
        return []
    allowed = [line.strip() for line in os.environ[ALLOWED_SKIPS].splitlines() if line.strip()]
    return [(nodeid, reason) for nodeid, reason in _SKIPS if not any(a in reason for a in allowed)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A skip nobody listed is a test that did not run where it should have: the run fails.
    if _unlisted_skips() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if ALLOWED_SKIPS not in os.environ:
        return
    write = terminalreporter.write_line
    terminalreporter.section("skips by reason")
    for reason, count in Counter(reason for _, reason in _SKIPS).most_common():
        write(f"{count:4d}  {reason}")
    write(f"{len(_SKIPS):4d}  in all")
    unlisted = _unlisted_skips()
    if unlisted:
        terminalreporter.section(f"skips whose reason is not in {ALLOWED_SKIPS}", red=True)
        for nodeid, reason in unlisted:
            write(f"{nodeid}: {reason}")
