"""Where an MQTT connection stands, and why an attempt failed: enums, without paho (publisher.py reads them)."""

from __future__ import annotations

from edge_fer.types import TextEnum


class ConnectionState(TextEnum):
    """Where a connection to the broker stands; the value is what the log and figures show."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    REFUSED = "refused"  # the broker answered the CONNECT with a failure
    UNREACHABLE = "unreachable"  # the attempt failed before MQTT (DNS, TLS, timeout, refused, network)
    LOST = "lost"  # an established connection ended; reconnecting
    TAKEN_OVER = "taken over"  # another client uses our client id; reconnecting after a backoff
    DISABLED = "disabled"  # mqtt.enabled is false



class Failure(TextEnum):
    """Why a connection attempt failed before MQTT."""

    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    NETWORK = "network"
    UNKNOWN = "unknown"

