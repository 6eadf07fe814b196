"""The web view of a real daemon on a real video: state, snapshot, stream, event feed, metrics, and hostile clients."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.broker import Broker, free_port, until
from tests.conftest import ROOT, paste_faces, write_video

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

VIDEO_FPS = 10.0


def web_video(path: Path, clear_faces: dict[str, list[np.ndarray]]) -> Path:
    """A happy face for 1 s, then none for 1 s, with the frame's number in a corner so no two frames are alike."""
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    blank, _ = paste_faces([], size=180)
    frames = []
    for i, base in enumerate([happy] * 10 + [blank] * 10):
        frame = base.copy()
        cv2.putText(frame, f"{i:02d}", (560, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        frames.append(frame)
    return write_video(path, frames, fps=VIDEO_FPS)


@dataclass
class WebDaemon:
    """A running daemon with its web view."""

    proc: subprocess.Popen
    port: int
    errlog: Path
    config: Path

    @property
    def stderr(self) -> str:
        return self.errlog.read_text(errors="replace")

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """One request on its own connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{self.port}", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def metrics(self, auth: dict[str, str] | None = None) -> dict[str, float]:
        """/metrics parsed by Prometheus' own parser: each sample by its name and labels."""
        status, headers, body = self.request("GET", "/metrics", auth)
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


def web_config(path: Path, video: Path, broker_port: int, port: int, **web: object) -> Path:
    path.write_text(yaml.safe_dump({
        "camera": {"source": str(video), "loop": True, "file_fps": VIDEO_FPS},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "device_id": "webcam"},
        "tracking": {"max_missing_seconds": 0.3, "smoothing_seconds": 0.3, "switch_seconds": 0.3},
        "web": {"enabled": True, "listen": f"127.0.0.1:{port}", "fps": 5.0, "timeout_seconds": 2.0, **web},
    }))
    return path


def start_web_daemon(tmp: Path, config: Path, env: dict[str, str] | None = None) -> WebDaemon:
    errlog = tmp / "daemon.err"
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "DISPLAY")}
    proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "--config", str(config)],
                            env={**environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=errlog.open("w"))
    port = yaml.safe_load(config.read_text())["web"]["listen"].rsplit(":", 1)[1]
    return WebDaemon(proc, int(port), errlog, config)


def wait_healthy(d: WebDaemon, timeout: float = 60) -> None:
    def healthy() -> bool:
        assert d.proc.poll() is None, f"the daemon exited:\n{d.stderr[-3000:]}"
        try:
            return d.get("/healthz")[0] == 200
        except OSError:
            return False

    assert until(healthy, timeout), f"the web view never became healthy:\n{d.stderr[-3000:]}"


def stop(d: WebDaemon) -> str:
    """SIGTERM, wait, and the daemon's log (which must hold no traceback)."""
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(15)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
            pytest.fail(f"the daemon did not stop on SIGTERM:\n{d.stderr[-3000:]}")
    err = d.stderr
    assert "Traceback" not in err, err[-5000:]
    return err


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def video(tmp_path_factory, clear_faces) -> Path:
    return web_video(tmp_path_factory.mktemp("video") / "web.avi", clear_faces)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, broker: Broker, video: Path) -> Iterator[WebDaemon]:
    """The daemon on loopback (no login), with small limits so that the hostile test reaches them."""
    tmp = tmp_path_factory.mktemp("web")
    config = web_config(tmp / "c.yaml", video, broker.port, free_port(), max_connections=12, max_streams=4)
    d = start_web_daemon(tmp, config)
    try:
        wait_healthy(d)
        yield d
    finally:
        stop(d)


def wait_metric(d: WebDaemon, check: Callable[[dict[str, float]], bool], timeout: float = 30) -> dict[str, float]:
    """Scrape until `check` holds; the last scrape."""
    last: dict[str, float] = {}

    def ok() -> bool:
        nonlocal last
        last = d.metrics()
        return check(last)

    assert until(ok, timeout), f"metrics never satisfied the check: {last}"
    return last


def test_metrics_count_frames_events_latency_and_mqtt(daemon: WebDaemon) -> None:
    first = daemon.metrics()
    m = wait_metric(daemon, lambda m: m["edge_fer_frames_total"] > first["edge_fer_frames_total"]
                    and m["edge_fer_events_total{type=start}"] >= 2 and m["edge_fer_events_total{type=end}"] >= 1)
    assert m["edge_fer_info{device=webcam,version=0.1.0}"] == 1
    assert m["edge_fer_camera_state{state=ok}"] == 1
    assert sum(v for k, v in m.items() if k.startswith("edge_fer_camera_state{")) == 1
    assert m["edge_fer_mqtt_enabled"] == 1 and m["edge_fer_mqtt_connected"] == 1
    assert m["edge_fer_mqtt_reconnects_total"] == 0
    assert 0 < m["edge_fer_fps"] <= VIDEO_FPS * 1.5
    # A latency for each event a frame caused (start, change); an end is caused by time passing.
    caused = m["edge_fer_events_total{type=start}"] + m["edge_fer_events_total{type=change}"]
    assert m["edge_fer_event_latency_seconds_count"] == caused
    buckets = sorted((float(k.split("le=")[1].rstrip("}")), v) for k, v in m.items()
                     if k.startswith("edge_fer_event_latency_seconds_bucket"))
    assert buckets[-1] == (float("inf"), caused)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert 0 < m["edge_fer_event_latency_seconds_sum"] < caused  # each well under a second
    assert {"edge_fer_dropped_frames_total", "edge_fer_dropped_events_total", "edge_fer_faces",
            "edge_fer_web_stream_clients", "edge_fer_web_refused_total{reason=timeout}"} <= set(m)


def test_mqtt_reconnect_is_counted(daemon: WebDaemon, broker: Broker) -> None:
    before = wait_metric(daemon, lambda m: m["edge_fer_mqtt_connected"] == 1)
    broker.stop()
    wait_metric(daemon, lambda m: m["edge_fer_mqtt_connected"] == 0)
    broker.start()
    m = wait_metric(daemon, lambda m: m["edge_fer_mqtt_connected"] == 1, timeout=60)
    assert m["edge_fer_mqtt_reconnects_total"] == before["edge_fer_mqtt_reconnects_total"] + 1


def test_state_and_snapshot_show_the_face_in_view(daemon: WebDaemon) -> None:
    state: dict = {}

    def face_in_view() -> bool:
        nonlocal state
        status, headers, body = daemon.get("/api/state")
        assert status == 200 and headers["content-type"] == "application/json"
        state = json.loads(body)
        return bool(state["faces"])

    assert until(face_in_view, 30), state
    face = state["faces"][0]
    assert face["emotion"] == "happy" and face["confidence"] > 0.5 and isinstance(face["track_id"], int)
    assert len(face["scores"]) == 7 and abs(sum(face["scores"].values()) - 1) < 0.01
    assert state["camera"] == "ok" and state["mqtt"]["connected"] is True and state["device"] == "webcam"
    assert state["frame_size"] == [640, 480] and state["login"] is False
    assert all(e["type"] in ("start", "change", "end") for e in state["events"])
    assert state["colors"]["happy"].startswith("#")

    pictures = []
    for _ in range(2):
        frames = daemon.metrics()["edge_fer_frames_total"]
        # A snapshot is encoded at most web.fps times a second: wait out more than one period (2 frames).
        wait_metric(daemon, lambda m, f=frames: m["edge_fer_frames_total"] > f + 3)
        status, headers, body = daemon.get("/snapshot.jpg")
        assert status == 200 and headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape == (480, 640, 3)
        pictures.append(picture)
    assert np.abs(pictures[0].astype(int) - pictures[1]).max() > 50  # a newer frame: its number differs


def read_parts(resp: http.client.HTTPResponse, n: int) -> list[bytes]:
    """`n` JPEG parts of a multipart/x-mixed-replace answer."""
    parts = []
    while len(parts) < n:
        line = resp.fp.readline()
        assert line, "the stream ended"
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            assert resp.fp.readline() == b"\r\n"
            parts.append(resp.fp.read(length))
    return parts


def open_stream(d: WebDaemon, path: str, timeout: float = 10) -> tuple[http.client.HTTPConnection,
                                                                         http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    conn.request("GET", path, headers={"Host": f"localhost:{d.port}"})
    return conn, conn.getresponse()


def test_mjpeg_stream_sends_new_jpeg_pictures(daemon: WebDaemon) -> None:
    conn, resp = open_stream(daemon, "/stream.mjpg")
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
        parts = read_parts(resp, 3)
    finally:
        conn.close()
    pictures = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    assert all(p is not None and p.shape == (480, 640, 3) for p in pictures)
    assert len({p.tobytes() for p in pictures}) == 3  # each part a newer frame, none sent twice


def sse_messages(resp: http.client.HTTPResponse) -> Iterator[dict[str, str]]:
    """Each server-sent event as its fields (comments skipped)."""
    fields: dict[str, str] = {}
    while True:
        line = resp.fp.readline()
        assert line, "the event feed ended"
        line = line.decode().rstrip("\n")
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")


def test_event_feed_sends_state_and_each_track_event_once(daemon: WebDaemon) -> None:
    conn, resp = open_stream(daemon, "/events", timeout=20)
    try:
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        track = state = None
        for msg in sse_messages(resp):
            if msg.get("event") == "state":
                state = msg
            if msg.get("event") == "track" and json.loads(msg["data"])["type"] == "start":
                track = msg
            if track is not None and state is not None:
                break
    finally:
        conn.close()
    doc = json.loads(track["data"])
    assert doc["emotion"] == "happy" and doc["device"] == "webcam" and 0 < doc["latency_ms"] < 1000
    figures = json.loads(state["data"])
    assert figures["camera"] == "ok" and figures["device"] == "webcam" and "events" not in figures
    # A browser that reconnects names the last event it had: it gets only the ones after it.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=20)
    conn.request("GET", "/events", headers={"Host": f"localhost:{daemon.port}", "Last-Event-ID": track["id"]})
    resp = conn.getresponse()
    try:
        nxt = next(m for m in sse_messages(resp) if m.get("event") == "track")
    finally:
        conn.close()
    assert int(nxt["id"]) == int(track["id"]) + 1


def test_cross_origin_and_foreign_host_names_are_refused(daemon: WebDaemon) -> None:
    # A page elsewhere whose DNS name now points at 127.0.0.1 sends its own Host.
    assert daemon.get("/api/state", Host="evil.example:8080")[0] == 403
    assert daemon.get("/api/state", Origin="http://evil.example")[0] == 403
    assert daemon.get("/stream.mjpg", Sec_Fetch_Site="cross-site", Sec_Fetch_Dest="image",
                      Sec_Fetch_Mode="no-cors")[0] == 403
    assert daemon.get("/events", Sec_Fetch_Site="same-site", Sec_Fetch_Dest="empty", Sec_Fetch_Mode="cors")[0] == 403
    # Refused with its body unread: the connection closes, so the body is never read as the next request.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    try:
        conn.request("POST", "/login", b"password=x", {"Origin": "http://evil.example",
                                                       "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        assert resp.status == 403 and resp.getheader("Connection") == "close"
        resp.read()
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    # A link followed from another site opens the page; its own requests are then same-origin.
    status, headers, body = daemon.get("/", Sec_Fetch_Site="cross-site", Sec_Fetch_Dest="document",
                                       Sec_Fetch_Mode="navigate")
    assert status == 200 and b"<img id=\"live\"" in body
    assert daemon.get("/api/state", Origin=f"http://127.0.0.1:{daemon.port}", Sec_Fetch_Site="same-origin")[0] == 200
    assert "access-control-allow-origin" not in headers
    assert headers["cross-origin-resource-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_reload_keeps_the_view_and_its_counts(daemon: WebDaemon) -> None:
    before = daemon.metrics()
    run_id = json.loads(daemon.get("/api/state")[2])["run_id"]
    daemon.proc.send_signal(signal.SIGHUP)
    assert until(lambda: json.loads(daemon.get("/api/state")[2])["run_id"] != run_id, 30), "no new run"
    after = wait_metric(daemon, lambda m: m["edge_fer_frames_total"] > before["edge_fer_frames_total"] + 5)
    # Counters run on across the pipeline's restart (Prometheus would read a reset as a restart of the process).
    assert after["edge_fer_events_total{type=start}"] >= before["edge_fer_events_total{type=start}"]
    assert daemon.proc.poll() is None and "configuration reloaded" in daemon.stderr


GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello on the plain port
    b"GET /\r\n\r\n",  # HTTP/0.9
    b"BREW /pot HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nX: " + b"b" * 70_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b"GET /%ff%fe/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
    b"GET /api/state HTTP/1.1\r\nHost: \x00\xff\r\n\r\n",
    b"\x00" * 1000 + b"\r\n\r\n",
    b"GET /metrics HTTP/9.9\r\n\r\n",
]


def answer_to(port: int, payload: bytes) -> bytes:
    """The status line the server answers `payload` with (b"" when it closes without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            return s.makefile("rb").readline()
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_hostile_clients_leave_the_pipeline_and_the_other_streams_alone(daemon: WebDaemon) -> None:
    for payload in GARBAGE:
        line = answer_to(daemon.port, payload)
        # Refused as the client's mistake (4xx; 501 and 505 for a method or version it does not speak), never as
        # a failure of the server's (500, 503).
        assert line == b"" or line.split()[1][:1] == b"4" or line.split()[1] in (b"501", b"505"), (payload[:40], line)

    start = wait_metric(daemon, lambda m: m["edge_fer_web_stream_clients"] == 0)
    # One client that reads nothing: the server's writes to it fill its buffers, then block, then time out.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", daemon.port))
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
    # Another that reads every part as it comes.
    conn, good = open_stream(daemon, "/stream.mjpg")
    received = 0
    done = threading.Event()

    def read() -> None:
        nonlocal received
        try:
            while not done.is_set():
                read_parts(good, 1)
                received += 1
        except (OSError, ValueError, AttributeError, AssertionError):  # the test closed it under the reader
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Clients that send their request a byte at a time, and connections that send nothing.
    slow = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(2)]
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(4)]
    stop_slow = threading.Event()

    def drip() -> None:
        request = b"GET /api/state HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for i in range(len(request)):
            if stop_slow.wait(0.3):
                return
            for s in slow:
                try:
                    s.send(request[i:i + 1])
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        assert until(lambda: received >= 1, 20), "the reading client got no picture"
        base = wait_metric(daemon, lambda m: m["edge_fer_web_stream_clients"] == 2)
        parts0, encoded0 = received, base["edge_fer_web_encoded_frames_total"]
        taken0 = base["edge_fer_frames_total"] + base["edge_fer_dropped_frames_total"]
        # 60 frames delivered by the camera while they are all at it, until the slow and the silent connections
        # are cut at their deadline and the stalled client is let go.
        end = wait_metric(daemon, lambda m: m["edge_fer_frames_total"] + m["edge_fer_dropped_frames_total"]
                          >= taken0 + 60 and m["edge_fer_web_refused_total{reason=timeout}"]
                          >= start["edge_fer_web_refused_total{reason=timeout}"] + 6
                          and m["edge_fer_web_refused_total{reason=stalled}"]
                          > start["edge_fer_web_refused_total{reason=stalled}"], timeout=60)
        parts1, encoded1 = received, end["edge_fer_web_encoded_frames_total"]
    finally:
        done.set()
        stop_slow.set()
        good.close()
        conn.close()
        for s in [stalled, *slow, *idle]:
            s.close()
    # The pipeline took every frame the camera gave it: no client slowed it down.
    assert end["edge_fer_dropped_frames_total"] == base["edge_fer_dropped_frames_total"]
    # The reading client got every picture encoded meanwhile (give or take the one in flight at each end).
    assert encoded1 - encoded0 >= 10 and parts1 - parts0 >= encoded1 - encoded0 - 2
    # The stalled client lost pictures for itself only, and was let go once a write to it had waited its timeout.
    m = wait_metric(daemon, lambda m: m["edge_fer_web_stream_clients"] == 0)
    assert m["edge_fer_web_refused_total{reason=stalled}"] == start["edge_fer_web_refused_total{reason=stalled}"] + 1
    assert m["edge_fer_web_skipped_frames_total"] > start["edge_fer_web_skipped_frames_total"]
    assert daemon.get("/healthz")[0] == 200
    assert "Traceback" not in daemon.stderr


def test_connections_past_the_limit_are_closed_and_the_view_recovers(daemon: WebDaemon) -> None:
    before = daemon.metrics()
    flood = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(20)]  # the limit is 12
    try:
        closed = 0
        for s in flood:
            s.settimeout(5)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 8  # the ones over the limit at once, the rest once their request did not come in time
    finally:
        for s in flood:
            s.close()
    m = wait_metric(daemon, lambda m: m["edge_fer_web_refused_total{reason=connections}"]
                    >= before["edge_fer_web_refused_total{reason=connections}"] + 8)
    assert m["edge_fer_dropped_frames_total"] == before["edge_fer_dropped_frames_total"]


@pytest.fixture(scope="module")
def locked(tmp_path_factory, broker: Broker, video: Path) -> Iterator[WebDaemon]:
    """The daemon on every address, with its password in a file."""
    tmp = tmp_path_factory.mktemp("locked")
    secret = tmp / "web-password"
    secret.write_text("correct horse battery\n")
    config = web_config(tmp / "c.yaml", video, broker.port, free_port(), password_file=str(secret))
    text = config.read_text().replace("127.0.0.1:", "0.0.0.0:")
    config.write_text(text)
    d = start_web_daemon(tmp, config)
    try:
        wait_healthy(d)
        yield d
    finally:
        err = stop(d)
        assert "correct horse" not in err


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ha:{password}".encode()).decode()}


def test_off_loopback_every_view_needs_the_password(locked: WebDaemon) -> None:
    for path in ("/api/state", "/snapshot.jpg", "/stream.mjpg", "/events", "/metrics"):
        status, headers, _ = locked.get(path)
        assert status == 401 and headers["www-authenticate"] == 'Basic realm="edge-fer"', path
    # A browser opening the page is sent to the login form; the page's own requests get no password dialog.
    status, headers, _ = locked.get("/", Sec_Fetch_Dest="document", Sec_Fetch_Mode="navigate")
    assert status == 303 and headers["location"] == "login"
    status, headers, _ = locked.get("/api/state", Sec_Fetch_Dest="empty", Sec_Fetch_Mode="cors",
                                    Sec_Fetch_Site="same-origin")
    assert status == 401 and "www-authenticate" not in headers
    assert locked.get("/healthz")[0] == 200 and locked.get("/login")[0] == 200
    # Home Assistant's MJPEG camera (Basic) and Prometheus (Basic or a bearer token).
    assert locked.request("GET", "/api/state", basic("correct horse battery"))[0] == 200
    assert locked.metrics({"Authorization": "Bearer correct horse battery"})["edge_fer_frames_total"] > 0
    assert locked.request("GET", "/api/state", basic("wrong"))[0] == 401


def test_login_form_gives_a_session_that_logout_ends(locked: WebDaemon) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = locked.request("POST", "/login", form, b"password=nope")
    assert status == 401 and b"Wrong password." in body and "set-cookie" not in headers
    status, headers, _ = locked.request("POST", "/login", form, b"password=correct+horse+battery")
    assert status == 303 and headers["location"] == "./"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    session = {"Cookie": cookie.split(";")[0]}
    status, _, body = locked.request("GET", "/api/state", session)
    assert status == 200 and json.loads(body)["login"] is True
    assert locked.request("POST", "/logout", {**form, **session}, b"")[0] == 303
    assert locked.request("GET", "/api/state", session)[0] == 401


def test_guessing_is_throttled(locked: WebDaemon) -> None:
    # Runs last for this daemon: after it, this address must wait a minute.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses = [locked.request("POST", "/login", form, b"password=guess%d" % i)[0] for i in range(8)]
    assert 429 in statuses and statuses[-1] == 429
    # Even the right password waits now, and nothing of the guesses reached the log.
    assert locked.request("GET", "/api/state", basic("correct horse battery"))[0] == 429
    assert "guess" not in locked.stderr and "wrong password from 127.0.0.1" in locked.stderr


def test_an_address_in_use_is_one_line_and_exit_4(tmp_path: Path, broker: Broker, video: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = start_web_daemon(tmp_path, web_config(tmp_path / "c.yaml", video, broker.port, port))
        assert d.proc.wait(60) == 4
    err = d.stderr
    assert f"web.listen 127.0.0.1:{port}: cannot listen (Address already in use)" in err
    assert "Traceback" not in err
