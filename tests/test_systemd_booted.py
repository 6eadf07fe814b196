"""The units under a real, booted systemd 252 (Debian 12 under systemd-nspawn), installed as README says.

The root is debootstrapped once and cached (tests/nspawn.py); each run boots an overlay of it, installs the wheel
built from this tree, and drives the units with systemctl: READY, reload in place, the watchdog, stop, two
template instances with the example broker ACL, and the recorder. MemoryMax= and DeviceAllow= are not enforced in
such a container on a cgroup v1 host; systemd-analyze security still rates the units (test_daemon, test_record_unit
and below).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import nspawn
from tests.broker import until
from tests.conftest import ROOT
from tests.test_mqtt_acl import astronaut_video

UNITS = ROOT / "systemd"
BROKER_EXAMPLE = ROOT / "examples" / "mosquitto"
VIDEO = "/srv/edge-fer/faces.avi"  # readable by the services' dynamic users; /root and /home are hidden from them
WAIT = "/root/src/mqtt_wait.py"
EDGE_FER = f"{nspawn.VENV}/bin/edge-fer"
SERVICE = "edge-fer.service"
LIFECYCLE = ("READY=1", "RELOADING=1", "STOPPING=1")
# The hardening and the process's life are shared; these lines are the template's own.
PER_INSTANCE = ("Description=", "ExecStart=", "StateDirectory=", "Environment=HOME=", "EnvironmentFile=")


def _build_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    return next(dest.glob("edge_fer-*.whl"))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    """The booted container with edge-fer installed in /opt/edge-fer and the units' files at hand in /root/src."""
    reason = nspawn.why_not()
    if reason:  # .ci/run allows no skip: there it fails
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("nspawn")
    wheel = _build_wheel(work / "dist")
    root = nspawn.base_root()
    layer = nspawn.venv_layer(root, nspawn.dependency_wheels(wheel))
    container = nspawn.Container([layer, root], work / "box", f"edge-fer-ci-{os.getpid()}")
    try:
        container.put(f"/root/dist/{wheel.name}", wheel.read_bytes())
        for unit in UNITS.glob("*.service"):
            container.put(f"/root/src/systemd/{unit.name}", unit.read_bytes())
        container.put(WAIT, (ROOT / "tests" / "mqtt_wait.py").read_bytes())
        # A start and an end on every 3 s loop.
        container.put(VIDEO, astronaut_video(work / "faces.avi", blank_frames=25).read_bytes())
        container.boot()
        # PID 1 logs each notification it gets at debug level: how the test sees READY=1 and the watchdog's pings.
        container.run("systemctl", "log-level", "debug")
        # README: python3 -m venv --system-site-packages /opt/edge-fer (in the cached layer), then pip install.
        container.run(f"{nspawn.VENV}/bin/pip", "install", "-q", "--no-index", "--disable-pip-version-check",
                      "--find-links", "/root/dist", f"/root/dist/{wheel.name}", timeout=300)
        yield container
    finally:
        container.close()


def config(device_id: str, **mqtt: object) -> str:
    """A config on the looping video, publishing to the container's mosquitto."""
    return yaml.safe_dump({"camera": {"source": VIDEO, "loop": True},
                           "mqtt": {"host": "127.0.0.1", "device_id": device_id, "state_interval_seconds": 1.0,
                                    **mqtt}})


def show(box: nspawn.Container, unit: str, *props: str) -> dict[str, str]:
    """systemctl show's values."""
    out = box.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def notifications(box: nspawn.Container, unit: str, pid: str) -> list[str]:
    """What process `pid` told systemd about `unit`, one datagram a string, as PID 1 logged it."""
    marker = f"{unit}: Got notification message from PID {pid} ("
    out = box.run("journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout
    return [line.split(marker, 1)[1].removesuffix(")") for line in out.splitlines() if marker in line]


def lifecycle(box: nspawn.Container, unit: str, pid: str) -> list[str]:
    """Its notifications about starting, reloading and stopping (not pings or a status alone), first word only."""
    return [next(w for w in LIFECYCLE if w in n) for n in notifications(box, unit, pid)
            if any(w in n for w in LIFECYCLE)]


def journal(box: nspawn.Container, unit: str) -> str:
    return box.run("journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout


def mqtt_has(box: nspawn.Container, topic: str, text: str, *login: str, timeout: float = 30) -> bool:
    """A message on `topic` (retained, or within `timeout`) contains `text`."""
    res = box.run(f"{nspawn.VENV}/bin/python", WAIT, topic, text, str(timeout), *login, check=False,
                  timeout=timeout + 30)
    return res.returncode == 0


def install(box: nspawn.Container, *units: str) -> None:
    """README's install of a unit file, then daemon-reload."""
    box.sh(f"install -m 0644 {' '.join(f'/root/src/systemd/{u}' for u in units)} /etc/systemd/system/ "
           "&& systemctl daemon-reload")


def test_the_service_is_active_after_ready_reloads_in_place_and_stops_cleanly(box: nspawn.Container) -> None:
    box.put("/etc/edge-fer/config.yaml", config("hall"))
    install(box, SERVICE)
    box.run("systemctl", "enable", "--now", "edge-fer", timeout=180)  # Type=notify: returns once READY=1 came
    try:
        state = show(box, SERVICE, "ActiveState", "SubState", "MainPID", "NRestarts")
        assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0"), state
        pid = state["MainPID"]
        assert until(lambda: lifecycle(box, SERVICE, pid) == ["READY=1"], 20), notifications(box, SERVICE, pid)
        assert mqtt_has(box, "edge_fer/hall/availability", "online")
        assert mqtt_has(box, "edge_fer/hall/state", '"device": "hall"')

        box.run("systemctl", "reload", "edge-fer", timeout=120)
        assert until(lambda: lifecycle(box, SERVICE, pid) == ["READY=1", "RELOADING=1", "READY=1"], 60), \
            notifications(box, SERVICE, pid)
        reloading = next(n for n in notifications(box, SERVICE, pid) if "RELOADING=1" in n)
        assert re.search(r"MONOTONIC_USEC=\d+", reloading), reloading  # one datagram, as systemd 253+ requires
        state = show(box, SERVICE, "ActiveState", "SubState", "MainPID", "NRestarts")
        assert state == {"ActiveState": "active", "SubState": "running", "MainPID": pid, "NRestarts": "0"}
        assert "configuration reloaded from /etc/edge-fer/config.yaml" in journal(box, SERVICE)
        assert mqtt_has(box, "edge_fer/hall/state", '"device": "hall"')
    finally:
        box.run("systemctl", "stop", "edge-fer", timeout=60)
    state = show(box, SERVICE, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "NRestarts")
    # ExecMainCode 1: the process exited (rather than being killed); with status 0, as a clean stop does.
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0",
                     "NRestarts": "0"}, state
    assert lifecycle(box, SERVICE, pid) == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    assert mqtt_has(box, "edge_fer/hall/availability", "offline")  # retained, and the Last Will never needed
    box.run("systemctl", "disable", "edge-fer")


def test_the_watchdog_is_fed_while_frames_flow_and_restarts_a_frozen_daemon(box: nspawn.Container) -> None:
    box.put("/etc/edge-fer/config.yaml", config("hall"))
    install(box, SERVICE)
    # The unit's 30 s, made short so that the test does not wait minutes; everything else as shipped.
    dropin = box.put("/etc/systemd/system/edge-fer.service.d/test-watchdog.conf",
                     "[Service]\nWatchdogSec=3\nRestartSec=1\n")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "edge-fer", timeout=180)
    try:
        pid = show(box, SERVICE, "MainPID")["MainPID"]
        # The daemon pings at half the interval systemd gave it: six pings outlive the 3 s twice over.
        assert until(lambda: sum(n == "WATCHDOG=1" for n in notifications(box, SERVICE, pid)) >= 6, 40)
        assert show(box, SERVICE, "MainPID", "NRestarts", "ActiveState") == {"MainPID": pid, "NRestarts": "0",
                                                                             "ActiveState": "active"}
        box.run("kill", "-STOP", pid)  # frozen: no frame, no ping

        def restarted() -> bool:
            state = show(box, SERVICE, "MainPID", "NRestarts", "ActiveState")
            return state["NRestarts"] == "1" and state["MainPID"] not in ("0", pid) and state["ActiveState"] == "active"

        assert until(restarted, 60), journal(box, SERVICE)[-3000:]
        assert "Watchdog timeout" in journal(box, SERVICE)
    finally:
        dropin.unlink()
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "stop", "edge-fer", timeout=60)


def test_two_cameras_as_template_instances_behind_the_example_acl_and_the_recorder_stores_both(
        box: nspawn.Container) -> None:
    cameras = ("front", "door")
    password = {user: f"pw-{user}" for user in (*cameras, "edge-fer-recorder", "homeassistant")}
    # The broker as examples/mosquitto/README.md sets it up: its conf.d file, its ACL, one login per client.
    box.put("/etc/mosquitto/conf.d/edge-fer.conf", (BROKER_EXAMPLE / "edge-fer.conf").read_bytes())
    box.put("/etc/mosquitto/edge-fer.acl", (BROKER_EXAMPLE / "edge-fer.acl").read_bytes())
    passwd = "/etc/mosquitto/edge-fer.passwd"
    box.sh(f"touch {passwd} && " + " && ".join(f"mosquitto_passwd -b {passwd} {u} {p}" for u, p in password.items())
           + f" && chown root:mosquitto {passwd} && chmod 0640 {passwd} && systemctl restart mosquitto")
    ha = ("homeassistant", password["homeassistant"])
    for cam in cameras:
        # The same device_id in both files: the instance's name is what counts.
        box.put(f"/etc/edge-fer/{cam}.yaml",
                config("same-in-both", username=cam, password_env="EDGE_FER_MQTT_PASSWORD"))
        box.put(f"/etc/edge-fer/{cam}.env", f"EDGE_FER_MQTT_PASSWORD={password[cam]}\n", mode=0o600)
    # No edge-fer.service on this box: config.yaml is the recorder's.
    box.put("/etc/edge-fer/config.yaml", config("recorder", username="edge-fer-recorder",
                                                password_env="EDGE_FER_MQTT_PASSWORD"))
    box.put("/etc/edge-fer/record.env", f"EDGE_FER_MQTT_PASSWORD={password['edge-fer-recorder']}\n", mode=0o600)
    units = [f"edge-fer@{cam}.service" for cam in cameras] + ["edge-fer-record.service"]
    install(box, "edge-fer@.service", "edge-fer-record.service")
    try:
        box.run("systemctl", "enable", "--now", *units, timeout=240)
        pids = set()
        for cam in cameras:
            state = show(box, f"edge-fer@{cam}.service", "ActiveState", "SubState", "MainPID", "NRestarts")
            assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0"), state
            pids.add(state["MainPID"])
            assert mqtt_has(box, f"edge_fer/{cam}/availability", "online", *ha)
            assert mqtt_has(box, f"edge_fer/{cam}/state", f'"device": "{cam}"', *ha)
            assert box.run("test", "-d", f"/var/lib/edge-fer@{cam}", check=False).returncode == 0  # its own state
        assert len(pids) == 2
        assert not mqtt_has(box, "edge_fer/same-in-both/state", "device", *ha, timeout=1)
        db = "/var/lib/edge-fer-record/events.db"
        stored = (f"import sqlite3; print(sorted({{d for (d,) in sqlite3.connect('{db}')"
                  ".execute('SELECT device FROM events')}))")
        assert until(lambda: box.run("python3", "-c", stored, check=False).stdout.strip() == "['door', 'front']",
                     60), journal(box, "edge-fer-record.service")[-3000:]
        report = box.run(EDGE_FER, "report", "--db", db).stdout
        assert {line.split()[0] for line in report.splitlines() if line.split()[:1] in (["front"], ["door"])} \
            == set(cameras), report
    finally:
        box.run("systemctl", "stop", *units, timeout=120)
        box.run("systemctl", "disable", *units)
    for unit in units:
        state = show(box, unit, "ActiveState", "Result", "ExecMainStatus")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, (unit, state)
    for cam in cameras:
        assert mqtt_has(box, f"edge_fer/{cam}/availability", "offline", *ha)
    log = journal(box, "edge-fer-record.service")
    assert "malformed message on" not in log and "refused" not in log, log[-3000:]
    box.sh("rm /etc/mosquitto/conf.d/edge-fer.conf && systemctl restart mosquitto")  # the next test's anonymous broker


def test_the_template_keeps_the_services_hardening_and_life_verifies_and_is_rated_as_low(tmp_path: Path) -> None:
    own = [line for line in (UNITS / SERVICE).read_text().splitlines() if line and not line.startswith("#")]
    template = [line for line in (UNITS / "edge-fer@.service").read_text().splitlines()
                if line and not line.startswith("#")]
    assert [x for x in own if not x.startswith(PER_INSTANCE)] == [x for x in template if not x.startswith(PER_INSTANCE)]
    assert [x for x in template if x.startswith(PER_INSTANCE)] == [
        "Description=edge-fer facial emotion recognition, camera %i (camera to MQTT)",
        "ExecStart=/opt/edge-fer/bin/edge-fer --config /etc/edge-fer/%i.yaml --set \"mqtt.device_id='%i'\"",
        "StateDirectory=edge-fer@%i", "Environment=HOME=/var/lib/edge-fer@%i",
        "EnvironmentFile=-/etc/edge-fer/env", "EnvironmentFile=-/etc/edge-fer/%i.env"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # An instance, as systemctl would load it: the template under the instance's name.
    shutil.copy(UNITS / "edge-fer@.service", tmp_path / "edge-fer@.service")
    (tmp_path / "edge-fer@front.service").symlink_to("edge-fer@.service")
    unit = str(tmp_path / "edge-fer@front.service")
    res = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60)
    problems = [line for line in res.stderr.splitlines() if "edge-fer@" in line
                and "Command /opt/edge-fer/bin/edge-fer is not executable" not in line]
    assert problems == [], res.stderr
    res = subprocess.run([analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", unit],
                         capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edge-fer@front.service: ([\d.]+)", res.stdout)
    assert match and float(match.group(1)) <= 2.5 and res.returncode == 0, res.stdout[-2000:] + res.stderr
