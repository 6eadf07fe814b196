"""Where the daemon's events and state go: an MQTT broker, or nowhere when `mqtt.enabled` is false."""

from __future__ import annotations

from typing import Protocol

from edge_fer.config import Config
from edge_fer.messaging.connection import ConnectionState
from edge_fer.messaging.contract import Event, State


class Publisher(Protocol):
    """What the daemon needs of an event sink."""

    dropped: int

    @property
    def state(self) -> ConnectionState:
        """Where the connection to the broker stands."""

    def start(self) -> Publisher:
        """Begin connecting in the background."""

    def publish_event(self, event: Event) -> bool:
        """Queue one event; False when it was refused."""

    def publish_state(self, state: State) -> None:
        """Replace the device's state."""

    def publish_snapshot(self, jpeg: bytes) -> None:
        """Send a picture for Home Assistant's image entity; one that cannot go now is skipped."""

    def stop(self, timeout: float = 3.0) -> None:
        """Deliver what is queued within `timeout`, then disconnect."""


class NullPublisher:
    """Publishes nothing (`mqtt.enabled: false`), so the daemon never checks for a missing publisher."""

    dropped = 0
    state = ConnectionState.DISABLED

    def start(self) -> NullPublisher:
        """Nothing to connect to."""
        return self

    def publish_event(self, event: Event) -> bool:
        """Accept and forget."""
        return True

    def publish_state(self, state: State) -> None:
        """Forget."""

    def publish_snapshot(self, jpeg: bytes) -> None:
        """Forget."""

    def stop(self, timeout: float = 3.0) -> None:
        """Nothing to stop."""


def make_publisher(cfg: Config, labels: tuple[str, ...]) -> Publisher:
    """The daemon's publisher for this config; `labels` are the model's emotions (Home Assistant's options)."""
    if not cfg.mqtt.enabled:
        return NullPublisher()
    from edge_fer.messaging.mqtt import MqttPublisher  # paho is imported only when MQTT is on

    return MqttPublisher(cfg.mqtt, cfg.mqtt.device_id, labels=labels)
