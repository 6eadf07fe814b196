"""Annotated pictures: labels readable on any wall, nothing drawn over a face or over each other, no face left out,
copies in the input's format that never go through a link."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_fer.cli.main import main
from edge_fer.errors import EXIT_OK
from edge_fer.types import Face
from edge_fer.vision.annotate import COLORS, MIN_SCALE, Plan, _hits, annotate, contrast, ink_on, plan
from tests.conftest import ASTRONAUT

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def face(box: tuple[int, int, int, int], emotion: str = "happy") -> Face:
    scores = {k: 0.7 if k == emotion else 0.05 for k in LABELS}
    return Face(box, emotion, 0.7, scores)


def untouched_inside(out: np.ndarray, frame: np.ndarray, box: tuple[int, int, int, int], margin: int = 4) -> bool:
    x, y, w, h = box
    return bool((out[y + margin:y + h - margin, x + margin:x + w - margin]
                 == frame[y + margin:y + h - margin, x + margin:x + w - margin]).all())


def drawn_rects(layout: Plan) -> list[tuple[int, int, int, int]]:
    return [lab.rect for lab in layout.labels] + [p.rect for p in layout.panels] + [ln.rect for ln in layout.legend]


def test_three_faces_side_by_side_keep_their_faces_clear_and_panels_apart() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    faces = [face((60, 160, 120, 120)), face((250, 150, 120, 130)), face((430, 170, 110, 110))]
    out = annotate(frame, faces)
    assert out.shape == frame.shape
    assert all(untouched_inside(out, frame, f.box) for f in faces)
    layout = plan(faces, ["1", "2", "3"], 640, 480)
    assert layout.legend == [] and sorted(p.face for p in layout.panels) == [0, 1, 2]
    rects = drawn_rects(layout)
    assert not any(_hits(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert not any(_hits(r, f.box) for r in rects for f in faces)
    # Every label is the whole caption, after the face's number (as the text output counts them).
    assert [lab.text for lab in layout.labels] == ["1 happy 70%", "2 happy 70%", "3 happy 70%"]


def test_faces_that_fill_the_picture_get_their_scores_beside_it() -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    faces = [face((0, 0, 320, 240)), face((320, 0, 320, 240)), face((0, 240, 320, 240)), face((320, 240, 320, 240))]
    out = annotate(frame, faces)
    assert out.shape[0] == 480 and out.shape[1] > 640
    # Labels sit inside the faces' tops here (no room around them); the faces' middles stay clear.
    assert all(untouched_inside(out, frame, f.box, margin=60) for f in faces)
    assert (out[:, 640:] != 24).any()  # the strip holds what was drawn


def test_every_label_contrasts_with_its_ink() -> None:
    # WCAG AA for text: 4.5 to 1, for the colour of every emotion and of faces not judged.
    assert all(contrast(color, ink_on(color)) >= 4.5 for color in COLORS.values())


def test_a_gray_label_on_a_light_wall_has_a_filled_background() -> None:
    wall = (225, 225, 225)
    frame = np.full((240, 320, 3), wall, np.uint8)
    f = face((130, 110, 60, 60), "neutral")
    out = annotate(frame, [f], bars=False)
    x, y, w, _h = f.box
    # The label sits on the box's top edge: the rows above it, as wide as the box, are no longer the wall.
    band = out[y - 14:y - 2, x + 3:x + w - 3].reshape(-1, 3).astype(int)
    assert (np.abs(band - wall).max(axis=1) <= 10).mean() < 0.05
    # Its text is dark on the label's neutral gray, at a contrast that reads.
    background = tuple(int(v) for v in COLORS["neutral"])
    assert (np.abs(band - background).max(axis=1) == 0).mean() > 0.4
    ink = band[band.sum(axis=1).argsort()[: len(band) // 20]].mean(axis=0)
    assert contrast(background, tuple(int(v) for v in ink)) >= 4.5


def test_a_small_crowded_frame_overlaps_nothing_and_leaves_no_face_out() -> None:
    # Twelve 14-pixel faces on a 320x240 frame: no room for their captions or panels at a legible size.
    boxes = [(28 + 80 * c, 9 + 80 * r, 14, 17) for r in range(3) for c in range(4)]
    faces = [face(b, ("happy", "sad", "neutral")[i % 3]) for i, b in enumerate(boxes)]
    names = [str(i + 1) for i in range(len(faces))]
    layout = plan(faces, names, 320, 240)
    labels = [lab.rect for lab in layout.labels]
    assert not any(_hits(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])
    assert not any(_hits(r, f.box) for r in labels for f in faces)
    assert all(lab.text.split()[0] == names[lab.face] and lab.scale >= MIN_SCALE for lab in layout.labels)
    # Each face's scores appear exactly once, as a panel or a legend line starting with its number.
    assert sorted([p.face for p in layout.panels] + [ln.face for ln in layout.legend]) == list(range(12))
    assert all(ln.text.startswith(f"{names[ln.face]} ") for ln in layout.legend)
    rects = [p.rect for p in layout.panels] + [ln.rect for ln in layout.legend]
    assert not any(_hits(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert all(r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= layout.width and r[1] + r[3] <= layout.height
               for r in rects + labels)
    out = annotate(np.full((240, 320, 3), 128, np.uint8), faces)
    assert out.shape == (layout.height, layout.width, 3)
    # Each legend line starts with its face's number on the face's colour, as on the box.
    for ln in layout.legend:
        x, y, _w, _h = ln.rect
        assert tuple(int(v) for v in out[y + 1, x + 1]) == COLORS[faces[ln.face].emotion]


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


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut as a JPEG, a PNG and a GIF of one name each."""
    folder = tmp_path_factory.mktemp("photos")
    image = cv2.imread(str(ASTRONAUT))
    cv2.imwrite(str(folder / "astronaut.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(folder / "astronaut.png"), image)
    Image.open(ASTRONAUT).convert("RGB").save(folder / "portrait.gif")
    return folder


def test_annotated_copies_keep_the_input_format_unless_the_name_asks_otherwise(photos: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    folder = tmp_path / "annotated"
    code = main(["--image", str(photos / "astronaut.jpg"), str(photos / "astronaut.png"), str(photos / "portrait.gif"),
                 "--annotate", str(folder)], out=out, err=err)
    assert code == EXIT_OK, err.getvalue()
    names = sorted(p.name for p in folder.iterdir())
    # A JPEG stays a JPEG, so x.jpg and x.png no longer compete for one name; a GIF (256 colours) becomes PNG.
    assert names == ["astronaut.annotated.jpg", "astronaut.annotated.png", "portrait.annotated.png"]
    assert Image.open(folder / "astronaut.annotated.jpg").format == "JPEG"
    assert Image.open(folder / "astronaut.annotated.png").format == "PNG"
    assert Image.open(folder / "portrait.annotated.png").format == "PNG"
    # At good quality: close to the annotated picture itself (it is drawn the same for every format).
    jpeg = cv2.imread(str(folder / "astronaut.annotated.jpg")).astype(int)
    png = cv2.imread(str(folder / "astronaut.annotated.png")).astype(int)
    assert jpeg.shape == png.shape and np.abs(jpeg - png).mean() < 3
    assert (folder / "astronaut.annotated.jpg").stat().st_size < (folder / "astronaut.annotated.png").stat().st_size
    # A file named for one image picks its own format.
    target = tmp_path / "copy.png"
    assert main(["--image", str(photos / "astronaut.jpg"), "--annotate", str(target)], out=out, err=err) == EXIT_OK
    assert Image.open(target).format == "PNG"
