"""The daemon as systemd runs it: a real subprocess, a real mosquitto, a real notify socket."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.broker import Broker, Subscriber, free_port, until
from tests.conftest import ROOT, paste_faces, write_video
from tests.test_overlay import xvfb  # noqa: F401 (the X display for the window's case)

EVENT_KEYS = {"type", "device", "track_id", "emotion", "confidence", "scores", "box", "frame_size", "ts", "seq"}

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; it notes each sender's PID, as systemd does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except OSError:
                continue
            self.pids += [struct.unpack("3i", cred)[0] for level, kind, cred in ancillary
                          if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)]
            self.messages.append(data.decode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


LIFECYCLE = {"READY=1", "RELOADING=1", "STOPPING=1"}


def lifecycle(notify: NotifySocket) -> list[list[str]]:
    """The datagrams about the process's life (not watchdog pings or STATUS alone), each as its lines."""
    return [lines for lines in (m.splitlines() for m in list(notify.messages)) if LIFECYCLE & set(lines)]


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def write_config(path: Path, source: Path | str, port: int, **extra: dict) -> Path:
    sections = {
        "camera": {"source": str(source), "fps": 15.0},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "testcam", "state_interval_seconds": 0.5},
        "tracking": {"max_missing_seconds": 0.4, "smoothing_seconds": 0.3, "switch_seconds": 0.3},
    }
    for section, keys in extra.items():
        sections.setdefault(section, {}).update(keys)
    import yaml

    path.write_text(yaml.safe_dump(sections))
    return path


def start_daemon(config: Path, notify: NotifySocket | None = None, watchdog_usec: int = 0,
                 display: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    if notify:
        env["NOTIFY_SOCKET"] = str(notify.path)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    args = ["--config", str(config)]
    if display:  # the same service with its window on this X display
        env["DISPLAY"] = display
        args.append("--display")
    return subprocess.Popen([sys.executable, "-m", "edge_fer", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def running(config: Path, notify: NotifySocket | None = None, watchdog_usec: int = 0, display: str = "",
            closing: tuple[Callable[[], object], ...] = ()) -> Iterator[subprocess.Popen]:
    """The daemon on `config`; killed if it is still running at the end, then each of `closing` called."""
    proc = start_daemon(config, notify, watchdog_usec, display)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        for close in closing:
            close()


def camera_states(err: str) -> list[str]:
    """The camera states the daemon logged, in order."""
    return [line.rsplit(": ", 1)[-1].split(" ")[0] for line in err.splitlines()
            if "edge_fer.live.capture: camera" in line]


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"daemon did not stop within {timeout}s:\n{err[-3000:]}")
    return proc.returncode, err


def test_video_to_mqtt_events_state_discovery_and_notify(tmp_path: Path, broker: Broker, face_video: Path) -> None:
    sub = Subscriber(broker.port)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        # display.enabled without a display: the daemon runs headless and says so.
        config = write_config(tmp_path / "c.yaml", face_video, broker.port, display={"enabled": True})
        proc = start_daemon(config, notify, watchdog_usec=400_000)
        code, err = finish(proc, 60)  # the video is 5.5 s; the daemon stops at its end
        assert code == 0, err
        assert "no display here: running headless" in err
        assert "Traceback" not in err
        sub.wait_for(lambda s: any(m.payload == b"offline" for m in s.on("/availability")), 5)
    finally:
        notify.close()
        sub.close()

    availability = [m.payload.decode() for m in sub.on("edge_fer/testcam/availability")]
    assert availability[0] == "online" and availability[-1] == "offline"
    events = [m.json() for m in sub.on("edge_fer/testcam/events")]
    assert [(e["type"], e["emotion"]) for e in events] == [("start", "happy"), ("change", "surprise"),
                                                            ("end", "surprise")]
    for e in events:
        assert EVENT_KEYS <= set(e) and e["device"] == "testcam" and e["frame_size"] == [640, 480]
        assert len(e["scores"]) == 7 and e["ts"].endswith("Z")
    assert [e["seq"] for e in events] == [1, 2, 3] and len({e["track_id"] for e in events}) == 1
    assert 1.0 < events[-1]["duration"] < 5.0

    states = [m.json() for m in sub.on("edge_fer/testcam/state")]
    assert any(s["faces"] == 1 and s["dominant_emotion"] in ("happy", "surprise") for s in states)
    assert states[-1]["faces"] == 0 and states[-1]["frames"] > 40
    assert all(m.retain is False for m in sub.on("/events"))
    discovery = sub.on("homeassistant/device/edge_fer_testcam/config")
    assert discovery[0].json()["availability_topic"] == "edge_fer/testcam/availability"

    msgs = notify.messages
    ready = next(i for i, m in enumerate(msgs) if "READY=1" in m)
    assert any(m == "WATCHDOG=1" for m in msgs[ready:])
    assert any(m.startswith("STATUS=") and "fps" in m for m in msgs)
    assert [lines[0] for lines in lifecycle(notify)] == ["READY=1", "STOPPING=1"]  # the end of the file: once


def test_sigterm_ends_open_tracks_before_offline(tmp_path: Path, broker: Broker, clear_faces) -> None:
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    video = write_video(tmp_path / "loop.avi", [happy] * 15)
    sub = Subscriber(broker.port)
    try:
        proc = start_daemon(write_config(tmp_path / "c.yaml", video, broker.port, camera={"loop": True}))
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 1, 30), "no start event"
        proc.send_signal(signal.SIGHUP)  # reload: the pipeline restarts with the re-read config
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 3, 30), "no restart after SIGHUP"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 0 and time.monotonic() - t0 < 5
        assert "configuration reloaded" in err
        sub.wait_for(lambda s: s.on("/availability")[-1:] and s.on("/availability")[-1].payload == b"offline", 5)
    finally:
        sub.close()
    topics = [(m.topic.rsplit("/", 1)[1], m.payload) for m in sub.messages if m.topic.startswith("edge_fer/")]
    events = [m.json() for m in sub.on("/events")]
    assert [e["type"] for e in events] == ["start", "end", "start", "end"]
    last_end = max(i for i, (t, p) in enumerate(topics) if t == "events")
    last_offline = max(i for i, (t, p) in enumerate(topics) if t == "availability" and p == b"offline")
    assert last_end < last_offline


def _blinking_video(path: Path, faces: list) -> Path:
    """Faces that come and go: 1 s of a face, 1 s of none, for each face, at 15 fps."""
    blank, _ = paste_faces([], size=180)
    frames = []
    for f in faces:
        frame, _ = paste_faces([f], size=180)
        frames += [frame] * 15 + [blank] * 15
    return write_video(path, frames)


def test_broker_down_at_start_and_mid_run_loses_no_event(tmp_path: Path, clear_faces) -> None:
    faces = clear_faces["happy"] + clear_faces["surprise"] + clear_faces["neutral"]
    video = _blinking_video(tmp_path / "blink.avi", faces * 2)  # about 36 s of faces coming and going
    broker = Broker(tmp_path, persistent=True).start()
    # A durable subscription made first, so the broker keeps everything for the test whenever it arrives.
    sub = Subscriber(broker.port, "edge_fer/#", client_id="durable-test", durable=True)
    broker.stop(graceful=True)
    proc = start_daemon(write_config(tmp_path / "c.yaml", video, broker.port))
    try:
        time.sleep(4)
        assert proc.poll() is None, "the daemon died without a broker"
        broker.start()  # down at start, then up
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 3, 30), "nothing delivered after the broker came up"
        broker.stop(graceful=True)  # gone mid-run
        time.sleep(5)
        broker.start()
        code, err = finish(proc, 90)
        assert code == 0, err
        sub.wait_for(lambda s: any(m.payload == b"offline" for m in s.on("/availability")), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    assert "lost" in err
    logged = sum(err.count(f" {kind}: ") for kind in ("start", "change", "end"))
    seqs = [m.json()["seq"] for m in sub.on("/events")]
    assert logged >= 12
    # Every event arrives; QoS 1 may repeat one across a reconnect, but never reorders first arrivals.
    firsts = list(dict.fromkeys(seqs))
    assert firsts == list(range(1, logged + 1))


def test_camera_missing_at_start_then_appears(tmp_path: Path, broker: Broker, face_video: Path) -> None:
    later = tmp_path / "late.avi"
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path / "c.yaml", later, broker.port, camera={"wait_for_file": True}))
    try:
        assert sub.wait_for(lambda s: any(m.json().get("camera") == "down" for m in s.on("/state")), 20), \
            "state did not show the camera down"
        assert proc.poll() is None
        shutil.copy(face_video, later)
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 1, 30), "no events after the camera appeared"
        code, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert code == 0
    assert "no such video file" in err and err.count("no such video file") == 1  # logged once per state change


def test_a_missing_video_file_is_a_typo_not_a_camera(tmp_path: Path, broker: Broker) -> None:
    # Without camera.wait_for_file the daemon says so at once and stops with the config status, not retry for ever.
    proc = start_daemon(write_config(tmp_path / "c.yaml", tmp_path / "typo.mp4", broker.port))
    code, err = finish(proc, 60)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "typo.mp4" in line]
    assert len(lines) == 1 and "no such video file" in lines[0] and "camera.wait_for_file" in lines[0], err
    assert "Traceback" not in err


def test_systemd_unit_verifies() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = ROOT / "systemd" / "edge-fer.service"
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in res.stderr.splitlines()
                if "edge-fer.service" in line and "Command /opt/edge-fer/bin/edge-fer is not executable" not in line
                and "No such file" not in line]
    assert problems == [], res.stderr
    text = unit.read_text()
    for needle in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "SupplementaryGroups=video",
                   "/etc/edge-fer/config.yaml", "NoNewPrivileges=yes"):
        assert needle in text


def test_systemd_unit_security_exposure_stays_low() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = ROOT / "systemd" / "edge-fer.service"
    # --offline reads the unit file itself (no running systemd needed); the threshold is exposure x 10.
    res = subprocess.run([analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for edge-fer.service: ([\d.]+)", res.stdout)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= 2.5 and res.returncode == 0, res.stdout[-2000:]


def test_stuck_pipeline_stops_watchdog_pings_and_sigterm_still_ends_it(tmp_path: Path, clear_faces) -> None:
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    video = write_video(tmp_path / "loop.avi", [happy] * 15)
    config = write_config(tmp_path / "c.yaml", video, 1, camera={"loop": True}, mqtt={"enabled": False})
    notify = NotifySocket(tmp_path / "notify.sock")
    errlog = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY",)}
    env.update(PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    with open(errlog, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stuck_daemon.py"), "--config", str(config)],
                                env=env, stderr=err, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "blocks now" not in errlog.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "blocks now" in errlog.read_text()
        assert notify.messages.count("WATCHDOG=1") >= 3  # pings while it worked
        time.sleep(0.3)
        pings = notify.messages.count("WATCHDOG=1")
        time.sleep(1.5)
        assert notify.messages.count("WATCHDOG=1") == pings, "pings went on from a hung pipeline"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)  # inside the unit's TimeoutStopSec
        assert time.monotonic() - t0 < 9
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 4
    assert "the pipeline did not stop within 6 s" in errlog.read_text()


def test_refused_credentials_are_logged_and_retried_without_a_crash(tmp_path: Path, face_video: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("edge:secret\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, timeout=10)
    broker = Broker(tmp_path, password_file=passwd).start()
    try:
        config = write_config(tmp_path / "c.yaml", face_video, broker.port, camera={"loop": True},
                              mqtt={"username": "edge", "password_env": "TEST_MQTT_PW"})
        os.environ["TEST_MQTT_PW"] = "wrong"
        try:
            proc = start_daemon(config)
        finally:
            del os.environ["TEST_MQTT_PW"]
        time.sleep(6)
        assert proc.poll() is None, "the daemon crashed on refused credentials"
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
    finally:
        broker.stop()
    assert code == 0
    refusals = [line for line in err.splitlines() if "refused the connection" in line]
    assert len(refusals) == 1, err
    assert "Not authorized" in refusals[0] or "Bad user name or password" in refusals[0]


def test_image_publish_sends_one_event_per_face(tmp_path: Path, broker: Broker) -> None:
    import io

    from edge_fer.cli.main import main
    from tests.conftest import ASTRONAUT

    sub = Subscriber(broker.port)
    try:
        base = ["--image", str(ASTRONAUT), "--publish", "--set", "mqtt.host=127.0.0.1", "--set", "mqtt.device_id=cli"]
        out, err = io.StringIO(), io.StringIO()
        assert main(base + ["--set", f"mqtt.port={broker.port}"], out=out, err=err) == 0, err.getvalue()
        assert sub.wait_for(lambda s: len(s.on("edge_fer/cli/events")) == 1, 10)
        event = sub.on("edge_fer/cli/events")[0].json()
        assert event["type"] == "image" and event["image"] == ASTRONAUT.name and event["emotion"] == "happy"
        assert event["frame_size"] == [512, 512] and len(event["scores"]) == 7
        assert sub.on("/availability") == []  # a one-shot run does not speak for the daemon
        # A broker that is not there: the results are still printed, the failure is one line and status 4.
        out, err = io.StringIO(), io.StringIO()
        assert main(base + ["--set", "mqtt.port=1"], out=out, err=err) == 4
        assert "(512x512): 1 face" in out.getvalue()
        assert err.getvalue() == "edge-fer: MQTT broker 127.0.0.1:1 not reachable; results not published\n"
    finally:
        sub.close()


def test_queue_bound_keeps_the_oldest_and_counts_what_it_drops(tmp_path: Path, caplog) -> None:
    from edge_fer.config import MqttConfig
    from edge_fer.messaging.contract import FER_LABELS
    from edge_fer.messaging.events import EventFactory
    from edge_fer.messaging.mqtt import MqttPublisher
    from edge_fer.types import EventType, TrackEvent

    broker = Broker(tmp_path)
    pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port, queue_size=5, discovery=False), "q").start()
    try:
        factory = EventFactory("q")
        start = TrackEvent(EventType.START, 1, "happy", 0.9, {k: 0.9 if k == "happy" else 0.1 / 6 for k in FER_LABELS},
                           (1, 2, 3, 4))
        accepted = [pub.publish_event(factory.event(start, (640, 480))) for _ in range(8)]
        assert accepted == [True] * 5 + [False] * 3 and pub.dropped == 3
        assert "MQTT queue full (5 events): 1 events dropped so far" in caplog.text
        broker.start()
        sub = Subscriber(broker.port, "edge_fer/q/events")
        # Subscribed before the publisher's reconnect (its backoff is at least a second).
        assert sub.wait_for(lambda s: len(s.on("/events")) == 5, 30)
        assert [m.json()["seq"] for m in sub.on("/events")] == [1, 2, 3, 4, 5]
        sub.close()
    finally:
        pub.stop(timeout=1)
        broker.stop()


def test_frames_that_change_size_or_are_blank_do_not_break_the_pipeline(tmp_path: Path, clear_faces) -> None:
    import numpy as np

    from edge_fer.config import load
    from edge_fer.live.pipeline import Pipeline
    from edge_fer.types import Frame

    pipeline = Pipeline(load(None, ["mqtt.enabled=false"]))
    big, _ = paste_faces([clear_faces["happy"][0]], size=180)
    small, _ = paste_faces([clear_faces["happy"][0]], size=90, frame_wh=(320, 240))
    frames = [big, small, np.zeros((480, 640, 3), np.uint8), np.zeros((1, 1, 3), np.uint8), big[:, :, 0], big]
    found = []
    for i, image in enumerate(frames, 1):
        result, _ = pipeline.step(Frame(image, i, i * 0.1, 0.0))
        faces = result.faces
        found.append(len(faces))
        assert all(x + w <= image.shape[1] and y + h <= image.shape[0] for x, y, w, h in (f.box for f in faces))
    assert found[0] == 1 and found[2] == 0 and found[3] == 0 and found[-1] == 1


def test_stream_url_that_stops_answering_is_reopened(tmp_path: Path, broker: Broker, face_video: Path) -> None:
    import functools
    import http.server
    import socketserver

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(face_video.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]

    def serve(port: int) -> socketserver.ThreadingTCPServer:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    server = serve(0)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/{face_video.name}"
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path / "c.yaml", url, broker.port, camera={"reopen_max_seconds": 1.0}))
    try:
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 1, 30), "no event from the stream"
        server.shutdown()
        server.server_close()
        time.sleep(4)
        assert proc.poll() is None, "the daemon died when the stream stopped"
        frames_down = max(m.json()["frames"] for m in sub.on("/state"))
        server = serve(port)
        assert sub.wait_for(lambda s: max(m.json()["frames"] for m in s.on("/state")) > frames_down + 20, 30), \
            "no frames after the stream came back"
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.shutdown()
        server.server_close()
        sub.close()
    assert code == 0
    states = camera_states(err)
    # Each change is logged once; (a finite file served over HTTP also goes "down" at its end and replays.)
    assert "down" in states and "ok" in states[states.index("down"):], states
    assert all(a != b for a, b in zip(states, states[1:]))


def test_tls_and_password_file(tmp_path: Path) -> None:
    import io

    from edge_fer.cli.main import main
    from tests.conftest import ASTRONAUT

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def run_openssl(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30, cwd=tmp_path)

    # A CA of the test's own and a server certificate for 127.0.0.1 signed by it.
    run_openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
                "-keyout", "ca.key", "-out", "ca.crt")
    run_openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
                "-out", "server.csr")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run_openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", "san.ext", "-out", "server.crt")
    passwd = tmp_path / "passwd"
    passwd.write_text("edge:secret\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, timeout=10)
    broker = Broker(tmp_path, password_file=passwd)
    tls_port = free_port()
    broker.conf.write_text(broker.conf.read_text() + f"listener {tls_port} 127.0.0.1\ncafile {tmp_path / 'ca.crt'}\n"
                           f"certfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n")
    (tmp_path / "mqtt-password").write_text("secret\n")
    broker.start()
    sub = Subscriber(broker.port, "edge_fer/#", username="edge", password="secret")  # plain port
    try:
        err = io.StringIO()
        code = main(["--image", str(ASTRONAUT), "--publish", "--set", "mqtt.host=127.0.0.1",
                     "--set", f"mqtt.port={tls_port}", "--set", "mqtt.tls=true",
                     "--set", f"mqtt.ca_certs={tmp_path / 'ca.crt'}", "--set", "mqtt.username=edge",
                     "--set", f"mqtt.password_file={tmp_path / 'mqtt-password'}"], out=io.StringIO(), err=err)
        assert code == 0, err.getvalue()
        assert sub.wait_for(lambda s: len(s.on("/events")) == 1, 10)
        assert sub.on("/events")[0].json()["type"] == "image"
    finally:
        sub.close()
        broker.stop()


def test_sighup_with_a_bad_config_changes_nothing(tmp_path: Path, broker: Broker, clear_faces) -> None:
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    video = write_video(tmp_path / "loop.avi", [happy] * 15)
    config = write_config(tmp_path / "c.yaml", video, broker.port, camera={"loop": True})
    good = config.read_text()
    errlog = tmp_path / "stderr.txt"
    sub = Subscriber(broker.port)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "DISPLAY")}
    env.update(PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(notify.path))
    with open(errlog, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert sub.wait_for(lambda s: len(s.on("/events")) >= 1, 30), "no start event"
        assert until(lambda: lifecycle(notify), 10), "no READY=1 at start-up"
        for i, bad in enumerate(("mqtt:\n  device_id: a/b\n", "mqtt:\n  port: eighty\n",
                                 good + "classifier:\n  model: /nonexistent.tflite\n")):
            config.write_text(bad)
            proc.send_signal(signal.SIGHUP)
            # A refused reload is over at once: RELOADING=1, then READY=1 (after the refusal is logged).
            assert until(lambda n=3 + 2 * i: len(lifecycle(notify)) == n, 20), notify.messages
        assert errlog.read_text().count("reload refused") == 3, errlog.read_text()
        assert proc.poll() is None
        # Nothing was restarted: one start event, no end, no offline, no second "running".
        assert [m.json()["type"] for m in sub.on("/events")] == ["start"]
        assert [m.payload for m in sub.on("/availability")] == [b"online"]
        assert errlog.read_text().count("running: source") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        notify.close()
    text = errlog.read_text()
    assert "mqtt.device_id" in text and "mqtt.port must be int" in text and "nonexistent.tflite" in text
    assert "Traceback" not in text
    life = lifecycle(notify)
    assert [lines[0] for lines in life] == ["READY=1"] + ["RELOADING=1", "READY=1"] * 3 + ["STOPPING=1"]
    assert all(lines[1].startswith("MONOTONIC_USEC=") for lines in life[1:-1:2])
    # Each READY=1 says why, for systemctl status.
    for why, lines in zip(("mqtt.device_id", "mqtt.port must be int", "nonexistent.tflite"), life[2:-1:2]):
        assert len(lines) == 2 and lines[1].startswith("STATUS=reload refused, the running configuration stays: ")
        assert why in lines[1], lines


@pytest.mark.parametrize("window", [False, True], ids=["headless", "display"])
def test_sighup_reloads_with_reloading_then_ready_and_stopping_only_at_the_end(
        tmp_path: Path, broker: Broker, clear_faces, window: bool, request: pytest.FixtureRequest) -> None:
    if window and shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    happy, _ = paste_faces([clear_faces["happy"][0]], size=180)
    video = write_video(tmp_path / "loop.avi", [happy] * 15)
    config = write_config(tmp_path / "c.yaml", video, broker.port, camera={"loop": True})
    notify = NotifySocket(tmp_path / "notify.sock")
    sub = Subscriber(broker.port)
    display = request.getfixturevalue("xvfb") if window else ""
    with running(config, notify, display=display, closing=(notify.close, sub.close)) as proc:
        assert until(lambda: lifecycle(notify), 30), "no READY=1 at start-up"
        assert sub.wait_for(lambda s: len(s.on("edge_fer/testcam/state")) >= 1, 10), "no state before the reload"
        # A valid change that shows: under its new device id the new pipeline publishes on topics of its own.
        write_config(config, video, broker.port, camera={"loop": True}, mqtt={"device_id": "testcam2"})
        sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        assert until(lambda: len(lifecycle(notify)) >= 3, 30), notify.messages
        answered = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert sub.wait_for(lambda s: len(s.on("edge_fer/testcam2/state")) >= 2, 20), "no state after the reload"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
    assert code == 0, err
    assert "configuration reloaded" in err and "Traceback" not in err
    life = lifecycle(notify)
    # STOPPING=1 on a reload would have systemd stop the unit, deaf to the READY=1 after it: only the exit says it.
    assert [lines[0] for lines in life] == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], notify.messages
    assert len(life[1]) == 2 and life[1][1].startswith("MONOTONIC_USEC=")  # one datagram, as systemd 253+ needs
    assert sent <= int(life[1][1].split("=", 1)[1]) <= answered  # CLOCK_MONOTONIC in microseconds
    # One process throughout (NotifyAccess=main takes only its PID), and a new run in it after the reload.
    assert set(notify.pids) == {proc.pid}
    runs = [{m.json()["run_id"] for m in sub.on(f"edge_fer/{device}/state")} for device in ("testcam", "testcam2")]
    assert runs[0] and runs[1] and not runs[0] & runs[1]


def test_systemd_unit_allows_the_pi_camera_heaps_stops_on_config_errors_and_caps_memory() -> None:
    lines = [line.strip() for line in (ROOT / "systemd" / "edge-fer.service").read_text().splitlines()]
    settings = [tuple(line.split("=", 1)) for line in lines if "=" in line and not line.startswith("#")]
    allowed = [value.split()[0] for key, value in settings if key == "DeviceAllow"]
    # systemd skips a DeviceAllow= path that is a folder; libcamera opens /dev/dma_heap/<heap> (class dma_heap).
    assert "char-dma_heap" in allowed and not any(a.startswith("/dev/dma_heap") for a in allowed)
    assert all(a.startswith(("char-", "block-")) or not a.endswith("/") for a in allowed)
    prevent = [value.split() for key, value in settings if key == "RestartPreventExitStatus"]
    assert prevent and {"2", "3"} <= set(prevent[0])
    memory = [value for key, value in settings if key == "MemoryMax"]
    assert memory and memory[0].endswith("M") and 200 <= int(memory[0][:-1]) <= 600
