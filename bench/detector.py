"""The Haar backend at several settings: found-versus-true faces and time, on real photos and pasted faces.

    taskset -c 1 python bench/detector.py [--data ../shared/data/fer2013.tar.gz]

Positives: 200 PrivateTest faces pasted two per 640x480 frame at 150 px, on flat gray and on
the busy no-face photos; the example astronaut photo (one face). Negatives: the photos with
no face (coffee, a cat, a rocket). A found box counts as a face when it covers more than half
of a pasted face; every other box is a phantom. Time: median detection on one busy 640x480
frame (the coffee photo with one face), OpenCV on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_fer.config import HaarConfig  # noqa: E402
from edge_fer.vision.detector import HaarDetector  # noqa: E402
from edge_fer.vision.images import read_image  # noqa: E402
from tests.conftest import ASTRONAUT, FER_TARBALL, NO_FACE_IMAGES, overlap, paste_faces  # noqa: E402
from training import data  # noqa: E402

SETTINGS = [  # (detect_width, scale_factor, min_neighbors, min_level_weight, min_face_fraction)
    (640, 1.1, 3, -1e9, 0.0),  # OpenCV's usual settings on the whole frame
    (480, 1.1, 5, 1.0, 0.05), (320, 1.1, 5, 1.0, 0.1), (320, 1.15, 4, 1.0, 0.1), (320, 1.2, 3, 1.0, 0.1),
    (320, 1.15, 6, 1.5, 0.1),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=FER_TARBALL)
    args = p.parse_args()
    faces = data.load(args.data)["PrivateTest"]
    idx = np.random.default_rng(0).choice(len(faces), 200, replace=False)
    negatives = [read_image(path, 10**8) for path in NO_FACE_IMAGES]
    astronaut = read_image(ASTRONAUT, 10**8)
    default = HaarConfig()
    cv2.setNumThreads(1)
    busy, _ = paste_faces([faces.x[0]], size=140, background=negatives[0])
    print("| detect_width | scale_factor | min_neighbors | min_level_weight | min_face_fraction | pasted faces found "
          "| phantoms in pasted frames | phantoms in no-face photos | astronaut boxes (1 face) | ms, busy frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dw, sf, mn, lw, frac in SETTINGS:
        det = HaarDetector(HaarConfig(detect_width=dw, scale_factor=sf, min_neighbors=mn, min_level_weight=lw,
                                      min_face_fraction=frac))
        found = extra = 0
        for k in range(0, 200, 2):
            background = negatives[k % 3] if k % 4 == 0 else None
            frame, truth = paste_faces([faces.x[idx[k]], faces.x[idx[k + 1]]], size=150, background=background)
            boxes = [d.box for d in det.detect(frame)]
            found += sum(any(overlap(t, b) > 0.5 for b in boxes) for t in truth)
            extra += sum(not any(overlap(t, b) > 0.5 for t in truth) for b in boxes)
        phantoms = sum(len(det.detect(img)) for img in negatives)
        times = []
        for _ in range(25):
            t0 = time.perf_counter()
            det.detect(busy)
            times.append(time.perf_counter() - t0)
        mark = " (default)" if (dw, sf, mn, lw, frac) == (default.detect_width, default.scale_factor,
                                                          default.min_neighbors, default.min_level_weight,
                                                          default.min_face_fraction) else ""
        lw_text = "off" if lw < -1e6 else f"{lw}"
        print(f"| {dw}{mark} | {sf} | {mn} | {lw_text} | {frac} | {found}/200 | {extra} | {phantoms} | "
              f"{len(det.detect(astronaut))} | {np.median(times) * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
