"""MQTT publishing with paho-mqtt 2 (the only module that imports paho)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_fer.config import MqttConfig
from edge_fer.errors import ConfigError
from edge_fer.events import discovery_messages

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"


def resolve_password(cfg: MqttConfig) -> str | None:
    """The password from the config, an environment variable, or a file, in that order."""
    if cfg.password:
        return cfg.password
    if cfg.password_env:
        if cfg.password_env not in os.environ:
            raise ConfigError(f"mqtt.password_env: environment variable {cfg.password_env} is not set")
        return os.environ[cfg.password_env]
    if cfg.password_file:
        try:
            return Path(cfg.password_file).expanduser().read_text().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            raise ConfigError(f"mqtt.password_file: cannot read {cfg.password_file} ({e})") from None
    return None


class MqttPublisher:
    """Availability, events, state and discovery for one device; keeps events while the broker is away."""

    def __init__(self, cfg: MqttConfig, device: str, announce: bool = True) -> None:
        """`announce=False` (one-shot --publish) sends events only: no availability, no discovery."""
        self.cfg = cfg
        self.device = device
        self.announce = announce
        self.base = f"{cfg.prefix}/{device}"
        self.topics = {k: f"{self.base}/{k}" for k in ("availability", "events", "state")}
        self.dropped = 0
        self.connected = threading.Event()
        self._state = "connecting"  # connecting, connected, refused, lost
        client_id = cfg.client_id or f"edge-fer-{device}"
        if not announce:
            # Its own id, so a one-shot run never takes over the running daemon's connection.
            client_id = f"{client_id}-oneshot-{os.getpid()}"
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        # paho keeps QoS 1 messages published while disconnected and sends them, in order, on reconnect;
        # its queue bound is ours, and a full queue refuses the newest event.
        self._client.max_queued_messages_set(cfg.queue_size)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        if announce:
            self._client.will_set(self.topics["availability"], OFFLINE, qos=1, retain=True)
        password = resolve_password(cfg)
        if cfg.username or password:
            self._client.username_pw_set(cfg.username or None, password)
        if cfg.tls:
            self._client.tls_set(ca_certs=cfg.ca_certs or None, certfile=cfg.certfile or None,
                                 keyfile=cfg.keyfile or None)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _enter(self, state: str, level: int, text: str) -> None:
        # Reconnect attempts repeat; the log says each change of state once.
        if state != self._state:
            self._state = state
            log.log(level, text)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._enter("refused", logging.ERROR, f"MQTT broker {self.cfg.host}:{self.cfg.port} refused the "
                                                  f"connection: {reason}; retrying")
            return
        self._enter("connected", logging.INFO, f"MQTT connected to {self.cfg.host}:{self.cfg.port} as {self.base}")
        if self.announce:
            client.publish(self.topics["availability"], ONLINE, qos=1, retain=True)
            if self.cfg.discovery:
                for topic, doc in discovery_messages(self.cfg.prefix, self.cfg.discovery_prefix, self.device).items():
                    client.publish(topic, json.dumps(doc), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if self._state == "connected" and (reason.is_failure or reason.value != 0):
            self._enter("lost", logging.WARNING, f"MQTT connection to {self.cfg.host}:{self.cfg.port} lost "
                                                 f"({reason}); events are kept until it is back")

    def start(self) -> "MqttPublisher":
        """Connect in the background; a broker that is down is retried with backoff."""
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()
        return self

    def __enter__(self) -> "MqttPublisher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish_event(self, doc: dict[str, Any]) -> bool:
        """Queue one event for the events topic; False (and counted) when the queue is full."""
        info = self._client.publish(self.topics["events"], json.dumps(doc), qos=self.cfg.qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("MQTT queue full (%d events): %d events dropped so far", self.cfg.queue_size, self.dropped)
            return False
        return True

    def publish_state(self, doc: dict[str, Any]) -> None:
        """Replace the retained state; skipped while disconnected (the next one supersedes it)."""
        if self.connected.is_set():
            self._client.publish(self.topics["state"], json.dumps(doc), qos=1, retain=True)

    def pending(self) -> int:
        """Messages handed to paho and not yet acknowledged."""
        return len(self._client._out_messages)  # paho has no public accessor for its queue length

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline, give queued messages until `timeout` to leave, then disconnect."""
        deadline = time.monotonic() + timeout
        if self.connected.is_set():
            if self.announce:
                self._client.publish(self.topics["availability"], OFFLINE, qos=1, retain=True)
            while self.pending() and time.monotonic() < deadline and self.connected.is_set():
                time.sleep(0.02)
        if self.pending():
            log.warning("MQTT: %d messages not delivered at shutdown", self.pending())
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()


def _authenticate(client: paho.Client, cfg: MqttConfig) -> None:
    """Username, password and TLS from the config."""
    password = resolve_password(cfg)
    if cfg.username or password:
        client.username_pw_set(cfg.username or None, password)
    if cfg.tls:
        client.tls_set(ca_certs=cfg.ca_certs or None, certfile=cfg.certfile or None, keyfile=cfg.keyfile or None)


@dataclass(frozen=True)
class Incoming:
    """One received message, to be acknowledged with MqttSubscriber.ack once it is safely kept."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection brought it: a packet id means nothing on the next one


class MqttSubscriber:
    """A durable MQTT 5 subscriber: a persistent session under a fixed client id, QoS 1, acknowledged by hand."""

    def __init__(self, cfg: MqttConfig, client_id: str, topics: list[str], on_message: Callable[[Incoming], None],
                 session_expiry: int) -> None:
        """`session_expiry` (seconds): how long the broker keeps the session and its messages while we are away."""
        self.cfg = cfg
        self.topics = topics
        self._state = "connecting"
        self._on_message_cb = on_message
        self._session_expiry = session_expiry
        self._connection = 0
        # manual_ack: the broker redelivers whatever was not acknowledged, so only stored messages are.
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                                   manual_ack=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        _authenticate(self._client, cfg)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_connect_fail = lambda client, userdata: self._enter(
            "unreachable", logging.WARNING, f"MQTT broker {cfg.host}:{cfg.port} not reachable; retrying")

    def _enter(self, state: str, level: int, text: str) -> None:
        if state != self._state:
            self._state = state
            log.log(level, text)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._enter("refused", logging.ERROR, f"MQTT broker {self.cfg.host}:{self.cfg.port} refused the "
                                                  f"connection: {reason}; retrying")
            return
        self._connection += 1
        resumed = "resumed" if flags.session_present else "new"
        self._enter("connected", logging.INFO, f"MQTT connected to {self.cfg.host}:{self.cfg.port} ({resumed} "
                                               "session)")
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any,
                      ) -> None:
        refused = [f"{t} ({r})" for t, r in zip(self.topics, reasons) if r.is_failure]
        if refused:
            log.error("MQTT broker refused the subscription to %s", ", ".join(refused))
        else:
            log.info("subscribed to %s", ", ".join(self.topics))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._state == "connected" and (reason.is_failure or reason.value != 0):
            self._enter("lost", logging.WARNING, f"MQTT connection to {self.cfg.host}:{self.cfg.port} lost "
                                                 f"({reason}); the broker keeps our messages until it is back")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._on_message_cb(Incoming(msg.topic, msg.payload, msg.mid, msg.qos, self._connection))

    def ack(self, msg: Incoming) -> None:
        """Tell the broker `msg` is kept. One from an earlier connection is not: the broker sends it again."""
        if msg.qos and msg.connection == self._connection:
            self._client.ack(msg.mid, msg.qos)

    def start(self) -> "MqttSubscriber":
        """Connect in the background with clean start off; a broker that is down is retried with backoff."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, clean_start=False,
                                   properties=props)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect; the session and anything unacknowledged stay with the broker."""
        self._client.disconnect()
        self._client.loop_stop()
