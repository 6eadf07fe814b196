"""Faces the classifier should not label: the rules, the tracker's use of them, and `--image` end to end."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np

from edge_fer.cli.main import main
from edge_fer.config import TrackingConfig, UnsureConfig
from edge_fer.errors import EXIT_OK
from edge_fer.live.tracking import Tracker
from edge_fer.types import UNSURE, Detection, Face
from edge_fer.vision.judge import Reason, judge, pose, quality
from tests.conftest import ASTRONAUT

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The framing's frontal face (models/face_framing.json), scaled up 4x.
FRONTAL = np.array([[14.95, 18.37], [33.05, 18.37], [24.0, 28.23], [16.51, 36.06], [31.49, 36.06]]) * 4


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def detection(points: np.ndarray = FRONTAL, side: int = 190, score: float = 0.9) -> Detection:
    return Detection((0, 0, side, side), tuple(map(tuple, points)), score)  # type: ignore[arg-type]


def textured(mean: float = 120, spread: float = 40) -> np.ndarray:
    """A 48x48 crop of 8x8 blocks: its contrast survives a blur, its edges do not."""
    rng = np.random.default_rng(0)
    blocks = np.clip(rng.normal(mean, spread, (6, 6)), 0, 255).astype(np.uint8)
    return cv2.resize(blocks, (48, 48), interpolation=cv2.INTER_NEAREST)


def test_pose_of_a_frontal_and_a_turned_face() -> None:
    yaw, pitch = pose(FRONTAL)
    assert yaw < 1 and abs(pitch) < 0.01
    turned = FRONTAL.copy()
    turned[2, 0] += 0.45 * (FRONTAL[1, 0] - FRONTAL[0, 0])  # the nose most of the way to one eye
    yaw, _ = pose(turned)
    assert 55 < yaw < 70
    nodding = FRONTAL.copy()
    nodding[2, 1] = FRONTAL[0, 1] + 0.05 * (FRONTAL[3, 1] - FRONTAL[0, 1])  # nose level with the eyes
    assert pose(nodding)[1] < -0.4


def test_each_rule_names_its_reason_and_a_good_face_passes() -> None:
    cfg = UnsureConfig()
    good = quality(detection(), textured(), 0.9)
    assert judge(good, cfg) is None
    assert judge(quality(detection(side=16), textured(), 0.9), cfg) is Reason.SMALL
    assert judge(quality(detection(), textured(mean=12, spread=5), 0.9), cfg) is Reason.DARK
    assert judge(quality(detection(), textured(spread=3), 0.9), cfg) is Reason.FLAT
    turned = FRONTAL.copy()
    turned[2, 0] += 0.45 * (FRONTAL[1, 0] - FRONTAL[0, 0])
    assert judge(quality(detection(turned), textured(), 0.9), cfg) is Reason.TURNED
    assert judge(quality(detection(), textured(), 0.3), cfg) is Reason.UNCERTAIN
    blurred = cv2.GaussianBlur(textured(), (0, 0), 3)
    assert judge(quality(detection(), blurred, 0.9), dataclasses.replace(cfg, min_sharpness=50)) is Reason.BLURRED
    assert judge(quality(detection(score=0.5), textured(), 0.9), dataclasses.replace(cfg, min_detector_score=0.7)) \
        is Reason.FAINT


def face(unsure: str | None = None, **probs: float) -> Face:
    rest = (1.0 - sum(probs.values())) / (len(LABELS) - len(probs))
    scores = {k: probs.get(k, rest) for k in LABELS}
    top = max(scores, key=scores.__getitem__)
    return Face((100, 100, 80, 80), UNSURE if unsure else top, scores[top], scores, unsure=unsure)


def test_a_track_is_unsure_until_judged_then_keeps_its_label_through_faces_it_cannot_judge() -> None:
    tr = Tracker(TrackingConfig(), LABELS)
    (start,) = tr.update([face("small", sad=0.8)], 0.0).events
    assert (start.type, start.emotion) == ("start", UNSURE)
    assert tr.update([face("dark", angry=0.9)], 0.1).events == []
    (change,) = tr.update([face(happy=0.8)], 0.2).events
    assert (change.type, change.emotion, round(change.confidence, 2)) == ("change", "happy", 0.8)
    # A face turned away for a while says nothing: the label and its scores stay.
    for i in range(10):
        assert tr.update([face("turned", sad=0.95)], 0.3 + i * 0.1).events == []
    (end,) = tr.close_all(2.0)
    assert (end.emotion, round(end.confidence, 2)) == ("happy", 0.8)


def test_not_judged_in_json_and_table_with_its_reason(tmp_path: Path) -> None:
    code, out, err = run("--image", str(ASTRONAUT), "--json", "--set", "unsure.min_confidence=0.99")
    assert code == EXIT_OK, err
    (f,) = json.loads(out)["faces"]
    assert (f["emotion"], f["unsure"]) == (UNSURE, "uncertain")
    # The scores are still there, and the confidence is the best guess's.
    assert f["confidence"] == max(f["scores"].values()) and max(f["scores"], key=f["scores"].get) == "happy"
    code, out, _ = run("--image", str(ASTRONAUT), "--set", "unsure.min_confidence=0.99")
    assert code == EXIT_OK and "unsure" in out and "(uncertain)" in out
    code, out, _ = run("--image", str(ASTRONAUT), "--json")
    (f,) = json.loads(out)["faces"]
    assert (f["emotion"], f["unsure"]) == ("happy", None)
    # The same picture in the dark: found, scored, not labelled.
    dark = tmp_path / "dark.png"
    img = cv2.imread(str(ASTRONAUT))
    cv2.imwrite(str(dark), (img.astype(np.float32) * 0.12).astype(np.uint8))
    code, out, err = run("--image", str(dark), "--json")
    assert code == EXIT_OK, err
    faces = json.loads(out)["faces"]
    assert faces and (faces[0]["emotion"], faces[0]["unsure"]) == (UNSURE, "dark")
