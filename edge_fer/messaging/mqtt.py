"""MQTT publishing with paho-mqtt 2 (the only module that imports paho)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_fer.config import MqttConfig
from edge_fer.messaging.events import discovery_config, discovery_topic, legacy_discovery_topics

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with this client id
# Without MQTT 5 a takeover is only a connection the broker closes: this many in a row, each within
# QUICK_SECONDS of its CONNACK, are taken for one.
QUICK_SECONDS, QUICK_LIMIT = 5.0, 3
TAKEOVER_BACKOFF = (30, 300)  # first and longest wait after a takeover, doubling in between
STABLE_SECONDS = 60.0  # a connection that lasted this long ends the takeover backoff
RECONNECT_DELAY = (1, 30)
ANNOUNCE_ROOM = 16  # room in paho's queue beyond the events' bound for availability, discovery and state
# Anyone on the broker may publish Home Assistant's birth message: answered at most once in this many seconds,
# the last one within a window once it ends, so a flood of them cannot fill the queue that events need.
REANNOUNCE_SECONDS = 5.0


def describe_failure(exc: BaseException | None, host: str) -> tuple[str, str]:
    """(kind, text) for a connection attempt that failed before MQTT: DNS, TLS, timeout, refused, network."""
    if isinstance(exc, socket.gaierror):
        return "dns", f"DNS: cannot resolve {host!r} ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout", "timeout: no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused: nothing listens on that port"
    if isinstance(exc, OSError):
        return "network", f"network: {exc.strerror or exc}"
    return "unknown", f"unknown: {exc!r}"


class ConnectionLog:
    """A connection's state as the log tells it: each change once, with its reason (reconnect attempts repeat)."""

    def __init__(self, where: str) -> None:
        self.where = where  # host:port
        self.state = "connecting"  # connecting, connected, refused, unreachable:<kind>, lost, taken over

    def enter(self, state: str, level: int, text: str) -> None:
        """Log `text` if this is a change of state."""
        if state != self.state:
            self.state = state
            log.log(level, text)

    def connected(self, detail: str) -> None:
        """The broker accepted the connection."""
        self.enter("connected", logging.INFO, f"MQTT connected to {self.where} {detail}")

    def refused(self, reason: Any) -> None:
        """The broker answered the CONNECT with a failure reason code."""
        self.enter("refused", logging.ERROR, f"MQTT broker {self.where} refused the connection: {reason} "
                                             f"(reason code {reason.value}); retrying")

    def unreachable(self, host: str) -> None:
        """An attempt failed before MQTT; called inside paho's `except`, so the exception is current."""
        kind, text = describe_failure(sys.exc_info()[1], host)
        self.enter(f"unreachable:{kind}", logging.ERROR if kind == "tls" else logging.WARNING,
                   f"MQTT broker {self.where} unreachable ({text}); retrying")

    def lost(self, reason: Any, kept: str) -> None:
        """An established connection ended; `kept` says what happens to the messages meanwhile."""
        self.enter("lost", logging.WARNING, f"MQTT connection to {self.where} lost ({reason}, reason code "
                                            f"{reason.value}); {kept}")


class MqttPublisher:
    """Availability, events, state and discovery for one device; keeps events while the broker is away."""

    def __init__(self, cfg: MqttConfig, device: str, announce: bool = True, labels: tuple[str, ...] = ()) -> None:
        """`announce=False` (one-shot --publish) sends events only: no availability, no discovery.

        `labels` are the emotions the model knows: the options of Home Assistant's emotion sensor."""
        self.cfg = cfg
        self.device = device
        self.announce = announce
        self.labels = labels
        self.base = f"{cfg.prefix}/{device}"
        self.where = f"{cfg.host}:{cfg.port}"
        self._log = ConnectionLog(self.where)
        self.topics = {k: f"{self.base}/{k}" for k in ("availability", "events", "state")}
        self.ha_status = f"{cfg.discovery_prefix}/status"
        self.dropped = 0
        self.failed_attempts = 0  # connection attempts that did not end in a CONNACK success
        self.takeovers = 0
        self.connected = threading.Event()
        self._connected_at: float | None = None
        self._quick = 0  # connections in a row the broker closed soon after accepting them
        self._takeover_delay = TAKEOVER_BACKOFF[0]
        self._stopping = False
        self.deferred_births = 0  # Home Assistant birth messages not answered at once (see REANNOUNCE_SECONDS)
        self._reannounce_lock = threading.Lock()
        self._reannounced_at = -math.inf
        self._reannounce_timer: threading.Timer | None = None
        self._closing = False  # set by stop: nothing is announced after "offline"
        # Events wait here, in order, from a disconnect until paho has sent again what it held from before:
        # paho sends a message published from another thread during its reconnect ahead of those.
        self._backlog: deque[str] = deque()
        self._open = False
        self.client_id = cfg.client_id or f"edge-fer-{device}"
        if not announce:
            # Its own id, so a one-shot run never takes over the running daemon's connection.
            self.client_id = f"{self.client_id}-oneshot-{os.getpid()}"
        v5 = cfg.protocol in ("auto", "5")
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                   protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
        self._connect_props: Properties | None = None
        self._event_props: Properties | None = None
        if v5:
            # A session that outlives a dropped connection keeps the subscription to Home Assistant's status,
            # so its birth message is not missed while reconnecting; one-shot runs leave nothing behind.
            self._connect_props = Properties(PacketTypes.CONNECT)
            self._connect_props.SessionExpiryInterval = cfg.session_expiry_seconds if announce else 0
            if cfg.message_expiry_seconds:
                self._event_props = Properties(PacketTypes.PUBLISH)
                self._event_props.MessageExpiryInterval = cfg.message_expiry_seconds
        # paho keeps QoS 1 messages published while disconnected and sends them, in order, on reconnect;
        # a full queue refuses the newest event.
        self._client.max_queued_messages_set(cfg.queue_size + ANNOUNCE_ROOM)
        self._client.reconnect_delay_set(*RECONNECT_DELAY)
        if announce:
            self._client.will_set(self.topics["availability"], OFFLINE, qos=1, retain=True)
        _authenticate(self._client, cfg)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = lambda *_: self._release()
        # paho's own lock for its message queue: it holds it while calling on_publish, so taking it for the
        # backlog too keeps one lock order.
        self._lock = self._client._out_message_mutex

    @property
    def protocol(self) -> str:
        """The MQTT version in use: "5" or "3.1.1"."""
        # The attribute the fallback below sets; paho 2.0.0's public `protocol` property recurses forever.
        return "5" if self._client._protocol == paho.MQTTv5 else "3.1.1"

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if reason == "Unsupported protocol version" and self.cfg.protocol == "auto" and self.protocol == "5":
                log.info("MQTT broker %s does not speak MQTT 5; using 3.1.1", self.where)
                # paho itself downgrades 3.1.1 to 3.1 this way; the next reconnect speaks 3.1.1.
                client._protocol = paho.MQTTv311
                client._clean_session = True
                self._event_props = None
                return
            self.failed_attempts += 1
            self._log.refused(reason)
            return
        self._connected_at = time.monotonic()
        self._log.connected(f"as {self.base} (MQTT {self.protocol}, client id {self.client_id})")
        if self.announce:
            client.publish(self.topics["availability"], ONLINE, qos=1, retain=True)
            self._discovery(client)
        self.connected.set()
        self._release()

    def _discovery(self, client: paho.Client) -> None:
        """Announce this device to Home Assistant, or remove what an earlier run announced."""
        cfg = self.cfg
        # The per-sensor configs of edge-fer 0.1 go first, so that their unique ids are free again.
        for topic in legacy_discovery_topics(cfg.discovery_prefix, self.device):
            client.publish(topic, b"", qos=1, retain=True)
        topic = discovery_topic(cfg.discovery_prefix, self.device)
        if not cfg.discovery:
            client.publish(topic, b"", qos=1, retain=True)
            return
        client.subscribe(self.ha_status, qos=1)
        doc = discovery_config(cfg.prefix, self.device, self.labels, cfg.support_url)
        client.publish(topic, json.dumps(doc), qos=1, retain=True)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # A retained "online" is an old birth message: the announcement on connect already covers it.
        if msg.topic == self.ha_status and msg.payload == ONLINE.encode() and not msg.retain:
            self._birth()

    def _birth(self) -> None:
        """Announce again now, or once the window since the last re-announcement ends: one for all that wait."""
        with self._reannounce_lock:
            wait = self._reannounced_at + REANNOUNCE_SECONDS - time.monotonic()
            if wait <= 0 and self._reannounce_timer is None:
                log.info("Home Assistant is online: discovery announced again")
                self._reannounce()
                return
            self.deferred_births += 1
            if self._reannounce_timer is None:
                self._reannounce_timer = threading.Timer(wait, self._window_ended)
                self._reannounce_timer.daemon = True
                self._reannounce_timer.start()
            deferred = self.deferred_births
        if deferred == 1 or deferred % 1000 == 0:
            log.warning("Home Assistant is online again within %.0f s (%d times so far; anyone on the broker may "
                        "publish to %s): discovery is announced again at most every %.0f s", REANNOUNCE_SECONDS,
                        deferred, self.ha_status, REANNOUNCE_SECONDS)

    def _window_ended(self) -> None:
        """On the timer's thread: the birth messages that waited are answered."""
        with self._reannounce_lock:
            self._reannounce_timer = None
            self._reannounce()

    def _reannounce(self) -> None:
        """Availability and discovery again, with the lock held; while disconnected, connecting announces."""
        self._reannounced_at = time.monotonic()
        if self.connected.is_set() and not self._closing:
            self._client.publish(self.topics["availability"], ONLINE, qos=1, retain=True)
            self._discovery(self._client)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.failed_attempts += 1
        self._log.unreachable(self.cfg.host)

    def _release(self) -> None:
        """On paho's thread, once nothing from before the reconnect is left to resend: the backlog goes, in order."""
        with self._lock:
            if self._open or not self.connected.is_set() or any(
                    m.state == paho.mqtt_ms_publish for m in self._client._out_messages.values()):
                return
            while self._backlog:
                self._client.publish(self.topics["events"], self._backlog.popleft(), qos=self.cfg.qos,
                                     properties=self._event_props)
            self._open = True

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._open = False
        self.connected.clear()
        lasted = time.monotonic() - self._connected_at if self._connected_at is not None else None
        self._connected_at = None
        if self._stopping or lasted is None:
            return
        self._quick = self._quick + 1 if lasted < QUICK_SECONDS else 0
        if lasted >= STABLE_SECONDS:
            self._takeover_delay = TAKEOVER_BACKOFF[0]
        if reason.value == SESSION_TAKEN_OVER:
            self._taken_over(f"the broker says {reason}")
        elif self._quick >= QUICK_LIMIT:
            self._taken_over(f"the broker closed {self._quick} connections in a row within "
                             f"{QUICK_SECONDS:.0f} s of accepting them")
        else:
            client.reconnect_delay_set(*RECONNECT_DELAY)
            self._log.lost(reason, "events are kept until it is back")

    def _taken_over(self, why: str) -> None:
        """Another client uses our client id: say so once, and stop kicking it off every second."""
        delay = self._takeover_delay
        self._takeover_delay = min(delay * 2, TAKEOVER_BACKOFF[1])
        self._quick = 0
        self.takeovers += 1
        self._client.reconnect_delay_set(delay, max(delay, RECONNECT_DELAY[1]))
        if self.takeovers == 1:
            log.error("MQTT client id %r is in use by another client (%s): two edge-fer daemons with device id "
                      "%r, or one mqtt.client_id set twice? Each would take the other's connection; "
                      "reconnecting in %d s", self.client_id, why, self.device, delay)
        else:
            log.warning("MQTT client id %r taken over again (%d times; %s); reconnecting in %d s",
                        self.client_id, self.takeovers, why, delay)
        self._log.state = "taken over"

    def start(self) -> "MqttPublisher":
        """Connect in the background; a broker that is down is retried with backoff."""
        if self.protocol == "5":
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                                       clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY, properties=self._connect_props)
        else:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()
        return self

    def __enter__(self) -> "MqttPublisher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish_event(self, doc: dict[str, Any]) -> bool:
        """Queue one event for the events topic; False (and counted) when the queue is full."""
        payload = json.dumps(doc)
        with self._lock:
            full = self.pending() >= self.cfg.queue_size
            if not full and self._open:
                self._client.publish(self.topics["events"], payload, qos=self.cfg.qos, properties=self._event_props)
            elif not full:
                self._backlog.append(payload)
        if full:
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
        """Messages queued and not yet acknowledged."""
        return len(self._client._out_messages) + len(self._backlog)  # paho has no public accessor for its queue

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline, give queued messages until `timeout` to leave, then disconnect."""
        deadline = time.monotonic() + timeout
        with self._reannounce_lock:
            self._closing = True
            if self._reannounce_timer is not None:
                self._reannounce_timer.cancel()
        if self.connected.is_set():
            if self.announce:
                self._client.publish(self.topics["availability"], OFFLINE, qos=1, retain=True)
            while self.pending() and time.monotonic() < deadline and self.connected.is_set():
                time.sleep(0.02)
        if self.pending():
            log.warning("MQTT: %d messages not delivered at shutdown", self.pending())
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()


def _authenticate(client: paho.Client, cfg: MqttConfig) -> None:
    """Username, password and TLS from the config."""
    if cfg.username or cfg.password:
        client.username_pw_set(cfg.username or None, cfg.password or None)
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
        self._log = ConnectionLog(f"{cfg.host}:{cfg.port}")
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
        self._client.on_connect_fail = lambda client, userdata: self._log.unreachable(cfg.host)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._log.refused(reason)
            return
        self._connection += 1
        self._log.connected(f"({'resumed' if flags.session_present else 'new'} session)")
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any,
                      ) -> None:
        refused = [f"{t} ({r})" for t, r in zip(self.topics, reasons) if r.is_failure]
        if refused:
            log.error("MQTT broker refused the subscription to %s", ", ".join(refused))
        else:
            log.info("subscribed to %s", ", ".join(self.topics))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._log.state == "connected" and (reason.is_failure or reason.value != 0):
            self._log.lost(reason, "the broker keeps our messages until it is back")

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
