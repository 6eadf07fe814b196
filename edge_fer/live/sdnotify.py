"""systemd's notify protocol: datagrams to $NOTIFY_SOCKET (READY, RELOADING, WATCHDOG, STATUS, STOPPING)."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Send sd_notify messages; a no-op outside systemd (no NOTIFY_SOCKET)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # Ping at twice the rate systemd needs, and at least once a second without a watchdog.
        self.watchdog_interval = usec / 2e6 if usec else 1.0
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        """True when running under a supervisor that listens."""
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send KEY=VALUE lines in one datagram; False if there is nobody to tell or it failed."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
            return True
        except OSError as e:
            log.warning("sd_notify to %s failed: %s", self._address.replace("\0", "@"), e)
            return False

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """Tell systemd a reload has begun; the next READY=1 ends it."""
        # systemd 253+ takes RELOADING=1 only with the time it was sent, to match it to the reload it asked for.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog, at most once per interval."""
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by systemctl status."""
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        """Tell systemd shutdown has begun (the process is leaving: never on a reload)."""
        return self.send("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
