"""Home Assistant's image entity: every mqtt.snapshot_seconds, the newest annotated frame as JPEG, on its own thread."""

from __future__ import annotations

import logging
import threading

from edge_fer.messaging.publisher import Publisher
from edge_fer.web.feed import Feed
from edge_fer.web.stream import render

log = logging.getLogger(__name__)

QUALITY = 75  # a dashboard tile: the web view's default quality, about 40 KB at 640x480


class Snapshots:
    """Sends the newest frame the daemon processed, drawn as the web view draws it, once per period; the same frame
    is never sent twice (a camera that stopped gives no new pictures, and Home Assistant no new rows)."""

    def __init__(self, feed: Feed, publisher: Publisher, seconds: float) -> None:
        self.feed = feed
        self.publisher = publisher
        self.seconds = seconds
        self.sent = 0
        self._last_frame = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ha-snapshots", daemon=True)

    def start(self) -> Snapshots:
        """Begin; the first picture goes one period after the start."""
        self._thread.start()
        return self

    def _run(self) -> None:
        # Encoding here, never on the pipeline's thread: a JPEG costs milliseconds on a Pi.
        while not self._stop.wait(self.seconds):
            picture = render(self.feed, QUALITY)
            if picture is None or picture[0] == self._last_frame:
                continue
            self._last_frame, jpeg = picture
            self.publisher.publish_snapshot(jpeg)
            self.sent += 1

    def stop(self) -> None:
        """End the thread (a picture being encoded is finished first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
