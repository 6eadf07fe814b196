"""MQTT publishing with paho-mqtt 2 (the only module that imports paho), through its public API only."""

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
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_fer.config import MqttConfig
from edge_fer.messaging.connection import ConnectionState, Failure
from edge_fer.messaging.contract import Event, State
from edge_fer.messaging.homeassistant import discovery_config, discovery_topic, legacy_discovery_topics, snapshot_topic
from edge_fer.types import TextEnum

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
REFUSED = 0x80  # MQTT 5: a PUBACK reason code from here on means the broker refused the message (135: not authorized)


class Kind(TextEnum):
    """What a published message is: a refusal is logged once for each."""

    AVAILABILITY = "availability"
    EVENTS = "events"
    STATE = "state"
    SNAPSHOT = "snapshot"
    DISCOVERY = "discovery"


    @property
    def plural(self) -> str:
        """Messages of this kind, as the log names them."""
        return {Kind.AVAILABILITY: "availability messages", Kind.EVENTS: "events", Kind.STATE: "states",
                Kind.SNAPSHOT: "snapshots", Kind.DISCOVERY: "discovery messages"}[self]


class Reason(Protocol):
    """What the log needs of paho's reason codes."""

    value: int


def describe_failure(exc: BaseException | None, host: str) -> tuple[Failure, str]:
    """(kind, text) for a connection attempt that failed before MQTT: DNS, TLS, timeout, refused, network."""
    if isinstance(exc, socket.gaierror):
        return Failure.DNS, f"DNS: cannot resolve {host!r} ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure.TLS, f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return Failure.TLS, f"TLS: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return Failure.TIMEOUT, "timeout: no answer"
    if isinstance(exc, ConnectionRefusedError):
        return Failure.REFUSED, "connection refused: nothing listens on that port"
    if isinstance(exc, OSError):
        return Failure.NETWORK, f"network: {exc.strerror or exc}"
    return Failure.UNKNOWN, f"unknown: {exc!r}"


class ConnectionLog:
    """A connection's state as the log tells it: each change once, with its reason (reconnect attempts repeat)."""

    def __init__(self, where: str) -> None:
        self.where = where  # host:port
        self.state = ConnectionState.CONNECTING
        self.failure: Failure | None = None  # why, while UNREACHABLE

    def enter(self, state: ConnectionState, level: int, text: str, failure: Failure | None = None) -> None:
        """Log `text` if this is a change of state (another reason for being unreachable is one too)."""
        if (state, failure) != (self.state, self.failure):
            self.state, self.failure = state, failure
            log.log(level, text)

    def connected(self, detail: str) -> None:
        """The broker accepted the connection."""
        self.enter(ConnectionState.CONNECTED, logging.INFO, f"MQTT connected to {self.where} {detail}")

    def refused(self, reason: Reason) -> None:
        """The broker answered the CONNECT with a failure reason code."""
        self.enter(ConnectionState.REFUSED, logging.ERROR, f"MQTT broker {self.where} refused the connection: "
                                                           f"{reason} (reason code {reason.value}); retrying")

    def unreachable(self, host: str) -> None:
        """An attempt failed before MQTT; called inside paho's `except`, so the exception is current."""
        kind, text = describe_failure(sys.exc_info()[1], host)
        self.enter(ConnectionState.UNREACHABLE, logging.ERROR if kind is Failure.TLS else logging.WARNING,
                   f"MQTT broker {self.where} unreachable ({text}); retrying", kind)

    def lost(self, reason: Reason, kept: str) -> None:
        """An established connection ended; `kept` says what happens to the messages meanwhile."""
        self.enter(ConnectionState.LOST, logging.WARNING, f"MQTT connection to {self.where} lost ({reason}, "
                                                          f"reason code {reason.value}); {kept}")

    def taken_over(self) -> None:
        """Another client took our client id; the publisher says so itself, once."""
        self.state, self.failure = ConnectionState.TAKEN_OVER, None


@dataclass(frozen=True)
class _Sent:
    """A message handed to paho and not yet acknowledged: the connection it was handed over on, and an event's
    payload (to hand it again should its client be replaced)."""

    connection: int
    event: str | None
    kind: Kind
    topic: str


class MqttPublisher:
    """Availability, events, state and discovery for one device; keeps events while the broker is away.

    Events leave in order from one sender thread. Each message handed to paho is tracked by its mid until
    on_publish says it is delivered: that is the queue's size, and after a reconnect new events wait until
    paho has delivered what it held from before (it resends those itself, after anything published meanwhile)."""

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
        self.topics = {k: f"{self.base}/{k}" for k in (Kind.AVAILABILITY, Kind.EVENTS, Kind.STATE)}
        self.topics[Kind.SNAPSHOT] = snapshot_topic(cfg.prefix, device)
        self.ha_status = f"{cfg.discovery_prefix}/status"
        self.dropped = 0  # events that never reached the broker: a full queue, or the broker refused them
        self.refused: Counter[Kind] = Counter()  # messages the broker refused (MQTT 5 reason code >= 0x80), by kind
        self.failed_attempts = 0  # connection attempts that did not end in a CONNACK success
        self.takeovers = 0
        self.connections = 0  # successful connections so far: more than one is a reconnect
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
        # Our own lock, never held while calling paho: paho holds its own while it calls on_publish, which
        # takes this one.
        self._cond = threading.Condition()
        self._backlog: deque[str] = deque()  # events not yet handed to paho, in order
        self._in_flight: dict[int, _Sent] = {}  # mid -> what paho holds until on_publish
        self._events_in_flight: Counter[int] = Counter()  # events paho holds, by the connection they were given on
        # mids paho delivered before publish() had returned them to us, with the broker's refusal if it refused
        self._early: dict[int, Reason | None] = {}
        self._handing = 0  # events the sender has taken from the backlog and not yet seen a mid for
        self._online = False  # connected, as the sender sees it
        self._halt = False
        self._sender: threading.Thread | None = None
        self._swap = threading.Lock()  # the client is replaced (MQTT 5 -> 3.1.1) or stopped, not both
        self.client_id = cfg.client_id or f"edge-fer-{device}"
        if not announce:
            # Its own id, so a one-shot run never takes over the running daemon's connection.
            self.client_id = f"{self.client_id}-oneshot-{os.getpid()}"
        v5 = cfg.protocol in ("auto", "5")
        self._version = "5" if v5 else "3.1.1"
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
        self._client = self._new_client()

    def _new_client(self) -> paho.Client:
        """A paho client for the MQTT version in use, with our will, credentials, bounds and callbacks."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5 if self._version == "5" else paho.MQTTv311)
        # paho keeps QoS 1 messages it was given while disconnected and sends them, in order, on reconnect;
        # its own bound only backs up ours (publish_event).
        client.max_queued_messages_set(self.cfg.queue_size + ANNOUNCE_ROOM)
        client.reconnect_delay_set(*RECONNECT_DELAY)
        if self.announce:
            client.will_set(self.topics[Kind.AVAILABILITY], OFFLINE, qos=1, retain=True)
        _authenticate(client, self.cfg)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    @property
    def protocol(self) -> str:
        """The MQTT version in use: "5" or "3.1.1"."""
        return self._version

    @property
    def state(self) -> ConnectionState:
        """Where the connection stands now."""
        return self._log.state

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if reason == "Unsupported protocol version" and self.cfg.protocol == "auto" and self._version == "5":
                log.info("MQTT broker %s does not speak MQTT 5; using 3.1.1", self.where)
                self._version = "3.1.1"
                self._event_props = None
                # A client's version is fixed when it is made: this one stops, a 3.1.1 one takes its place.
                client.disconnect()
                threading.Thread(target=self._replace_client, args=(client,), name="mqtt-3.1.1", daemon=True).start()
                return
            self.failed_attempts += 1
            self._log.refused(reason)
            return
        self._connected_at = time.monotonic()
        self._log.connected(f"as {self.base} (MQTT {self.protocol}, client id {self.client_id})")
        with self._cond:
            self.connections += 1  # what paho holds from before is of an earlier connection now
            self._online = True
            self._cond.notify_all()
        if self.announce:
            self._publish(self.topics[Kind.AVAILABILITY], ONLINE, Kind.AVAILABILITY, retain=True)
            self._discovery()
        self.connected.set()

    def _replace_client(self, old: paho.Client) -> None:
        """On a thread of its own, once `old` has stopped: events it held go back to the front of the backlog."""
        old.loop_stop()
        with self._swap:
            if self._stopping:
                return
            with self._cond:
                held = [sent.event for sent in self._in_flight.values() if sent.event is not None]
                self._backlog.extendleft(reversed(held))
                self._in_flight.clear()
                self._events_in_flight.clear()
                self._early.clear()
            self._client = self._new_client()
            self._connect()

    def _discovery(self) -> None:
        """Announce this device to Home Assistant, or remove what an earlier run announced."""
        cfg = self.cfg
        # The per-sensor configs of edge-fer 0.1 go first, so that their unique ids are free again.
        for topic in legacy_discovery_topics(cfg.discovery_prefix, self.device):
            self._publish(topic, b"", Kind.DISCOVERY, retain=True)
        topic = discovery_topic(cfg.discovery_prefix, self.device)
        if not cfg.discovery:
            self._publish(topic, b"", Kind.DISCOVERY, retain=True)
            return
        self._client.subscribe(self.ha_status, qos=1)
        doc = discovery_config(cfg.prefix, self.device, self.labels, cfg.support_url,
                               snapshot=cfg.snapshot_seconds > 0)
        self._publish(topic, json.dumps(doc), Kind.DISCOVERY, retain=True)

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
            self._publish(self.topics[Kind.AVAILABILITY], ONLINE, Kind.AVAILABILITY, retain=True)
            self._discovery()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.failed_attempts += 1
        self._log.unreachable(self.cfg.host)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._online = False
            self._cond.notify_all()
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
        self._log.taken_over()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Reason, properties: Any) -> None:
        """paho delivered `mid` (QoS 1: the broker answered it, MQTT 5 with a reason code); called with paho's own
        lock held."""
        refusal = reason if reason.value >= REFUSED else None
        first = False
        with self._cond:
            sent = self._in_flight.pop(mid, None)
            if sent is None:
                self._early[mid] = refusal
            elif sent.event is not None:
                self._events_in_flight[sent.connection] -= 1
                if not self._events_in_flight[sent.connection]:
                    del self._events_in_flight[sent.connection]
            if sent is not None and refusal is not None:
                first = self._count_refusal(sent.kind)
            self._cond.notify_all()
        if sent is not None and refusal is not None and first:
            self._log_refusal(sent.kind, sent.topic, refusal)

    def _count_refusal(self, kind: Kind) -> bool:
        """With the lock held: one more message of `kind` the broker refused (a refused event is a dropped one);
        True for the first of its kind."""
        self.refused[kind] += 1
        if kind is Kind.EVENTS:
            self.dropped += 1
        return self.refused[kind] == 1

    def _log_refusal(self, kind: Kind, topic: str, reason: Reason) -> None:
        """The first refusal of a kind, in one line; the rest are only counted (a wrong ACL refuses them all)."""
        who = f"user {self.cfg.username!r}" if self.cfg.username else "this client"
        counted = "counted in the state's dropped_events" if kind is Kind.EVENTS else "dropped"
        log.error("MQTT broker %s refused a message on %s: %s (reason code %d); may %s publish there (the "
                  "broker's ACL)? Refused %s are %s and not logged again", self.where, topic, reason, reason.value,
                  who, kind.plural, counted)

    def _publish(self, topic: str, payload: str | bytes, kind: Kind, qos: int = 1, retain: bool = False,
                 event: str | None = None, props: Properties | None = None) -> None:
        """Hand one message to paho and track it by its mid until it is delivered or refused."""
        with self._cond:
            connection = self.connections
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        refusal: Reason | None = None
        first = False
        with self._cond:
            if event is not None:
                self._handing -= 1
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:  # paho's own bound: ours should have come first
                log.warning("MQTT: paho's queue is full; a message to %s was dropped", topic)
                if event is not None:
                    self.dropped += 1
            elif info.mid in self._early:
                refusal = self._early.pop(info.mid)
                if refusal is not None:
                    first = self._count_refusal(kind)
            else:
                self._in_flight[info.mid] = _Sent(connection, event, kind, topic)
                if event is not None:
                    self._events_in_flight[connection] += 1
            self._cond.notify_all()
        if refusal is not None and first:
            self._log_refusal(kind, topic, refusal)

    def _may_send(self) -> bool:
        """With the lock held: an event can go now (connected, and nothing from an earlier connection is held)."""
        return self._online and bool(self._backlog) and not any(
            c < self.connections for c in self._events_in_flight)

    def _send_events(self) -> None:
        """The sender thread: the backlog, in order, whenever events may go."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._halt or self._may_send())
                if self._halt:
                    return
                payload = self._backlog.popleft()
                self._handing += 1
            self._publish(self.topics[Kind.EVENTS], payload, Kind.EVENTS, qos=self.cfg.qos, event=payload,
                          props=self._event_props)

    def _connect(self) -> None:
        if self._version == "5":
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                                       clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY, properties=self._connect_props)
        else:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()

    def start(self) -> MqttPublisher:
        """Connect in the background; a broker that is down is retried with backoff."""
        self._sender = threading.Thread(target=self._send_events, name="mqtt-events", daemon=True)
        self._sender.start()
        with self._swap:
            self._connect()
        return self

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish_event(self, event: Event) -> bool:
        """Queue one event for the events topic; False (and counted) when the queue is full."""
        payload = json.dumps(event.to_json())
        with self._cond:
            queued = len(self._backlog) + self._handing + sum(self._events_in_flight.values())
            if queued < self.cfg.queue_size:
                self._backlog.append(payload)
                self._cond.notify_all()
                return True
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 100 == 0:
            log.warning("MQTT queue full (%d events): %d events dropped so far", self.cfg.queue_size, dropped)
        return False

    def publish_state(self, state: State) -> None:
        """Replace the retained state; skipped while disconnected (the next one supersedes it)."""
        if self.connected.is_set():
            self._publish(self.topics[Kind.STATE], json.dumps(state.to_json()), Kind.STATE, retain=True)

    def publish_snapshot(self, jpeg: bytes) -> None:
        """A picture for Home Assistant's image entity, not retained; skipped while disconnected or while the one
        before is still on its way (a slow link gets fewer pictures, never a queue of them)."""
        if not self.connected.is_set():
            return
        with self._cond:
            if any(sent.kind is Kind.SNAPSHOT for sent in self._in_flight.values()):
                return
        self._publish(self.topics[Kind.SNAPSHOT], jpeg, Kind.SNAPSHOT)

    def pending(self) -> int:
        """Messages queued and not yet delivered: events not handed to paho, and what paho holds for us."""
        with self._cond:
            return len(self._backlog) + self._handing + len(self._in_flight)

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline, give queued messages until `timeout` to leave, then disconnect."""
        deadline = time.monotonic() + timeout
        with self._reannounce_lock:
            self._closing = True
            if self._reannounce_timer is not None:
                self._reannounce_timer.cancel()
        if self.connected.is_set():
            # Every queued event is handed to paho first: paho sends in order, so the ends leave before offline.
            with self._cond:
                self._cond.wait_for(lambda: not (self._backlog or self._handing) or not self._online,
                                    max(0.0, deadline - time.monotonic()))
            if self.announce:
                self._publish(self.topics[Kind.AVAILABILITY], OFFLINE, Kind.AVAILABILITY, retain=True)
            with self._cond:
                self._cond.wait_for(lambda: not (self._backlog or self._handing or self._in_flight)
                                    or not self._online, max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._halt = True
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join()
        left = self.pending()
        if left:
            log.warning("MQTT: %d messages not delivered at shutdown", left)
        with self._swap:
            self._stopping = True
            client = self._client
        client.disconnect()
        client.loop_stop()
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
        if self._log.state is ConnectionState.CONNECTED and (reason.is_failure or reason.value != 0):
            self._log.lost(reason, "the broker keeps our messages until it is back")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._on_message_cb(Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._connection))

    def ack(self, msg: Incoming) -> None:
        """Tell the broker `msg` is kept. One from an earlier connection is not: the broker sends it again."""
        if msg.qos and msg.connection == self._connection:
            self._client.ack(msg.mid, msg.qos)

    def start(self) -> MqttSubscriber:
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
