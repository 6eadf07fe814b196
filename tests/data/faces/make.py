"""Rebuild tests/data/faces/*.png (gray faces framed like FER-2013) from the public-domain photos."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
PHOTOS = {"astronaut": ROOT / "examples" / "astronaut.png", "hopper": HERE.parent / "grace_hopper.jpg"}
SIDE, MARGIN = 96, 0  # FER-2013's 48x48 frame at twice its size, and no more of the photo around it
K = (SIDE - 2 * MARGIN) / 48  # pixels per FER-2013 pixel


def at(x: float, y: float) -> tuple[int, int]:
    """A point given in FER-2013's 48x48 frame, in this crop's pixels."""
    return round(MARGIN + x * K), round(MARGIN + y * K)


def size(rx: float, ry: float) -> tuple[int, int]:
    """Ellipse axes given in FER-2013's pixels, in this crop's."""
    return round(rx * K), round(ry * K)


def mirror(face: np.ndarray) -> np.ndarray:
    """The face flipped left to right."""
    return cv2.flip(face, 1)


def dim(face: np.ndarray, gamma: float = 1.3) -> np.ndarray:
    """The face in dimmer light: the photo is bright, and OpenCV's Haar cascade often misses her face as it is."""
    return np.clip(255.0 * (face / 255.0) ** gamma, 0, 255).astype(np.uint8)


def dimmer(face: np.ndarray) -> np.ndarray:
    """The face in dimmer light still (gamma 1.6)."""
    return dim(face, 1.6)


def open_mouth(face: np.ndarray) -> np.ndarray:
    """The mouth painted over with cheek-coloured skin and a small dark open "O", then softened (a surprised face)."""
    painted = face.astype(np.float32)
    (x0, y0), (x1, y1) = at(18, 26), at(30, 32)
    skin = float(np.median(painted[y0:y1, x0:x1]))  # the cheeks and nose, between the eyes and the mouth
    cv2.ellipse(painted, at(24, 36), size(11, 5), 0, 0, 360, skin, -1, cv2.LINE_AA)
    cv2.ellipse(painted, at(24, 37), size(4, 3), 0, 0, 360, 10, -1, cv2.LINE_AA)
    # Softened all over, so that the paint leaves no hard edge for the model to see.
    return np.clip(cv2.GaussianBlur(painted, (7, 7), 0), 0, 255).astype(np.uint8)


def keep(face: np.ndarray) -> np.ndarray:
    """The face as photographed."""
    return face


# file name (its emotion first) -> the photo and what is done to its face
FACES: dict[str, tuple[str, list[Callable[[np.ndarray], np.ndarray]]]] = {
    "happy-astronaut.png": ("astronaut", [keep]),
    "happy-astronaut-dim-mirrored.png": ("astronaut", [dim, mirror]),
    "happy-astronaut-dimmer.png": ("astronaut", [dimmer]),
    "surprise-astronaut-dim.png": ("astronaut", [dim, open_mouth]),
    # Not dimmed by 1.3 and mirrored: the Haar backend's tracking loses that one every third frame.
    "surprise-astronaut-dimmer-mirrored.png": ("astronaut", [dimmer, open_mouth, mirror]),
    "surprise-hopper.png": ("hopper", [open_mouth]),
}


def framed_face(photo: Path) -> np.ndarray:
    """The photo's one face as FER-2013 frames it (YuNet's landmarks, the shipped framing)."""
    from edge_fer.vision.align import Framing
    from edge_fer.vision.detector import YuNetDetector
    from edge_fer.vision.images import read_image

    image = read_image(photo, 10**8)
    (found,) = YuNetDetector(photos=True).detect(image)
    m = Framing.load().transform(found, SIDE - 2 * MARGIN)
    m[:, 2] += MARGIN
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.warpAffine(gray, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def main() -> int:
    """Write each face next to this script."""
    sys.path.insert(0, str(ROOT))
    crops = {name: framed_face(path) for name, path in PHOTOS.items()}
    for name, (photo, edits) in FACES.items():
        face = crops[photo]
        for edit in edits:
            face = edit(face)
        cv2.imwrite(str(HERE / name), face)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
