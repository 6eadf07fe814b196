"""The per-frame algorithm and its state: gray once, detect or refine, classify, track."""

from __future__ import annotations

import cv2

from edge_fer.config import Config
from edge_fer.live.tracking import Tracker
from edge_fer.types import Detection, Frame, Result, TrackEvent, TrackState
from edge_fer.vision.analyze import Analyzer
from edge_fer.vision.detector import one_per_face


class Pipeline:
    """Turns frames into faces with track ids and the track events they cause; used by daemon, window and benches."""

    def __init__(self, cfg: Config, analyzer: Analyzer | None = None) -> None:
        self.every_n_frames = cfg.detector.every_n_frames
        self.analyzer = analyzer or Analyzer.from_config(cfg)
        self.tracker = Tracker(cfg.tracking, self.analyzer.classifier.labels)
        self.frame_size = (0, 0)  # of the latest frame: boxes from another size mean nothing
        self.processed = 0
        self._found: list[Detection] = []

    def step(self, frame: Frame) -> tuple[Result, list[TrackEvent]]:
        """Detect on every Nth frame, follow the known faces in between, classify in one call, and track."""
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY) if frame.image.ndim == 3 else frame.image
        h, w = gray.shape[:2]
        resized = (w, h) != self.frame_size
        self.frame_size = (w, h)
        detector = self.analyzer.detector
        # A full detection every Nth frame (or when boxes from another frame size mean nothing) finds new
        # faces; in between each known face is searched for only around where it was.
        # Counted over processed frames: capture sequence numbers skip the frames that were dropped.
        self.processed += 1
        # With many faces known, searching near each costs more than one full detection (YuNet): detect instead.
        if (resized or (self.processed - 1) % self.every_n_frames == 0
                or not detector.refine_pays(len(self._found), w, h)):
            self._found = detector.detect(frame.image)
        else:
            # Two known faces can converge on one; it stays one face.
            self._found = one_per_face([d for d in (detector.refine(frame.image, d) for d in self._found)
                                        if d is not None])
        faces = self.analyzer.classify(gray, self._found)
        tracked = self.tracker.update(faces, frame.t)
        return Result(frame, faces, tracked.ids), tracked.events

    def idle(self, now: float) -> list[TrackEvent]:
        """No frame at time `now`: faces cannot be seen, so their tracks end on time."""
        return self.tracker.update([], now).events

    def end_tracks(self, now: float) -> list[TrackEvent]:
        """End every open track (at shutdown)."""
        return self.tracker.close_all(now)

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels, in its score order."""
        return self.tracker.labels

    def tracks(self) -> list[TrackState]:
        """The open tracks with their steady emotion."""
        return [TrackState(t.id, self.tracker.emotion(t), t.confidence(), t.box) for t in self.tracker.tracks.values()]

    def close(self) -> None:
        """Release the model."""
        self.analyzer.classifier.close()
