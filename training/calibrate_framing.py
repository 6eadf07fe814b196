"""Measure where each detector's box and landmarks fall in FER-2013's 48x48 frame; write models/face_framing.json.

    python -m training.calibrate_framing --data ../shared/data/fer2013.tar.gz [--faces 4000]

Only the Training split is used. Each face is upscaled 4x (192 px) and set in a gray margin, both
detectors run on it, and for the face each finds the landmarks and box are mapped back to the
48x48 frame. The medians are the calibration: the runtime crops each detected face so that its
landmarks (YuNet) or box (Haar) land where they land on FER-2013's own faces.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import cv2
import numpy as np

from edge_fer.config import HaarConfig, YunetConfig
from edge_fer.vision.detector import HaarDetector, YuNetDetector
from training import data

UP, PAD = 4, 96
OUT = Path(__file__).resolve().parent.parent / "models" / "face_framing.json"


def staged(face: np.ndarray) -> np.ndarray:
    """A 48x48 face upscaled and centred in a plain margin, as BGR."""
    big = cv2.resize(face, (48 * UP, 48 * UP), interpolation=cv2.INTER_CUBIC)
    framed = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=int(face.mean()))
    return cv2.cvtColor(framed, cv2.COLOR_GRAY2BGR)


def central(found: list, side: int) -> object | None:
    """The detection whose centre is nearest the staged face's centre, if it is on the face."""
    c = side / 2
    best = min(found, key=lambda d: abs(d.box[0] + d.box[2] / 2 - c) + abs(d.box[1] + d.box[3] / 2 - c), default=None)
    if best is None or abs(best.box[0] + best.box[2] / 2 - c) > 48 * UP / 4:
        return None
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/fer2013.tar.gz")
    p.add_argument("--faces", type=int, default=4000, help="Training faces to measure (the first N)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    train = data.load(args.data)["Training"].take(args.faces)
    side = 48 * UP + 2 * PAD
    # Camera settings wide enough that the staged image is not downscaled.
    yunet = YuNetDetector(YunetConfig(detect_width=side))
    haar = HaarDetector(HaarConfig(detect_width=side, min_face_fraction=0.2))
    points, haar_frames = [], []
    for face in train.x:
        img = staged(face)
        y = central(yunet.detect(img), side)
        if y is not None and y.landmarks is not None:
            points.append((np.asarray(y.landmarks) - PAD) / UP)
        h = central(haar.detect(img), side)
        if h is not None:
            x0, y0, w, hh = ((v - PAD) / UP if i < 2 else v / UP for i, v in enumerate(h.box))
            # The 48x48 frame in units of this box: where the frame starts and how large it is.
            haar_frames.append((-x0 / w, -y0 / hh, 48 / w, 48 / hh))
    pts = np.median(np.stack(points), axis=0)
    # The person's right and left are mirror images: average each point with its mirror so eyes are level.
    mirrored = pts[[1, 0, 2, 4, 3]] * np.array([-1, 1]) + np.array([48, 0])
    level = (pts + mirrored) / 2
    doc = {
        "about": "Where FER-2013's 48x48 frame sits relative to each detector's output; "
                 "written by training/calibrate_framing.py",
        "measured": {"split": "Training", "faces": len(train), "date": dt.date.today().isoformat(),
                     "yunet_found": len(points), "haar_found": len(haar_frames),
                     "yunet_landmarks_raw": np.round(pts, 2).tolist()},
        "yunet": {"landmarks": np.round(level, 2).tolist(),
                  "order": "right eye, left eye, nose tip, right mouth corner, left mouth corner (48x48 pixels)"},
        "haar": {"frame_in_box": np.round(np.median(np.array(haar_frames), axis=0), 4).tolist(),
                 "order": "x, y, width, height of the 48x48 frame in units of the Haar box"},
    }
    # One line per section keeps the file readable and its diffs small.
    args.out.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items()) + "\n}\n")
    print(json.dumps(doc["measured"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
