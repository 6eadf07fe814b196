"""The daemon around the pipeline: capture, publishing, state messages, figures, watchdog pings and STATUS lines."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_fer.vision.analyze import Analyzer
from edge_fer.live.capture import CameraState, Capture
from edge_fer.config import Config
from edge_fer.messaging.events import EventFactory, state_doc
from edge_fer.live.pipeline import Pipeline
from edge_fer.messaging.publisher import Publisher, make_publisher
from edge_fer.live.sdnotify import Notifier
from edge_fer.types import Live, TrackEvent

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Running figures for state messages and STATUS=."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    fps: float = 0.0
    _window: deque[float] = field(default_factory=deque)

    def tick(self, now: float) -> None:
        """Count one processed frame; fps over the last two seconds."""
        self.frames += 1
        self._window.append(now)
        while now - self._window[0] > 2.0:
            self._window.popleft()
        span = self._window[-1] - self._window[0] if len(self._window) > 1 else 0.0
        self.fps = (len(self._window) - 1) / span if span > 0 else 0.0


class Daemon:
    """Runs the pipeline until `stop` is set (by a signal, the window, or the end of a video file)."""

    def __init__(self, cfg: Config, stop: threading.Event, notifier: Notifier, on_ready: Callable[[str], object],
                 analyzer: Analyzer | None = None) -> None:
        self.cfg = cfg
        self.stop = stop
        self.pipeline = Pipeline(cfg, analyzer)
        self.notifier = notifier  # watchdog pings and STATUS lines only: the process's life is its owner's to tell
        self.on_ready = on_ready  # the first frame: the owner says READY=1, at start-up and after a reload
        self.events = EventFactory(cfg.mqtt.device_id)
        self.stats = Stats()
        self.latest: Live | None = None
        self._last_state = 0.0
        self._ready = False

    def _make_publisher(self) -> Publisher:
        return make_publisher(self.cfg, self.pipeline.tracker.labels)

    def _send(self, publisher: Publisher, events: list[TrackEvent], captured: float | None = None) -> None:
        for e in events:
            doc = self.events.event(e, self.pipeline.frame_size, captured if e.type != "end" else None)
            log.info("track %d %s: %s %.2f", e.track_id, e.type, e.emotion, e.confidence)
            publisher.publish_event(doc)

    def _maybe_state(self, capture: Capture, publisher: Publisher, now: float, changed: bool) -> None:
        if now - self._last_state < self.cfg.mqtt.state_interval_seconds and not changed:
            return
        doc = state_doc(self.cfg.mqtt.device_id, self.events.run_id, capture.state, self.pipeline.tracks(),
                        self.stats.fps, self.stats.frames, capture.dropped, publisher.dropped,
                        now - self.stats.started)
        self._last_state = now
        publisher.publish_state(doc)
        self.notifier.status(f"{doc['fps']:.1f} fps, {doc['faces']} faces, camera {doc['camera']}")

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        publisher = self._make_publisher().start()
        capture = Capture(self.cfg.camera)
        try:
            with capture:
                self._loop(capture, publisher)
        finally:
            self.shutdown(capture, publisher)
        return 0

    def _loop(self, capture: Capture, publisher: Publisher) -> None:
        log.info("running: source %s, device %s", self.cfg.camera.source, self.cfg.mqtt.device_id)
        camera_was = ""
        while not self.stop.is_set():
            frame = capture.latest(timeout=0.25)
            now = time.monotonic()
            if frame is not None or capture.state == CameraState.DOWN:
                # Fed by progress only (a frame, or a camera being retried): a capture stuck in a read, or a
                # pipeline stuck on a frame, starves the watchdog and systemd restarts the service.
                self.notifier.watchdog()
            if frame is None:
                if capture.state == CameraState.ENDED:
                    log.info("end of the video file: stopping")
                    return
                # No frames: faces cannot be seen, so their tracks end on time.
                self._send(publisher, self.pipeline.idle(now))
                self._maybe_state(capture, publisher, now, capture.state != camera_was)
                camera_was = capture.state
                continue
            result, events = self.pipeline.step(frame)
            self.stats.tick(now)
            self._send(publisher, events, frame.wall)
            self.latest = Live(result, self.stats.fps, capture.dropped, capture.state)
            if not self._ready:
                self._ready = True
                self.on_ready(f"first frame processed from {self.cfg.camera.source}")
                log.info("first frame processed (%dx%d)", *result.frame_size)
            self._maybe_state(capture, publisher, now, bool(events) or capture.state != camera_was)
            camera_was = capture.state

    def shutdown(self, capture: Capture, publisher: Publisher) -> None:
        """Stop in order: capture, then the pipeline's open tracks, then MQTT (offline before disconnect)."""
        capture.close()  # a no-op after the `with`: a capture stuck in a read is waited for once
        self._send(publisher, self.pipeline.end_tracks(time.monotonic()))
        self._maybe_state(capture, publisher, time.monotonic(), True)
        publisher.stop()
        self.pipeline.close()
        log.info("stopped after %d frames", self.stats.frames)

