"""Configuration: typed sections with their defaults, validated once when loaded."""

from __future__ import annotations

import dataclasses
import math
import socket
import ssl
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edge_fer.errors import ConfigError, shown

SEARCH_PATH = (Path("config.yaml"), Path("/etc/edge-fer/config.yaml"))


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from."""

    source: Union[int, str] = 0
    width: int = 640
    height: int = 480
    fps: float = 15.0
    file_fps: float = 0.0
    loop: bool = False
    reopen_max_seconds: float = 30.0


@dataclass(frozen=True)
class DetectorConfig:
    """Which face detector runs, and how often the daemon runs it in full."""

    backend: str = "yunet"
    every_n_frames: int = 3


@dataclass(frozen=True)
class YunetConfig:
    """OpenCV's YuNet CNN face detector."""

    model: str = ""
    detect_width: int = 480
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    photo_size: int = 640
    photo_small_faces_size: int = 1280
    small_face_px: int = 40


@dataclass(frozen=True)
class HaarConfig:
    """OpenCV's Haar cascade face detector."""

    detect_width: int = 320
    scale_factor: float = 1.15
    min_neighbors: int = 4
    min_face_fraction: float = 0.1
    min_level_weight: float = 1.0
    photo_detect_width: int = 1024
    photo_min_face_fraction: float = 0.03


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
    switch_min_confidence: float = 0.4


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
    max_faces: int = 100


@dataclass(frozen=True)
class LoggingConfig:
    """Log output to stderr (journald under systemd)."""

    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    yunet: YunetConfig = field(default_factory=YunetConfig)
    haar: HaarConfig = field(default_factory=HaarConfig)
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
    "camera.width": (1, 16384), "camera.height": (1, 16384), "camera.fps": (0.1, 1000), "camera.file_fps": (0.0, 1000),
    "camera.reopen_max_seconds": (0.1, 3600),
    "detector.every_n_frames": (1, 1000),
    "yunet.detect_width": (32, 8192), "yunet.score_threshold": (0.0, 1.0), "yunet.nms_threshold": (0.0, 1.0),
    "yunet.photo_size": (32, 16384), "yunet.photo_small_faces_size": (0, 16384), "yunet.small_face_px": (0, 1000),
    "haar.detect_width": (64, 8192), "haar.scale_factor": (1.01, 2.0),
    "haar.min_neighbors": (0, 100), "haar.min_face_fraction": (0.0, 1.0),
    "haar.min_level_weight": (None, None), "haar.photo_detect_width": (64, 16384),
    "haar.photo_min_face_fraction": (0.0, 1.0),
    "classifier.threads": (1, 64), "classifier.max_faces": (1, 256),
    "tracking.iou_threshold": (0.0, 1.0), "tracking.max_missing_seconds": (0.0, 600),
    "tracking.smoothing_seconds": (0.0, 600), "tracking.switch_seconds": (0.0, 600),
    "tracking.switch_margin": (0.0, 1.0), "tracking.switch_min_confidence": (0.0, 1.0),
    "mqtt.port": (1, 65535), "mqtt.keepalive": (5, 3600), "mqtt.qos": (0, 1),
    "mqtt.queue_size": (1, 10_000_000), "mqtt.state_interval_seconds": (0.5, 86400),
    "mqtt.session_expiry_seconds": (0, 4294967295), "mqtt.message_expiry_seconds": (0, 4294967295),
    "images.max_pixels": (1, 1_000_000_000), "images.max_faces": (1, 10_000),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "detector.backend": ("yunet", "haar"),
    "mqtt.protocol": ("auto", "5", "3.1.1"),
}


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
                raise ConfigError(f"{where}: {key} must be a finite number, got {describe(key, value)}")
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " or ".join(t.__name__ for t in allowed)
    got = type(value).__name__ if key in SECRETS else f"{type(value).__name__} {describe(key, value)}"
    raise ConfigError(f"{where}: {key} must be {names}, got {got}")


def _check_range(key: str, value: Any, where: str) -> None:
    if key in RANGES:
        lo, hi = RANGES[key]
        if not ((lo is None or value >= lo) and (hi is None or value <= hi)):
            raise ConfigError(f"{where}: {key} = {describe(key, value)} is out of range [{lo}, {hi}]")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {key} = {describe(key, value)} must be one of {', '.join(CHOICES[key])}")
    if key in TOPIC_PARTS:
        _check_topic_part(key, value, TOPIC_PARTS[key], where)


# Values never shown in an error or log line.
SECRETS = {"mqtt.password"}
# MQTT topic parts and ids: True where '/' may separate levels (a prefix), False for one level.
TOPIC_PARTS: dict[str, bool] = {"mqtt.prefix": True, "mqtt.discovery_prefix": True,
                                "mqtt.device_id": False, "mqtt.client_id": False}
TOPIC_MAX_CHARS = 128
TLS_FILES = ("ca_certs", "certfile", "keyfile")
# A config file is small: larger files, deeper nesting or more aliases are refused before they cost memory.
MAX_FILE_BYTES = 1_000_000
MAX_ALIASES = 50


def describe(key: str, value: Any) -> str:
    """A value as an error may show it: short, on one line, and never a secret or a whole container."""
    if key in SECRETS:
        return type(value).__name__
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__}"
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:57]!r}... ({len(value)} characters)"
    return repr(value)


def _check_topic_part(key: str, value: str, levels: bool, where: str) -> None:
    """MQTT wildcards, NUL and control characters, a '/' in one level, empty levels or absurd length."""
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {describe(key, value)} {reason}")

    if len(value) > TOPIC_MAX_CHARS:
        raise bad(f"is longer than {TOPIC_MAX_CHARS} characters")
    for char, name in (("+", "'+' (an MQTT wildcard)"), ("#", "'#' (an MQTT wildcard)"), ("\0", "NUL")):
        if char in value:
            raise bad(f"must not contain {name}")
    if not value.isprintable():
        raise bad("must not contain control characters")
    if not levels and "/" in value:
        raise bad("must not contain '/' (it is one topic level)")
    if levels and (not value or "" in value.split("/")):
        raise bad("must be topic levels separated by single '/' (no empty level)")


def _check_tls(mqtt: MqttConfig, where: str) -> None:
    """With mqtt.tls, the CA bundle, client certificate and key must be files that TLS can use."""
    if not mqtt.tls:
        return
    for name in TLS_FILES:
        path = getattr(mqtt, name)
        if not path:
            continue
        try:
            if Path(path).exists() and not Path(path).is_file():
                raise IsADirectoryError(21, "not a regular file")
            with open(path, "rb") as f:
                text = f.read(MAX_FILE_BYTES * 4).decode(errors="replace")  # enough to find the PEM marker
        except OSError as e:
            raise ConfigError(f"{where}: mqtt.{name}: cannot read {shown(path)} ({e.strerror or e})") from None
        wanted = {"ca_certs": "CERTIFICATE-----", "certfile": "CERTIFICATE-----", "keyfile": "PRIVATE KEY-----"}[name]
        if wanted not in text:
            raise ConfigError(f"{where}: mqtt.{name}: {shown(path)} holds no PEM {wanted[:-5].lower()}")
    if mqtt.keyfile and not mqtt.certfile:
        raise ConfigError(f"{where}: mqtt.keyfile is set without mqtt.certfile")
    context = ssl.create_default_context()
    try:
        if mqtt.ca_certs:
            context.load_verify_locations(cafile=mqtt.ca_certs)
    except ssl.SSLError as e:
        raise ConfigError(f"{where}: mqtt.ca_certs: {shown(mqtt.ca_certs)} is not a usable CA bundle "
                          f"({e.reason or e})") from None
    try:
        if mqtt.certfile:
            # An encrypted key would make OpenSSL ask on the terminal; the empty password refuses it instead.
            context.load_cert_chain(mqtt.certfile, mqtt.keyfile or None, password=lambda: b"")
    except ssl.SSLError as e:
        raise ConfigError(f"{where}: mqtt.certfile and mqtt.keyfile cannot be used together "
                          f"(mismatched or encrypted key: {e.reason or e})") from None



def key_name(section: str, key: Any) -> str:
    """'section.key' as shown in errors; a key that is not plain text is quoted so it stays on one line."""
    plain = isinstance(key, str) and key.isprintable() and key.strip() == key and 0 < len(key) <= 60
    return f"{section}.{key if plain else describe('', key)}"


def _build(data: dict[str, Any], where: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    hints = typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    for name, body in data.items():
        if name not in hints or name == "source_file":
            raise ConfigError(f"{where}: unknown section {describe('', name)}")
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
    cfg = Config(**sections, source_file=where)
    _check_tls(cfg.mqtt, where)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split 'section.key=value' into its parts, the value parsed as YAML (so 5 is an int)."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {describe('', name.strip())}: expected section.key=value")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return section, key, value


class _Refused(yaml.YAMLError):
    """A YAML file refused for its shape, not its syntax."""

    def __init__(self, text: str, mark: Any) -> None:
        super().__init__(text)
        self.text, self.problem_mark = text, mark


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and alias bombs (aliases of aliases grow exponentially)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name), refused", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise _Refused(f"duplicate key {describe('', key_node.value)}", key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str, where: str) -> Any:
    """The document in a config file, or a ConfigError that says where it is wrong."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        if isinstance(e, _Refused):
            raise ConfigError(f"{where}: {e.text}{line}") from None
        raise ConfigError(f"{where}: not valid YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


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
        where = shown(found)
        try:
            with open(found, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
            text = raw.decode()
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except OSError as e:
            raise ConfigError(f"{where}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not UTF-8 text") from None
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES:,} bytes; not a config file")
        data = _parse_yaml(text, where) or {}
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
