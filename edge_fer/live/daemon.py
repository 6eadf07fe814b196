"""The daemon around the pipeline: capture, publishing, state messages, figures, watchdog pings and STATUS lines."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_fer.config import Config
from edge_fer.live.capture import CameraState, Capture
from edge_fer.live.pipeline import Pipeline
from edge_fer.live.sdnotify import Notifier
from edge_fer.live.snapshot import Snapshots
from edge_fer.messaging.events import EventFactory
from edge_fer.messaging.homeassistant import StateGate
from edge_fer.messaging.publisher import Publisher, make_publisher
from edge_fer.types import EventType, Frame, Live, TrackEvent
from edge_fer.vision.analyze import Analyzer
from edge_fer.web.feed import Feed

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
                 analyzer: Analyzer | None = None, web: Feed | None = None) -> None:
        self.cfg = cfg
        self.stop = stop
        self.pipeline = Pipeline(cfg, analyzer)
        self.notifier = notifier  # watchdog pings and STATUS lines only: the process's life is its owner's to tell
        self.on_ready = on_ready  # the first frame: the owner says READY=1, at start-up and after a reload
        self.events = EventFactory(cfg.mqtt.device_id, self.pipeline.labels)
        self.stats = Stats()
        self.latest: Live | None = None
        self.web = web or Feed()  # the web view's one-slot holder and counts: a few assignments per frame
        self.capture: Capture | None = None  # the running one, whose state the window shows while no frame comes
        self.gate = StateGate(cfg.mqtt.state_interval_seconds, cfg.mqtt.state_min_interval_seconds)
        self._snapshots: Snapshots | None = None
        self._ready = False

    def _make_publisher(self) -> Publisher:
        return make_publisher(self.cfg, self.pipeline.labels)

    def _send(self, publisher: Publisher, events: list[TrackEvent], frame: Frame | None = None) -> None:
        for e in events:
            caused = frame if e.type is not EventType.END else None
            doc = self.events.event(e, self.pipeline.frame_size, caused.wall if caused else None)
            log.info("track %d %s: %s %.2f", e.track_id, e.type, e.emotion, e.confidence)
            publisher.publish_event(doc)
            self.web.event(doc, time.monotonic() - caused.t if caused else None)

    def _maybe_state(self, capture: Capture, publisher: Publisher, now: float, final: bool = False) -> None:
        """The state, when it shows a change or the keep-alive is due (the gate says); always the final one."""
        state = self.events.state(camera=capture.state, tracks=self.pipeline.tracks(), fps=self.stats.fps,
                                  frames=self.stats.frames, dropped_frames=capture.dropped,
                                  dropped_events=publisher.dropped, uptime=now - self.stats.started)
        if not (final or self.gate.due(state, now)):
            return
        self.gate.sent(state, now)
        publisher.publish_state(state)
        self.notifier.status(f"{state.fps:.1f} fps, {state.faces} faces, camera {state.camera}")

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        publisher = self._make_publisher().start()
        capture = self.capture = Capture(self.cfg.camera)
        self.web.attach(capture, publisher, self.events.run_id, self.cfg.mqtt.device_id)
        if self.cfg.mqtt.enabled and self.cfg.mqtt.snapshot_seconds > 0:
            self._snapshots = Snapshots(self.web, publisher, self.cfg.mqtt.snapshot_seconds).start()
        try:
            with capture:
                self._loop(capture, publisher)
        finally:
            self.shutdown(capture, publisher)
        return 0

    def _loop(self, capture: Capture, publisher: Publisher) -> None:
        log.info("running: source %s, device %s", self.cfg.camera.source, self.cfg.mqtt.device_id)
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
                self._maybe_state(capture, publisher, now)
                continue
            result, events = self.pipeline.step(frame)
            self.stats.tick(now)
            self._send(publisher, events, frame)
            self.latest = Live(result, self.stats.fps, capture.dropped, capture.state)
            self.web.frame(self.latest)
            if not self._ready:
                self._ready = True
                self.on_ready(f"first frame processed from {self.cfg.camera.source}")
                log.info("first frame processed (%dx%d)", *result.frame_size)
            self._maybe_state(capture, publisher, now)

    def shutdown(self, capture: Capture, publisher: Publisher) -> None:
        """Stop in order: capture, then the pipeline's open tracks, then MQTT (offline before disconnect)."""
        capture.close()  # a no-op after the `with`: a capture stuck in a read is waited for once
        self._send(publisher, self.pipeline.end_tracks(time.monotonic()))
        self._maybe_state(capture, publisher, time.monotonic(), final=True)
        if self._snapshots is not None:
            self._snapshots.stop()
        publisher.stop()
        self.pipeline.close()
        log.info("stopped after %d frames", self.stats.frames)

