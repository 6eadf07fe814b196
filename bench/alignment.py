"""Classification through detection and alignment, on FER-2013 PrivateTest faces pasted into frames.

    taskset -c 1 python bench/alignment.py [--data ../shared/data/fer2013.tar.gz] [--faces 1000]

Each face is upscaled to 160 px, rotated by a random angle in [-20, 20] degrees (on half of
them) and pasted into a 640x480 gray frame. Every detector/crop pairing then finds and
classifies it. Reported: faces found, and accuracy over the faces each pairing found and over
all faces (a missed face counts as wrong). "Box crop" is the crop the Haar pipeline used before
alignment (the detector's box, resized); "framed" is edge_fer.vision.align (landmarks or calibrated box).
Nothing here is tuned: the framing comes from the Training split (training/calibrate_framing.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_fer.config import HaarConfig, YunetConfig  # noqa: E402
from edge_fer.types import Detection  # noqa: E402
from edge_fer.vision.align import Framing  # noqa: E402
from edge_fer.vision.classifier import EmotionClassifier  # noqa: E402
from edge_fer.vision.detector import HaarDetector, YuNetDetector  # noqa: E402
from tests.conftest import FER_TARBALL  # noqa: E402
from training import data  # noqa: E402


def staged(face: np.ndarray, angle: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A 640x480 BGR frame with the face at 160 px, rotated by `angle`; and the face's centre."""
    frame = np.full((480, 640), 128, np.uint8)
    big = cv2.resize(face, (160, 160), interpolation=cv2.INTER_CUBIC)
    frame[160:320, 240:400] = big
    if angle:
        m = cv2.getRotationMatrix2D((320, 240), angle, 1.0)
        frame = cv2.warpAffine(frame, m, (640, 480), borderValue=128)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), (320.0, 240.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(FER_TARBALL))
    p.add_argument("--faces", type=int, default=1000)
    args = p.parse_args()
    cv2.setNumThreads(1)
    split = data.load(args.data)["PrivateTest"].take(args.faces)
    rng = np.random.default_rng(0)
    angles = np.where(rng.random(len(split)) < 0.5, rng.uniform(-20, 20, len(split)), 0.0)
    clf = EmotionClassifier()
    framing = Framing.load()
    detectors = {"haar": HaarDetector(HaarConfig()), "yunet": YuNetDetector(YunetConfig())}
    crops = {
        "box crop": lambda gray, d: gray[d.box[1]:d.box[1] + d.box[3], d.box[0]:d.box[0] + d.box[2]],
        "framed": lambda gray, d: framing.crop(gray, d, 48),
        "framed, box only": lambda gray, d: framing.crop(gray, Detection(d.box, None, d.score), 48),
    }
    results: dict[tuple[str, str], dict[int, bool]] = {}  # (detector, crop) -> face index -> right?
    for dname, det in detectors.items():
        for i, (face, label, angle) in enumerate(zip(split.x, split.y, angles)):
            frame, (cx, cy) = staged(face, float(angle))
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            hits = [d for d in det.detect(frame)
                    if d.box[0] < cx < d.box[0] + d.box[2] and d.box[1] < cy < d.box[1] + d.box[3]]
            for cname, crop in crops.items():
                if hits and not (dname == "haar" and cname == "framed, box only"):
                    right = int(np.argmax(clf.predict([crop(gray, hits[0])])[0])) == int(label)
                    results.setdefault((dname, cname), {})[i] = right
    # The faces every detector found: the fair ground on which to compare crops.
    common = set.intersection(*(set(r) for r in results.values()))
    print(f"{len(split)} faces, {int((angles != 0).sum())} of them rotated; {len(common)} found by both detectors")
    print("| detector | crop | found | accuracy on all faces (missed = wrong) | accuracy on faces both found |")
    print("|---|---|---|---|---|")
    for (dname, cname), r in results.items():
        on_common = sum(r[i] for i in common) / max(len(common), 1)
        print(f"| {dname} | {cname} | {len(r)}/{len(split)} | {sum(r.values()) / len(split):.1%} | {on_common:.1%} |")

if __name__ == "__main__":
    main()
