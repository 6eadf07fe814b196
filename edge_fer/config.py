"""Configuration: typed sections with their defaults, validated once when loaded."""

from __future__ import annotations

import dataclasses
import math
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edge_fer.errors import ConfigError

SEARCH_PATH = (Path("config.yaml"), Path("/etc/edge-fer/config.yaml"))


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from."""

    source: Union[int, str] = 0
    width: int = 640
    height: int = 480
    fps: float = 15.0
    loop: bool = False
    reopen_max_seconds: float = 30.0


@dataclass(frozen=True)
class DetectorConfig:
    """Haar cascade face detection."""

    detect_width: int = 320
    scale_factor: float = 1.15
    min_neighbors: int = 4
    min_face_fraction: float = 0.1
    min_level_weight: float = 1.0
    every_n_frames: int = 5


@dataclass(frozen=True)
class ClassifierConfig:
    """The emotion model."""

    model: str = ""
    threads: int = 1
    max_faces: int = 8


@dataclass(frozen=True)
class TrackingConfig:
    """Following faces over time and steadying their labels."""

    iou_threshold: float = 0.3
    max_missing_seconds: float = 1.0
    smoothing_seconds: float = 0.8
    switch_seconds: float = 0.5
    switch_margin: float = 0.1


@dataclass(frozen=True)
class MqttConfig:
    """The broker and the topics events go to."""

    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    prefix: str = "edge_fer"
    device_id: str = ""
    client_id: str = ""
    username: str = ""
    password: str = ""
    password_env: str = ""
    password_file: str = ""
    tls: bool = False
    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""
    keepalive: int = 60
    qos: int = 1
    queue_size: int = 1000
    state_interval_seconds: float = 5.0
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    support_url: str = ""
    protocol: str = "auto"
    session_expiry_seconds: int = 300
    message_expiry_seconds: int = 86400


@dataclass(frozen=True)
class DisplayConfig:
    """The local Tk overlay."""

    enabled: bool = False
    save_dir: str = "~/edge-fer"


@dataclass(frozen=True)
class ImagesConfig:
    """One-shot image mode."""

    max_pixels: int = 50_000_000
    detect_width: int = 1024
    min_face_fraction: float = 0.03


@dataclass(frozen=True)
class LoggingConfig:
    """Log output to stderr (journald under systemd)."""

    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source_file: str = ""

    @property
    def device_id(self) -> str:
        """The MQTT device id: the configured one, else the host name."""
        return self.mqtt.device_id or socket.gethostname()


# Ranges checked at load: (low, high) inclusive; None means unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "camera.width": (1, 16384), "camera.height": (1, 16384), "camera.fps": (0.1, 1000),
    "camera.reopen_max_seconds": (0.1, 3600),
    "detector.detect_width": (64, 8192), "detector.scale_factor": (1.01, 2.0),
    "detector.min_neighbors": (0, 100), "detector.min_face_fraction": (0.0, 1.0),
    "detector.min_level_weight": (None, None), "detector.every_n_frames": (1, 1000),
    "classifier.threads": (1, 64), "classifier.max_faces": (1, 256),
    "tracking.iou_threshold": (0.0, 1.0), "tracking.max_missing_seconds": (0.0, 600),
    "tracking.smoothing_seconds": (0.0, 600), "tracking.switch_seconds": (0.0, 600),
    "tracking.switch_margin": (0.0, 1.0),
    "mqtt.port": (1, 65535), "mqtt.keepalive": (5, 3600), "mqtt.qos": (0, 1),
    "mqtt.queue_size": (1, 10_000_000), "mqtt.state_interval_seconds": (0.5, 86400),
    "mqtt.session_expiry_seconds": (0, 4294967295), "mqtt.message_expiry_seconds": (0, 4294967295),
    "images.max_pixels": (1, 1_000_000_000), "images.detect_width": (64, 16384),
    "images.min_face_fraction": (0.0, 1.0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "mqtt.protocol": ("auto", "5", "3.1.1"),
}


def photo_detector(cfg: Config) -> DetectorConfig:
    """The detector settings for one-shot photos: the images section's width and minimum face size."""
    return dataclasses.replace(cfg.detector, detect_width=cfg.images.detect_width,
                               min_face_fraction=cfg.images.min_face_fraction)


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Check one value against its type hint, allowing int where float is expected."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " or ".join(t.__name__ for t in allowed)
    raise ConfigError(f"{where}: {key} must be {names}, got {type(value).__name__} {value!r}")


def _check_range(key: str, value: Any, where: str) -> None:
    if key in RANGES:
        lo, hi = RANGES[key]
        if not ((lo is None or value >= lo) and (hi is None or value <= hi)):
            raise ConfigError(f"{where}: {key} = {value!r} is out of range [{lo}, {hi}]")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {key} = {value!r} must be one of {', '.join(CHOICES[key])}")


def key_name(section: str, key: Any) -> str:
    """'section.key' as shown in errors; a key that is not plain text is quoted so it stays on one line."""
    shown = key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else repr(key)
    return f"{section}.{shown}"


def _build(data: dict[str, Any], where: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    hints = typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    for name, body in data.items():
        if name not in hints or name == "source_file":
            raise ConfigError(f"{where}: unknown section {name!r}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section {name} must be a mapping")
        cls = hints[name]
        fields = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            full = key_name(name, key)
            if key not in fields:
                raise ConfigError(f"{where}: unknown key {full}")
            values[key] = _coerce(full, value, fields[key], where)
            _check_range(full, values[key], where)
        sections[name] = cls(**values)
    return Config(**sections, source_file=where)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split 'section.key=value' into its parts, the value parsed as YAML (so 5 is an int)."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def find_config(explicit: str | Path | None) -> Path | None:
    """The file to read: the one given, else ./config.yaml, else /etc/edge-fer/config.yaml, else none."""
    if explicit:
        return Path(explicit)
    return next((p for p in SEARCH_PATH if p.is_file()), None)


def load(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read and validate a config file (or the defaults) with `section.key=value` overrides on top."""
    data: dict[str, Any] = {}
    where = "defaults"
    found = find_config(path)
    if found is not None:
        where = str(found)
        try:
            data = yaml.safe_load(found.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{where}: not valid YAML{line}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of sections")
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        body = data.setdefault(section, {})
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section {section} must be a mapping")
        body[key] = value
    return _build(data, where)


def as_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (for --check-config and logs)."""
    out = dataclasses.asdict(cfg)
    out.pop("source_file")
    if out["mqtt"]["password"]:
        out["mqtt"]["password"] = "***"
    return out
