"""What the web view's request threads share: the hub, the gate, the limits, the figures and the deadlines."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

from edge_fer.config import WebConfig
from edge_fer.web import metrics, pages
from edge_fer.web.auth import Gate
from edge_fer.web.feed import Feed
from edge_fer.web.stream import Hub

# Why a request or connection was refused, as /metrics counts them.
REFUSALS = ("connections", "streams", "event_clients", "timeout", "stalled", "malformed", "host", "origin", "login",
            "wrong_password", "throttled", "not_found", "tls")


class App:
    """What every request thread shares: config, feed, hub, gate, limits, counters and header deadlines."""

    def __init__(self, cfg: WebConfig, feed: Feed) -> None:
        self.cfg = cfg
        self.feed = feed
        self.hub = Hub(feed, cfg.fps, cfg.jpeg_quality)
        self.gate = Gate(cfg.password, cfg.session_hours * 3600)
        self.assets = pages.load()
        self.loopback = cfg.loopback
        self.scheme = "https" if cfg.tls else "http"
        self.connections = threading.BoundedSemaphore(cfg.max_connections)
        self.streams = threading.BoundedSemaphore(cfg.max_streams)
        self.feeds = threading.BoundedSemaphore(cfg.max_streams)
        self.figures: Counter[str] = Counter(stream_clients=0, event_clients=0, skipped=0)
        self.refused: Counter[str] = Counter(dict.fromkeys(REFUSALS, 0))
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}

    def count(self, figure: str, delta: int) -> None:
        """Add to one of the figures (stream_clients, event_clients, skipped)."""
        with self._lock:
            self.figures[figure] += delta

    def refuse(self, reason: str) -> None:
        """Count one refused request."""
        with self._lock:
            self.refused[reason] += 1

    def web_counts(self) -> metrics.WebCounts:
        """The server's figures for /metrics."""
        with self._lock:
            return metrics.WebCounts(self.figures["stream_clients"], self.figures["event_clients"], self.hub.encoded,
                                     self.figures["skipped"], dict(self.refused))

    def deadline(self, sock: socket.socket, seconds: float | None) -> None:
        """Close `sock` unless it is cleared within `seconds` (None clears it): a request's whole header, not each
        read, must arrive in time, so a client sending a byte a second cannot hold a connection."""
        with self._lock:
            if seconds is None:
                self._deadlines.pop(sock, None)
            else:
                self._deadlines[sock] = time.monotonic() + seconds

    def waiting(self, sock: socket.socket) -> bool:
        """True while `sock` has a deadline that has not passed."""
        with self._lock:
            return sock in self._deadlines

    def sweep(self) -> None:
        """Shut the connections whose deadline passed."""
        now = time.monotonic()
        with self._lock:
            late = [s for s, t in self._deadlines.items() if t < now]
            for s in late:
                del self._deadlines[s]
        for s in late:
            self.refuse("timeout")
            try:
                # The plain socket's shutdown, also under TLS: the reading thread sees the end of its input.
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except OSError:
                pass
