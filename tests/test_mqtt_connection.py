"""MQTT 5 and its 3.1.1 fallback, connection failures logged once with their reason, and client id takeovers."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_fer.config import MqttConfig
from edge_fer.messaging.connection import ConnectionState
from edge_fer.messaging.contract import Event
from edge_fer.messaging.events import EventFactory, discovery_topic
from edge_fer.messaging.mqtt import MqttPublisher
from edge_fer.types import EventType, TrackEvent
from tests.broker import Broker, Subscriber, free_port, until

LABELS = ("happy", "sad")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")


def make(port: int, device: str = "cam", host: str = "127.0.0.1", **cfg) -> MqttPublisher:
    return MqttPublisher(MqttConfig(host=host, port=port, device_id=device, **cfg), device, labels=LABELS)


def events(device: str = "cam") -> Callable[[], Event]:
    """Each call, the next start event of one run of `device` (seq 1, 2, ...)."""
    factory = EventFactory(device, LABELS)
    return lambda: factory.event(TrackEvent(EventType.START, 1, "happy", 0.9, {"happy": 0.9, "sad": 0.1},
                                            (10, 20, 30, 40)), (640, 480))


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class V5Subscriber:
    """An MQTT 5 subscriber that keeps each message with its properties."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.on_message = lambda c, u, m: self.messages.append(m)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_mqtt5_by_default_with_message_expiry_on_events(broker: Broker, caplog) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    sub = V5Subscriber(broker.port, "edge_fer/cam/events")
    with make(broker.port, message_expiry_seconds=600) as pub:
        assert pub.connected.wait(10) and pub.protocol == "5"
        assert pub.publish_event(events()())
        assert until(lambda: len(sub.messages) == 1, 10)
    sub.close()
    assert 590 <= sub.messages[0].properties.MessageExpiryInterval <= 600
    assert "(MQTT 5, client id edge-fer-cam)" in caplog.text
    with make(broker.port, protocol="3.1.1") as pub:
        assert pub.connected.wait(10) and pub.protocol == "3.1.1"


def test_session_expiry_keeps_home_assistants_birth_message_while_the_broker_restarts(tmp_path: Path) -> None:
    import paho.mqtt.publish as publish

    broker = Broker(tmp_path, persistent=True).start()
    topic = discovery_topic("homeassistant", "cam")
    sub = Subscriber(broker.port, topic, client_id="durable-ha-test", durable=True)
    pub = make(broker.port).start()
    try:
        assert until(lambda: len(sub.on(topic)) == 1, 10)
        broker.stop(graceful=True)  # sessions are saved: ours, with its subscription to homeassistant/status
        broker.start()
        # Home Assistant says it is online while this device is still waiting to reconnect.
        publish.single("homeassistant/status", "online", qos=1, hostname="127.0.0.1", port=broker.port)
        assert not pub.connected.is_set(), "reconnected too early for this test to mean anything"
        # The announcement on reconnect, then the birth message the broker kept for the session.
        assert until(lambda: len(sub.on(topic)) == 3, 15), len(sub.on(topic))
    finally:
        pub.stop()
        sub.close()
        broker.stop()


class Mqtt311OnlyBroker:
    """A TCP front for mosquitto that answers an MQTT 5 CONNECT as a 3.1.1-only broker does (CONNACK
    "unacceptable protocol version", then close), and passes every other connection through."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.refused = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        first = b""
        while len(first) < 9:  # fixed header, remaining length (1 byte for a small CONNECT), "\0\4MQTT", level
            chunk = conn.recv(64)
            if not chunk:
                conn.close()
                return
            first += chunk
        if first[8] == 5:
            self.refused += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        up.sendall(first)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := a.recv(65536):
                    b.sendall(data)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
        pipe(conn, up)

    def close(self) -> None:
        self.sock.close()


def test_falls_back_to_311_where_the_broker_has_no_mqtt5(broker: Broker, caplog) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    old = Mqtt311OnlyBroker(broker.port)
    sub = Subscriber(broker.port, "edge_fer/cam/events")
    try:
        with make(old.port) as pub:
            assert pub.connected.wait(15) and pub.protocol == "3.1.1"
            assert pub.publish_event(events()())
            assert sub.wait_for(lambda s: len(s.on("/events")) == 1, 10)
        assert old.refused == 1
        assert "does not speak MQTT 5; using 3.1.1" in caplog.text
        caplog.clear()
        with make(old.port, protocol="5") as pub:  # asked for 5 only: refused, said once, retried
            assert until(lambda: pub.failed_attempts >= 2, 15)
            assert not pub.connected.is_set()
        refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refusals) == 1 and "Unsupported protocol version" in refusals[0], refusals
    finally:
        sub.close()
        old.close()


def logged_once(caplog, pub: MqttPublisher, expected: str, level: int) -> None:
    """After two failed attempts, the failure was logged exactly once, with `expected` in it."""
    assert until(lambda: pub.failed_attempts >= 2, 15), "fewer than two attempts"
    assert not pub.connected.is_set()
    lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and expected in lines[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == level


@pytest.mark.parametrize("how, expected", [
    ("refused", "connection refused: nothing listens on that port"),
    ("dns", "DNS: cannot resolve 'no-such-host.invalid'"),
])
def test_each_kind_of_connection_failure_is_logged_once_with_its_reason(caplog, how: str, expected: str) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    host = "no-such-host.invalid" if how == "dns" else "127.0.0.1"
    with make(free_port(), host=host) as pub:
        logged_once(caplog, pub, expected, logging.WARNING)


def test_a_certificate_that_is_not_trusted_is_logged_once_as_tls(tmp_path: Path, caplog) -> None:
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", "self.key", "-out", "self.crt"], check=True, capture_output=True, timeout=30,
                   cwd=tmp_path)
    broker = Broker(tmp_path)
    tls_port = free_port()
    broker.conf.write_text(broker.conf.read_text() + f"listener {tls_port} 127.0.0.1\n"
                           f"certfile {tmp_path / 'self.crt'}\nkeyfile {tmp_path / 'self.key'}\n")
    broker.start()
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    try:
        with make(tls_port, tls=True) as pub:  # the system's CAs do not know this certificate
            logged_once(caplog, pub, "TLS: certificate verify failed", logging.ERROR)
    finally:
        broker.stop()


def test_a_broker_that_goes_away_is_logged_once_and_its_return_once(broker: Broker, caplog) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    with make(broker.port) as pub:
        assert pub.connected.wait(10)
        states = [pub.state]
        broker.stop()
        assert until(lambda: pub.failed_attempts >= 2, 15)
        states.append(pub.state)
        broker.start()
        assert pub.connected.wait(15)
        states.append(pub.state)
    assert pub.connections == 2
    said = [r.getMessage().split(" (")[0] for r in caplog.records]
    assert said == [f"MQTT connected to 127.0.0.1:{broker.port} as edge_fer/cam",
                    f"MQTT connection to 127.0.0.1:{broker.port} lost",
                    f"MQTT broker 127.0.0.1:{broker.port} unreachable",
                    f"MQTT connected to 127.0.0.1:{broker.port} as edge_fer/cam"], said
    assert states == [ConnectionState.CONNECTED, ConnectionState.UNREACHABLE, ConnectionState.CONNECTED]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_clients_with_one_id_detect_the_takeover_and_stop_kicking_each_other(broker: Broker, caplog,
                                                                                protocol: str) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    a = make(broker.port, protocol=protocol).start()
    try:
        assert a.connected.wait(10)
        b = make(broker.port, protocol=protocol).start()
        try:
            assert until(lambda: a.takeovers + b.takeovers >= 1, 20), "no takeover detected"
            loser, winner = (a, b) if a.takeovers else (b, a)
            assert winner.connected.wait(5)
            # Backing off: no more kicks back and forth (without it, one a second).
            time.sleep(4)
            assert (loser.takeovers, winner.takeovers) == (1, 0)
            assert winner.connected.is_set() and not loser.connected.is_set()
        finally:
            b.stop(timeout=1)
    finally:
        a.stop(timeout=1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "MQTT client id 'edge-fer-cam' is in use by another client" in errors[0]
    assert "device id 'cam'" in errors[0] and "reconnecting in 30 s" in errors[0]
    # mosquitto 2.0.11 closes the old connection without MQTT 5's reason code "Session taken over"; brokers
    # that send it (EMQX, HiveMQ, newer mosquitto) are recognised at the first kick.
    assert "the broker closed 3 connections in a row" in errors[0] or "Session taken over" in errors[0]


def test_the_recorder_subscriber_logs_its_connection_states_like_the_publisher(tmp_path: Path, caplog) -> None:
    from edge_fer.messaging.mqtt import MqttSubscriber

    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    port = free_port()
    sub = MqttSubscriber(MqttConfig(host="127.0.0.1", port=port), "rec-test", ["edge_fer/+/events"],
                         lambda msg: None, session_expiry=60).start()
    broker = Broker(tmp_path, port=port)
    try:
        assert until(lambda: any("unreachable" in r.getMessage() for r in caplog.records), 10)
        broker.start()
        assert until(lambda: any("subscribed" in r.getMessage() for r in caplog.records), 15)
    finally:
        sub.stop()
        broker.stop()
    said = [r.getMessage() for r in caplog.records if "MQTT" in r.getMessage()]
    # One line per change of state (not one per retry), each with its reason.
    assert said == [f"MQTT broker 127.0.0.1:{port} unreachable (connection refused: nothing listens on that port); "
                    "retrying", f"MQTT connected to 127.0.0.1:{port} (new session)"], said


class Link:
    """A TCP front for mosquitto that can hang (stop passing the client's bytes on: what the client sends stays
    unacknowledged until it flows again), drop its connections, and turn into a broker without MQTT 5."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self.refuse_v5 = False
        self._open: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        first = b""
        with contextlib.suppress(OSError):
            while len(first) < 9:  # as Mqtt311OnlyBroker: the CONNECT's protocol level is its 9th byte
                chunk = conn.recv(64)
                if not chunk:
                    return
                first += chunk
        if self.refuse_v5 and first[8] == 5:
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        up.sendall(first)
        self._open += [conn, up]
        threading.Thread(target=self._pipe, args=(up, conn, False), daemon=True).start()
        self._pipe(conn, up, True)

    def _pipe(self, a: socket.socket, b: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                if held:
                    self.flowing.wait()
                b.sendall(data)

    def drop(self) -> None:
        """Close every connection through the link, as a network that fails."""
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open.clear()

    def close(self) -> None:
        self.flowing.set()
        self.drop()
        self.sock.close()


def test_events_in_flight_count_toward_the_bound_and_arrive_in_order(broker: Broker) -> None:
    link = Link(broker.port)
    sub = Subscriber(broker.port, "edge_fer/cam/events")
    next_event = events()
    try:
        with make(link.port, queue_size=5, discovery=False) as pub:
            assert pub.connected.wait(10)
            assert pub.publish_event(next_event()) and sub.wait_for(lambda s: len(s.messages) == 1, 10)
            assert until(lambda: pub.pending() == 0, 10)  # its PUBACK is in
            link.flowing.clear()  # connected, and nothing the publisher sends is acknowledged from now on
            accepted = [pub.publish_event(next_event()) for _ in range(8)]
            # The five accepted are handed to paho and wait for their PUBACK: they are the queue now.
            assert until(lambda: pub.pending() == 5 and pub.connected.is_set(), 10), pub.pending()
            assert accepted == [True] * 5 + [False] * 3 and pub.dropped == 3
            link.flowing.set()
            assert sub.wait_for(lambda s: len(s.messages) == 6, 10), len(sub.messages)
            assert until(lambda: pub.pending() == 0, 10)
            assert pub.publish_event(next_event())  # room again
            assert sub.wait_for(lambda s: len(s.messages) == 7, 10)
    finally:
        sub.close()
        link.close()
    assert [m.json()["seq"] for m in sub.messages] == [1, 2, 3, 4, 5, 6, 10]


def test_events_in_flight_at_a_broker_crash_go_first_after_the_reconnect(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edge_fer/cam/events")
    next_event = events()
    pub = make(broker.port, discovery=False).start()
    try:
        assert pub.connected.wait(10)
        for _ in range(10):
            assert pub.publish_event(next_event())
        assert sub.wait_for(lambda s: len(s.messages) == 10, 10)
        sub.close()
        held = [pub.publish_event(next_event()) for _ in range(20)]
        broker.stop()  # a crash: some of these are still in flight, unacknowledged
        assert until(lambda: not pub.connected.is_set(), 10)
        backlog = [pub.publish_event(next_event()) for _ in range(20)]  # while the broker is down
        assert all(held + backlog)
        broker.start()
        sub = Subscriber(broker.port, "edge_fer/cam/events")  # before the reconnect: its backoff is a second
        assert until(lambda: pub.connections == 2 and pub.pending() == 0, 20), pub.pending()
        assert sub.wait_for(lambda s: {m.json()["seq"] for m in s.messages} >= set(range(31, 51)), 10)
    finally:
        pub.stop(timeout=1)
        sub.close()
        broker.stop()
    seqs = [m.json()["seq"] for m in sub.messages]
    # QoS 1 may repeat an unacknowledged event, never reorder: each seq's first arrival comes in order.
    first = [q for i, q in enumerate(seqs) if q not in seqs[:i]]
    assert first == sorted(first) and first[-20:] == list(range(31, 51)), seqs


def test_the_publisher_uses_only_the_public_api_of_paho() -> None:
    """Private attributes of paho's client change between releases (2.0.0's `protocol` property recursed)."""
    import ast
    import inspect

    from edge_fer.messaging import mqtt

    tree = ast.parse(inspect.getsource(mqtt))
    clients = {"client", "_client", "old"}  # what mqtt.py calls its paho clients
    private = [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and n.attr.startswith("_") and not n.attr.startswith("__")
               and ((isinstance(n.value, ast.Name) and n.value.id in clients)
                    or (isinstance(n.value, ast.Attribute) and n.value.attr in clients))]
    assert private == []


def test_events_a_client_held_go_first_when_a_31_client_replaces_it(broker: Broker, caplog) -> None:
    caplog.set_level(logging.INFO, "edge_fer.messaging.mqtt")
    link = Link(broker.port)
    sub = Subscriber(broker.port, "edge_fer/cam/events")
    next_event = events()
    try:
        with make(link.port, discovery=False) as pub:
            assert pub.connected.wait(10) and pub.protocol == "5"
            assert until(lambda: pub.pending() == 0, 10)  # its availability and discovery are delivered
            link.flowing.clear()
            assert all(pub.publish_event(next_event()) for _ in range(3))
            assert until(lambda: pub.pending() == 3, 10)  # handed to paho, unacknowledged
            # The broker is replaced by one without MQTT 5 while they are in flight.
            link.refuse_v5 = True
            link.drop()
            link.flowing.set()
            assert until(lambda: pub.protocol == "3.1.1" and pub.connected.is_set(), 20), pub.state
            assert pub.publish_event(next_event())
            assert sub.wait_for(lambda s: len(s.messages) >= 4, 10), len(sub.messages)
            assert until(lambda: pub.pending() == 0, 10)
    finally:
        sub.close()
        link.close()
    assert [m.json()["seq"] for m in sub.messages] == [1, 2, 3, 4]
    assert "does not speak MQTT 5; using 3.1.1" in caplog.text
