"""A network camera that goes silent: the real daemon, a real loopback server, a real broker and notify socket."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import cv2

from tests.broker import Broker, Subscriber, until
from tests.conftest import paste_faces
from tests.test_daemon import NotifySocket, broker, camera_states, finish, pytestmark, running, write_config  # noqa: F401


class SilentServer:
    """Accepts TCP connections and never sends a byte; the first `frames` JPEGs go out as MJPEG first, if given."""

    def __init__(self, jpeg: bytes = b"", frames: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.jpeg, self.frames = jpeg, frames
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if len(self.conns) == 1 and self.frames:
                threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        conn.recv(4096)  # the request
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
        for _ in range(self.frames):
            conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(self.jpeg)
                         + self.jpeg + b"\r\n")
            self._stop.wait(1 / 15)
        # Then silence, with the connection held open: the stream stalls rather than ends.

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def _states(sub: Subscriber) -> list[str]:
    return [m.json()["camera"] for m in sub.on("/state")]


def test_silent_stream_stalls_without_pings_and_sigterm_exits_promptly(tmp_path: Path, broker: Broker) -> None:
    server = SilentServer()
    sub = Subscriber(broker.port)
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{server.port}/cam.mjpg", broker.port)
    with running(config, notify, watchdog_usec=200_000, closing=(server.close, notify.close, sub.close)) as proc:
        assert sub.wait_for(lambda s: "stalled" in _states(s), 30), _states(sub)
        # Stuck in the open: no frame and not down, so nothing feeds the watchdog.
        assert "WATCHDOG=1" not in notify.messages
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        took = time.monotonic() - t0
    assert code == 0 and took < 5, (code, took, err[-2000:])
    assert err.count(": stalled (no frame for") == 1, err[-2000:]


def test_stream_that_stalls_ends_the_open_track_and_is_retried(tmp_path: Path, broker: Broker, clear_faces) -> None:
    frame, _ = paste_faces([clear_faces["happy"][0]], size=180)
    server = SilentServer(cv2.imencode(".jpg", frame)[1].tobytes(), frames=45)
    sub = Subscriber(broker.port)
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{server.port}/cam.mjpg", broker.port,
                          camera={"reopen_max_seconds": 1.0})
    with running(config, notify, watchdog_usec=200_000, closing=(server.close, notify.close, sub.close)) as proc:
        assert sub.wait_for(lambda s: [m.json()["type"] for m in s.on("/events")][:1] == ["start"], 30)
        # The face was in view when the stream went silent: its track ends on time, while the daemon runs.
        assert sub.wait_for(lambda s: [m.json()["type"] for m in s.on("/events")] == ["start", "end"], 15)
        assert sub.wait_for(lambda s: "stalled" in _states(s), 15), _states(sub)
        pings = notify.messages.count("WATCHDOG=1")
        # FFmpeg gives up on the silent read; the camera is down and retried, and that feeds the watchdog again.
        assert sub.wait_for(lambda s: "down" in _states(s)[_states(s).index("stalled"):], 20), _states(sub)
        assert until(lambda: notify.messages.count("WATCHDOG=1") > pings, 5)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
    assert code == 0, err[-2000:]
    states = camera_states(err)
    assert states[:3] == ["ok", "stalled", "down"], states
