"""examples/mosquitto's broker: a real mosquitto with its ACL, a login per client, the real daemon and recorder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_fer.errors import EXIT_OK
from tests.broker import Broker, Subscriber, until
from tests.conftest import ASTRONAUT, ROOT, write_video
from tests.test_daemon import finish, start_daemon, write_config
from tests.test_record import Recorder, event, seqs, summary

EXAMPLE = ROOT / "examples" / "mosquitto"
NOT_AUTHORIZED = 135  # MQTT 5 reason code: what mosquitto answers a login or a publish the ACL refuses
USERS = ("front", "door", "edge-fer-recorder", "homeassistant")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")


def secret(user: str) -> str:
    """Each user's password: distinct, and easy to look for in a log."""
    return f"pw-{user}-s3cret"


@pytest.fixture
def broker(tmp_path: Path):
    """mosquitto with the example ACL and a password file made as examples/mosquitto/README.md says."""
    passwd = tmp_path / "edge-fer.passwd"
    for i, user in enumerate(USERS):
        # -b: the password on the command line, as a provisioning script would; -c only creates the file.
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, secret(user)],
                       check=True, capture_output=True, timeout=30)
    b = Broker(tmp_path, password_file=passwd, acl_file=EXAMPLE / "edge-fer.acl").start()
    yield b
    for rec in Recorder.running:
        if rec.proc.poll() is None:
            rec.kill()
    Recorder.running.clear()
    b.stop()


class Client:
    """A paho MQTT 5 client logged in as `user`; notes the broker's reason code for each QoS 1 publish."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.acks: dict[int, int] = {}
        self._connected = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=paho.MQTTv5)
        self._client.username_pw_set(user, password)
        self._client.on_connect = lambda c, u, f, reason, p: self._connected.set() if not reason.is_failure else None
        self._client.on_publish = lambda c, u, mid, reason, p: self.acks.__setitem__(mid, reason.value)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self._connected.wait(10), f"{user} could not log in"

    def publish(self, topic: str, doc: dict, retain: bool = False) -> int:
        """Send at QoS 1; the broker's answer (0 accepted and delivered, 16 no subscribers, 135 refused)."""
        info = self._client.publish(topic, json.dumps(doc), qos=1, retain=retain)
        info.wait_for_publish(10)
        assert until(lambda: info.mid in self.acks, 10)
        return self.acks[info.mid]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def astronaut_video(path: Path, blank_frames: int = 15) -> Path:
    """The example photo's face for 20 frames (1.3 s at 15 fps), then none: a start, and an end after 1 s of none."""
    photo = cv2.imread(str(ASTRONAUT))
    assert photo is not None, ASTRONAUT
    blank = np.full((480, 640, 3), 128, np.uint8)
    frame = blank.copy()
    frame[60:420, 140:500] = cv2.resize(photo, (360, 360))
    return write_video(path, [frame] * 20 + [blank] * blank_frames)


def device_config(tmp_path: Path, port: int, user: str, source: Path, env: str) -> Path:
    """A daemon logged in as device `user`, its password from the environment variable `env`."""
    return write_config(tmp_path / f"{user}.yaml", source, port,
                        mqtt={"device_id": user, "username": user, "password_env": env})


def test_a_device_publishes_its_own_events_and_nobody_writes_into_another_devices_topics(
        tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_FER_TEST_REC_PW", secret("edge-fer-recorder"))
    monkeypatch.setenv("EDGE_FER_TEST_FRONT_PW", secret("front"))
    db = str(tmp_path / "e.db")
    rec = Recorder(tmp_path, db, broker.port, "--set", "mqtt.username=edge-fer-recorder",
                   "--set", "mqtt.password_env=EDGE_FER_TEST_REC_PW")
    ha = Subscriber(broker.port, "edge_fer/#", username="homeassistant", password=secret("homeassistant"))
    door = Client(broker.port, "door", secret("door"))
    recorder = Client(broker.port, "edge-fer-recorder", secret("edge-fer-recorder"))
    try:
        # The real daemon as device front: its events, state and availability go through.
        config = device_config(tmp_path, broker.port, "front", astronaut_video(tmp_path / "face.avi"),
                               "EDGE_FER_TEST_FRONT_PW")
        code, err = finish(start_daemon(config), 60)
        assert code == EXIT_OK, err
        sent = sum(err.count(f" {kind}: ") for kind in ("start", "change", "end"))
        assert sent >= 2 and "refused" not in err, err
        assert until(lambda: seqs(db, "front") == list(range(1, sent + 1)), 20), seqs(db, "front")
        assert ha.wait_for(lambda s: [m.payload for m in s.on("edge_fer/front/availability")][-1:] == [b"offline"], 10)
        assert ha.on("edge_fer/front/state")
        # door, logged in as itself, forges front's events and state: the broker refuses each.
        forged = event(sent + 1, device="front", emotion="angry")
        assert door.publish("edge_fer/front/events", forged) == NOT_AUTHORIZED
        assert door.publish("edge_fer/front/state", {"device": "front", "faces": 9}, retain=True) == NOT_AUTHORIZED
        # The recorder may only read.
        assert recorder.publish("edge_fer/front/events", forged) == NOT_AUTHORIZED
        assert recorder.publish("edge_fer/edge-fer-recorder/events", event(1, device="edge-fer-recorder")) \
            == NOT_AUTHORIZED
        # door's own event, sent after them on the same connection, arrives: the refused ones would have come first.
        assert door.publish("edge_fer/door/events", event(1, device="door")) == 0
        assert until(lambda: seqs(db, "door") == [1], 20), seqs(db, "door")
        assert ha.wait_for(lambda s: bool(s.on("edge_fer/door/events")), 10)
    finally:
        for client in (door, recorder, ha):
            client.close()
    code, log = rec.stop()
    assert code == EXIT_OK and "Traceback" not in log, log
    assert seqs(db, "front") == list(range(1, sent + 1)) and seqs(db, "door") == [1] and len(seqs(db)) == sent + 1
    # Nothing forged even reached it to be judged.
    assert summary(log).startswith(f"{sent + 1} events stored, 0 duplicates skipped, 0 conflicts (the first row "
                                   "kept), 0 malformed messages"), summary(log)
    assert [m.json()["seq"] for m in ha.on("edge_fer/front/events")] == list(range(1, sent + 1))
    assert all(m.json()["faces"] != 9 for m in ha.on("edge_fer/front/state"))
    assert {m.topic for m in ha.messages} <= {"edge_fer/front/availability", "edge_fer/front/state",
                                               "edge_fer/front/events", "edge_fer/door/events"}


def refused_or_ended(log: Path, proc: subprocess.Popen) -> Callable[[], bool]:
    """Whether the process has logged the broker's refusal, or ended."""
    return lambda: "refused the connection" in log.read_text() or proc.poll() is not None


def test_wrong_credentials_are_one_clear_line_without_the_secret(tmp_path: Path, broker: Broker) -> None:
    wrong = "Wr0ng-s3cret-42"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_FER_TEST_PW": wrong}
    common = ["--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={broker.port}",
              "--set", "mqtt.password_env=EDGE_FER_TEST_PW"]
    logs = {name: tmp_path / f"{name}.log" for name in ("recorder", "daemon", "other-device")}
    video = write_video(tmp_path / "blank.avi", [np.full((480, 640, 3), 128, np.uint8)] * 15)
    commands = {
        "recorder": ["record", "--db", str(tmp_path / "e.db"), "--set", "mqtt.username=edge-fer-recorder", *common],
        "daemon": ["--config", str(device_config(tmp_path, broker.port, "front", video, "EDGE_FER_TEST_PW")),
                   "--set", "camera.loop=true"],
        # The right password of another user is refused as well: a login is a user and its own password.
        "other-device": ["--config", str(device_config(tmp_path, broker.port, "door", video, "EDGE_FER_TEST_PW")),
                         "--set", "camera.loop=true"],
    }
    env_for = {"recorder": env, "daemon": env, "other-device": {**env, "EDGE_FER_TEST_PW": secret("front")}}
    procs = {}
    try:
        for name, argv in commands.items():
            with open(logs[name], "w") as log:
                procs[name] = subprocess.Popen([sys.executable, "-m", "edge_fer", *argv], env=env_for[name],
                                               stdout=subprocess.DEVNULL, stderr=log)
        for name, proc in procs.items():
            assert until(refused_or_ended(logs[name], proc), 30)
            assert proc.poll() is None, f"{name} ended: {logs[name].read_text()[-2000:]}"
        for name, proc in procs.items():
            proc.terminate()
            assert proc.wait(20) == EXIT_OK, (name, logs[name].read_text()[-2000:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name in procs:
        text = logs[name].read_text()
        refusals = [line for line in text.splitlines() if "refused the connection" in line]
        assert len(refusals) == 1, (name, text)  # each change of state is logged once, not each retry
        assert f"MQTT broker 127.0.0.1:{broker.port} refused the connection: Not authorized (reason code 135)" \
            in refusals[0], refusals[0]
        assert wrong not in text and secret("front") not in text and "Traceback" not in text, (name, text)
