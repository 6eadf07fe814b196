"""Annotated pictures: score panels never cover a face, a caption or each other; copies never go through a link."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from edge_fer.vision.annotate import _hits, _layout, annotate
from edge_fer.cli.main import main
from edge_fer.errors import EXIT_OK
from edge_fer.types import Face
from tests.conftest import ASTRONAUT

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def face(box: tuple[int, int, int, int]) -> Face:
    scores = {k: 0.7 if k == "happy" else 0.05 for k in LABELS}
    return Face(box, "happy", 0.7, scores)


def untouched_inside(out: np.ndarray, frame: np.ndarray, box: tuple[int, int, int, int], margin: int = 4) -> bool:
    x, y, w, h = box
    return bool((out[y + margin:y + h - margin, x + margin:x + w - margin]
                 == frame[y + margin:y + h - margin, x + margin:x + w - margin]).all())


def test_three_faces_side_by_side_keep_their_faces_clear_and_panels_apart() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    faces = [face((60, 160, 120, 120)), face((250, 150, 120, 130)), face((430, 170, 110, 110))]
    out = annotate(frame, faces)
    assert out.shape == frame.shape
    assert all(untouched_inside(out, frame, f.box) for f in faces)
    placed, homeless = _layout(faces, [], 640, 480)
    assert homeless == [] and len(placed) == 3
    rects = [r for _, r, _ in placed]
    assert not any(_hits(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert not any(_hits(r, f.box) for r in rects for f in faces)


def test_faces_that_fill_the_picture_get_their_panels_in_a_strip_beside_it() -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    faces = [face((0, 0, 320, 240)), face((320, 0, 320, 240)), face((0, 240, 320, 240)), face((320, 240, 320, 240))]
    out = annotate(frame, faces)
    assert out.shape[0] == 480 and out.shape[1] > 640
    # Captions sit at the faces' edges here (no room above them); the faces' middles stay clear of panels.
    assert all(untouched_inside(out, frame, f.box, margin=60) for f in faces)
    assert (out[:, 640:] != 24).any()  # the strip holds drawn panels


def test_annotate_never_writes_through_a_link_planted_at_a_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's own file\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / f".x.png.{os.getpid()}.tmp").symlink_to(victim)  # the name the copy was once written through
    stdout, err = io.StringIO(), io.StringIO()
    assert main(["--image", str(ASTRONAUT), "--annotate", str(out / "x.png")], out=stdout, err=err) == EXIT_OK
    assert victim.read_bytes() == b"root's own file\n"
    assert not (out / "x.png").is_symlink() and Image.open(out / "x.png").size == (512, 512)
