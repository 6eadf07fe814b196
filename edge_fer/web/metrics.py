"""/metrics in Prometheus' text exposition format (0.0.4), written out by hand: no client library needed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from edge_fer import __version__
from edge_fer.messaging.connection import ConnectionState
from edge_fer.web.feed import Feed

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class WebCounts:
    """The server's own figures."""

    stream_clients: int
    event_clients: int
    encoded: int
    skipped: int
    refused: dict[str, int]


def label(value: str) -> str:
    """A label value, escaped as the format wants."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(feed: Feed, web: WebCounts) -> str:
    """Every metric, each with its HELP and TYPE."""
    counts = feed.counts()
    live = feed.latest
    lines: list[str] = []

    def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

    device = label(feed.device)
    metric("edge_fer_info", "gauge", "The running edge-fer: version and device id.",
           [(f'{{version="{label(__version__)}",device="{device}"}}', 1)])
    metric("edge_fer_uptime_seconds", "gauge", "Seconds since the daemon started.",
           [("", round(time.monotonic() - feed.started, 3))])
    metric("edge_fer_frames_total", "counter", "Frames processed by the pipeline.", [("", counts.frames)])
    metric("edge_fer_fps", "gauge", "Frames processed per second, over the last two seconds.",
           [("", round(live.fps, 3) if live is not None and feed.camera == "ok" else 0.0)])
    metric("edge_fer_faces", "gauge", "Faces in the newest frame.",
           [("", len(live.result.faces) if live is not None and feed.camera == "ok" else 0)])
    metric("edge_fer_events_total", "counter", "Track events by type (start, change, end).",
           [(f'{{type="{label(t)}"}}', n) for t, n in counts.events.items()])
    metric("edge_fer_dropped_frames_total", "counter",
           "Camera frames the pipeline was too busy to take (the newest one wins).", [("", counts.dropped_frames)])
    metric("edge_fer_dropped_events_total", "counter", "Events refused because the MQTT queue was full.",
           [("", counts.dropped_events)])
    bounds = feed.latency.bounds
    cumulative = feed.latency.cumulative()
    lines.extend(("# HELP edge_fer_event_latency_seconds From a frame's capture to its event being published.",
                  "# TYPE edge_fer_event_latency_seconds histogram"))
    lines.extend(f'edge_fer_event_latency_seconds_bucket{{le="{_number(b)}"}} {n}'
                 for b, n in zip((*bounds, math.inf), cumulative))
    lines.append(f"edge_fer_event_latency_seconds_sum {_number(round(feed.latency.sum, 6))}")
    lines.append(f"edge_fer_event_latency_seconds_count {cumulative[-1]}")
    metric("edge_fer_camera_state", "gauge", "The camera's state: 1 for the current one.",
           [(f'{{state="{label(s)}"}}', int(s == feed.camera)) for s in feed.camera_states])
    mqtt = counts.mqtt_state
    metric("edge_fer_mqtt_enabled", "gauge", "1 when events are published over MQTT.",
           [("", int(mqtt is not ConnectionState.DISABLED))])
    metric("edge_fer_mqtt_connected", "gauge", "1 while connected to the MQTT broker.",
           [("", int(mqtt is ConnectionState.CONNECTED))])
    metric("edge_fer_mqtt_state", "gauge", "Where the MQTT connection stands: 1 for the current state.",
           [(f'{{state="{label(str(s))}"}}', int(s is mqtt)) for s in ConnectionState])
    metric("edge_fer_mqtt_reconnects_total", "counter", "Connections to the broker after the first one.",
           [("", counts.mqtt_reconnects)])
    metric("edge_fer_mqtt_failed_connects_total", "counter", "Connection attempts that failed.",
           [("", counts.mqtt_failed_connects)])
    metric("edge_fer_web_stream_clients", "gauge", "Clients on the MJPEG stream now.", [("", web.stream_clients)])
    metric("edge_fer_web_event_clients", "gauge", "Clients on the event feed now.", [("", web.event_clients)])
    metric("edge_fer_web_encoded_frames_total", "counter", "Pictures encoded for the stream and snapshots.",
           [("", web.encoded)])
    metric("edge_fer_web_skipped_frames_total", "counter",
           "Encoded pictures a stream client missed because it was slow (each client drops for itself).",
           [("", web.skipped)])
    metric("edge_fer_web_refused_total", "counter",
           "Requests refused and connections closed, by reason (stalled: a stream client that stopped reading).",
           [(f'{{reason="{label(r)}"}}', n) for r, n in sorted(web.refused.items())])
    return "\n".join(lines) + "\n"

