"""The web view's one worker: at web.fps it encodes the newest result once for every client, and wakes them."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import cv2

from edge_fer.vision.annotate import annotate
from edge_fer.web.feed import Feed
from edge_fer.web.niceness import yield_to_pipeline
from edge_fer.web.state import state_doc

log = logging.getLogger(__name__)

STATE_EVERY_SECONDS = 1.0  # the state is sent at least this often while nothing changes (camera down, no frames)


@dataclass(frozen=True)
class Picture:
    """One encoded picture: its number (counts encodes), the frame it shows, and its JPEG bytes."""

    number: int
    frame_no: int
    jpeg: bytes


def render(feed: Feed, quality: int) -> tuple[int, bytes] | None:
    """The newest result annotated as the window draws it (boxes, track ids, captions), as JPEG."""
    live, frame_no = feed.latest, feed.frame_no
    if live is None:
        return None
    result = live.result
    labels = {i: f"#{t}" for i, t in enumerate(result.track_ids)}
    image = annotate(result.frame.image, result.faces, labels, bars=False)  # the page draws the score bars
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        log.warning("the frame could not be encoded as JPEG")
        return None
    return frame_no, buf.tobytes()


class Hub:
    """Encodes at most web.fps pictures a second, only while someone watches; clients wait on `changed`."""

    def __init__(self, feed: Feed, fps: float, quality: int) -> None:
        self.feed = feed
        self.period = 1.0 / fps
        self.quality = quality
        self.changed = threading.Condition()
        self.picture: Picture | None = None
        self.state = self.state_json()
        self.state_no = 0
        self.viewers = 0  # stream clients now; with none, nothing is encoded
        self.listeners = 0  # event feed clients now; with none, no state is made
        self.encoded = 0
        self._encode_lock = threading.Lock()
        self._encoded_at = 0.0
        self._state_for = (-1, -1)
        self._state_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-hub", daemon=True)

    def start(self) -> Hub:
        """Begin the ticks."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the ticks and wake every waiting client so it can leave."""
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        self._thread.join(2)

    @property
    def stopping(self) -> bool:
        """True once the server is closing."""
        return self._stop.is_set()

    def watch(self, delta: int) -> None:
        """A stream client came (+1) or left (-1)."""
        with self.changed:
            self.viewers += delta

    def listen(self, delta: int) -> None:
        """An event feed client came (+1) or left (-1)."""
        with self.changed:
            self.listeners += delta

    def _run(self) -> None:
        yield_to_pipeline()
        next_t = time.monotonic()
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + self.period, time.monotonic())
            try:
                self.tick()
            except Exception:  # a bug here must not end the view for good: logged, and the next tick tries again
                log.exception("the web view's tick failed")

    def tick(self) -> None:
        """Encode the newest frame for the viewers, refresh the state, and wake the clients."""
        woke = False
        if self.viewers and self.fresh() is None:
            woke = self._encode() is not None
        now = time.monotonic()
        key = (self.feed.frame_no, self.feed.event_no)
        if self.listeners and (key != self._state_for or now - self._state_at >= STATE_EVERY_SECONDS):
            self.state = self.state_json()
            self._state_for, self._state_at = key, now
            self.state_no += 1
            woke = True
        if woke:
            with self.changed:
                self.changed.notify_all()

    def state_json(self) -> bytes:
        """The state now, as the event feed sends it."""
        return json.dumps(state_doc(self.feed, events=False), separators=(",", ":")).encode()

    def fresh(self) -> Picture | None:
        """The encoded picture if it shows the newest frame."""
        picture = self.picture
        return picture if picture is not None and picture.frame_no == self.feed.frame_no else None

    def snapshot(self) -> Picture | None:
        """The newest frame as JPEG: the one already encoded, else encoded now (at most once per web.fps period)."""
        picture = self.fresh()
        if picture is not None:
            return picture
        with self._encode_lock:
            picture = self.picture
            # Reused when one was encoded within the period, so requests in a loop cost no more than a stream.
            if picture is not None and time.monotonic() - self._encoded_at < self.period:
                return picture
            return self._encode_locked()

    def _encode(self) -> Picture | None:
        with self._encode_lock:
            return self._encode_locked()

    def _encode_locked(self) -> Picture | None:
        rendered = render(self.feed, self.quality)
        if rendered is None:
            return self.picture
        self.encoded += 1
        self._encoded_at = time.monotonic()
        self.picture = Picture(self.encoded, *rendered)
        return self.picture
