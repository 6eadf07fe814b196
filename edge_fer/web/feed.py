"""What the daemon hands the web view: the newest result in a one-slot holder, its events, and running counts.

Only the pipeline's thread writes here, each call a few assignments (no lock, no wait, no I/O); the web's
threads read whatever is newest."""

from __future__ import annotations

import enum
import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edge_fer.messaging.connection import ConnectionState
from edge_fer.messaging.contract import Event
from edge_fer.messaging.publisher import Publisher
from edge_fer.types import Live

# Capture-to-event latency buckets (seconds): fine below the 50 ms target, coarse above it.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
EVENT_TYPES = ("start", "change", "end")
RING = 256  # events kept for the page and for event-feed clients that fall behind


class CameraView(Protocol):
    """What the feed reads of the capture."""

    @property
    def state(self) -> str:
        """The capture's state (CameraState is a str enum)."""

    @property
    def dropped(self) -> int:
        """Frames the pipeline was too busy to take."""


@runtime_checkable
class MqttLink(Protocol):
    """A publisher that counts its connections (the MQTT one; the null publisher has none)."""

    connections: int  # successful ones: more than one is a reconnect
    failed_attempts: int


class Histogram:
    """Counts of observations per bucket, their sum and count (Prometheus' histogram)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        self._counts[next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, then all of them (the +Inf bucket)."""
        return list(itertools.accumulate(list(self._counts)))


@dataclass(frozen=True)
class Counts:
    """The running counts at one moment, summed over every pipeline run of this process."""

    frames: int
    dropped_frames: int
    dropped_events: int
    events: dict[str, int]
    mqtt_state: ConnectionState
    mqtt_reconnects: int
    mqtt_failed_connects: int


class Feed:
    """The daemon's side of the web view; lives as long as the process, across reloads."""

    def __init__(self, device: str = "") -> None:
        self.device = device
        self.run_id = ""
        self.started = time.monotonic()
        self.latest: Live | None = None  # the one slot: replaced, never queued
        self.frame_no = 0  # counts results handed over, so a reader knows a new one from the one it has
        self.event_no = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self._recent: deque[tuple[int, Event, float | None]] = deque(maxlen=RING)
        self._events = dict.fromkeys(EVENT_TYPES, 0)
        self._camera: CameraView | None = None
        self._publisher: Publisher | None = None
        self._base = (0, 0, 0, 0)  # dropped frames and events, reconnects, failed connects of the runs before

    def attach(self, camera: CameraView, publisher: Publisher, run_id: str, device: str) -> None:
        """A pipeline run begins with its own capture and publisher; their counts add to the earlier runs'."""
        run = self._run_counts()
        self._base = (self._base[0] + run[0], self._base[1] + run[1], self._base[2] + run[2], self._base[3] + run[3])
        self._camera, self._publisher = camera, publisher
        self.run_id, self.device = run_id, device

    def _run_counts(self) -> tuple[int, int, int, int]:
        """This run's dropped frames and events, reconnects and failed connects."""
        link = self._publisher
        reconnects = failed = 0
        if isinstance(link, MqttLink):
            reconnects, failed = max(0, link.connections - 1), link.failed_attempts
        return (self._camera.dropped if self._camera else 0, link.dropped if link else 0, reconnects, failed)

    def frame(self, live: Live) -> None:
        """A processed frame: it replaces the one in the slot."""
        self.latest = live
        self.frame_no += 1

    def event(self, event: Event, latency: float | None) -> None:
        """A track event as published; `latency` from its frame's capture, None for an event no frame caused."""
        if latency is not None:
            self.latency.observe(latency)
        self._recent.append((self.event_no + 1, event, latency))
        kind = str(event.type)
        self._events[kind] = self._events.get(kind, 0) + 1
        self.event_no += 1  # last: a reader that sees the number finds the event

    def events_after(self, seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The kept events numbered above `seq`, oldest first, as JSON with their latency."""
        for n, event, latency in self._recent.copy():
            if n > seq:
                doc: dict[str, Any] = event.to_json()
                if latency is not None:
                    doc["latency_ms"] = round(latency * 1000, 1)
                yield n, doc

    @property
    def camera(self) -> str:
        """The camera's state, or 'starting' before the first run."""
        return str(self._camera.state) if self._camera else "starting"

    @property
    def camera_states(self) -> list[str]:
        """Every state the camera can be in (for the metrics' state set)."""
        state = self._camera.state if self._camera else None
        members: list[str] = [str(s) for s in type(state)] if isinstance(state, enum.Enum) else []
        return members or [self.camera]

    def counts(self) -> Counts:
        """The counts now."""
        run = self._run_counts()
        frames, events, reconnects, failed = (a + b for a, b in zip(self._base, run))
        state = self._publisher.state if self._publisher else ConnectionState.CONNECTING
        return Counts(self.frame_no, frames, events, dict(self._events), state, reconnects, failed)

