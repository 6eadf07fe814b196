"""A real mosquitto broker on a free loopback port, and a subscriber that records what it hears."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def until(check: Callable[[], object], timeout: float) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port; can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, password_file: Path | None = None,
                 persistent: bool = False, acl_file: Path | None = None) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # A persistent broker keeps sessions and their queued messages across a graceful restart.
        persistence = ["persistence true", f"persistence_location {workdir}/"] if persistent else ["persistence false"]
        # Started as root, mosquitto would become user "mosquitto" and lose access to pytest's private tmp dirs.
        lines = [f"listener {self.port} 127.0.0.1", *persistence, "log_dest stderr", "user root"]
        lines += ([f"password_file {password_file}", "allow_anonymous false"] if password_file
                  else ["allow_anonymous true"])
        lines += [f"acl_file {acl_file}"] if acl_file else []  # who may read and write which topics
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        """Start and wait until the port accepts connections."""
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self, graceful: bool = False) -> None:
        """Kill the broker (as a crash would), or stop it gracefully (it saves its sessions)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate() if graceful else self.proc.kill()
            self.proc.wait(5)


@dataclass
class Message:
    """One received message."""

    topic: str
    payload: bytes
    retain: bool
    received: float = 0.0  # wall-clock time of arrival

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to '#' and keeps every message in arrival order."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "", durable: bool = False,
                 username: str = "", password: str = "") -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        # A durable subscriber's session outlives its connection: the broker queues what it misses.
        self._client = paho.Client(CallbackAPIVersion.VERSION2, clean_session=not durable,
                                   client_id=client_id or f"test-sub-{port}-{time.monotonic_ns()}")
        if username:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.1, 0.5)
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.connect_async("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), time.time()))

    def on(self, suffix: str) -> list[Message]:
        """Messages whose topic ends with `suffix`."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, check: Callable[[Subscriber], bool], timeout: float) -> bool:
        """Poll until check(self) is true or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return True
            time.sleep(0.05)
        return check(self)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
