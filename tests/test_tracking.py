"""Tracking: ids by overlap, smoothing against flicker, label switching, and ends."""

from __future__ import annotations

import pytest

from edge_fer.config import TrackingConfig
from edge_fer.live.tracking import Tracker
from edge_fer.types import iou
from edge_fer.vision.analyze import Face

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def face(box: tuple[int, int, int, int], **probs: float) -> Face:
    rest = (1.0 - sum(probs.values())) / (len(LABELS) - len(probs))
    scores = {k: probs.get(k, rest) for k in LABELS}
    top = max(scores, key=scores.get)
    return Face(box, top, scores[top], scores)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_start_follow_and_end() -> None:
    tr = Tracker(TrackingConfig(max_missing_seconds=0.5), LABELS)
    ev = tr.update([face((100, 100, 80, 80), happy=0.9), face((300, 100, 80, 80), sad=0.8)], 0.0).events
    assert [(e.type, e.track_id, e.emotion) for e in ev] == [("start", 1, "happy"), ("start", 2, "sad")]
    # Moving a little keeps the ids.
    ev = tr.update([face((305, 104, 80, 80), sad=0.8), face((104, 102, 80, 80), happy=0.9)], 0.1).events
    assert ev == [] and sorted(tr.tracks) == [1, 2] and tr.tracks[1].box == (104, 102, 80, 80)
    ev = tr.update([face((104, 102, 80, 80), happy=0.9)], 0.4).events
    assert ev == []  # track 2 is missing but not for long enough yet
    ev = tr.update([face((104, 102, 80, 80), happy=0.9)], 0.7).events
    assert [(e.type, e.track_id) for e in ev] == [("end", 2)]
    assert ev[0].duration == pytest.approx(0.1)  # the time it was seen, not the grace after it
    assert [(e.type, e.track_id) for e in tr.close_all(1.0)] == [("end", 1)]


def test_one_frame_blip_does_not_flip_the_label() -> None:
    tr = Tracker(TrackingConfig(smoothing_seconds=0.8, switch_seconds=0.5, switch_margin=0.1), LABELS)
    box = (50, 50, 100, 100)
    tr.update([face(box, happy=0.9)], 0.0)
    events = []
    for i in range(1, 10):
        f = face(box, surprise=0.9) if i == 5 else face(box, happy=0.9)
        events += tr.update([f], i / 15).events
    assert events == [] and tr.tracks[1].label == LABELS.index("happy")


def test_a_lasting_change_is_reported_once() -> None:
    tr = Tracker(TrackingConfig(smoothing_seconds=0.5, switch_seconds=0.5, switch_margin=0.1), LABELS)
    box = (50, 50, 100, 100)
    tr.update([face(box, happy=0.9)], 0.0)
    changes = []
    for i in range(1, 45):
        for e in tr.update([face(box, surprise=0.9)], i / 15).events:
            changes.append((round(i / 15, 2), e.type, e.emotion))
    assert len(changes) == 1 and changes[0][1:] == ("change", "surprise")
    assert 0.2 < changes[0][0] < 1.0


def test_close_scores_switch_after_switch_seconds() -> None:
    # Neither emotion leads by the margin, so the switch waits for switch_seconds.
    tr = Tracker(TrackingConfig(smoothing_seconds=0.0, switch_seconds=0.6, switch_margin=0.5), LABELS)
    box = (0, 0, 50, 50)
    tr.update([face(box, sad=0.45, neutral=0.40)], 0.0)
    times = [t / 10 for t in range(1, 12) if tr.update([face(box, sad=0.40, neutral=0.45)], t / 10).events]
    assert times == [0.7]


def test_a_box_that_jumps_in_size_stays_one_track_and_ids_come_from_the_assignment() -> None:
    # The reported case: one face seen as [130,12,120,120] and then [142,64,96,96] (IoU 0.45 < 0.5 would
    # be fine, but a smaller box inside a bigger one can fall below any IoU threshold).
    tr = Tracker(TrackingConfig(iou_threshold=0.5), LABELS)
    tr.update([face((130, 12, 120, 120), happy=0.9)], 0.0)
    ev, ids = tr.update([face((150, 40, 70, 70), happy=0.9), face((400, 40, 80, 80), sad=0.9)], 0.1)
    assert [(e.type, e.track_id) for e in ev] == [("start", 2)]
    assert ids == [1, 2] and len(tr.tracks) == 2


def test_an_unsure_face_keeps_its_label_however_long_another_leads() -> None:
    tr = Tracker(TrackingConfig(smoothing_seconds=0.0, switch_seconds=0.2, switch_min_confidence=0.4), LABELS)
    tr.update([face((100, 100, 80, 80), happy=0.6)], 0.0)
    # fear leads happy by 0.04 at 0.33: an unsure face, below the floor, for two seconds.
    for i in range(1, 21):
        assert tr.update([face((100, 100, 80, 80), fear=0.33, happy=0.29)], i * 0.1).events == []
    ev = tr.update([face((100, 100, 80, 80), fear=0.5, happy=0.2)], 2.2).events
    ev += tr.update([face((100, 100, 80, 80), fear=0.5, happy=0.2)], 2.5).events
    assert [(e.type, e.emotion) for e in ev] == [("change", "fear")]
