"""Configuration: typed sections with their defaults, validated once when loaded."""

from __future__ import annotations

import dataclasses
import difflib
import errno
import ipaddress
import math
import os
import socket
import ssl
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import yaml

from edge_fer.errors import ConfigError, shown

SEARCH_PATH = (Path("config.yaml"), Path("/etc/edge-fer/config.yaml"))


def _within(default: Any, low: float, high: float) -> Any:
    """A field whose values must lie in [low, high], checked at load."""
    return field(default=default, metadata={"range": (low, high)})


def _one_of(default: str, *choices: str) -> Any:
    """A field whose values must be one of `choices`, checked at load."""
    return field(default=default, metadata={"choices": choices})


def _not_empty(default: str) -> Any:
    """A text field that must hold more than blanks, checked at load."""
    return field(default=default, metadata={"not_empty": True})


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from."""

    source: int | str = 0
    width: int = _within(640, 1, 16384)
    height: int = _within(480, 1, 16384)
    fps: float = _within(15.0, 0.1, 1000)
    file_fps: float = _within(0.0, 0.0, 1000)
    loop: bool = False
    # A video file that is not there is a typo until told otherwise: wait for it only when asked.
    wait_for_file: bool = False
    reopen_max_seconds: float = _within(30.0, 0.1, 3600)


@dataclass(frozen=True)
class DetectorConfig:
    """Which face detector runs, and how often the daemon runs it in full."""

    backend: str = _one_of("yunet", "yunet", "haar")
    every_n_frames: int = _within(3, 1, 1000)


@dataclass(frozen=True)
class YunetConfig:
    """OpenCV's YuNet CNN face detector."""

    model: str = ""
    detect_width: int = _within(480, 32, 8192)
    score_threshold: float = _within(0.6, 0.0, 1.0)
    nms_threshold: float = _within(0.3, 0.0, 1.0)
    photo_size: int = _within(640, 32, 16384)
    photo_min_size: int = _within(160, 0, 16384)
    photo_small_faces_size: int = _within(1280, 0, 16384)
    small_face_px: int = _within(40, 0, 1000)


@dataclass(frozen=True)
class HaarConfig:
    """OpenCV's Haar cascade face detector."""

    detect_width: int = _within(320, 64, 8192)
    scale_factor: float = _within(1.15, 1.01, 2.0)
    min_neighbors: int = _within(4, 0, 100)
    min_face_fraction: float = _within(0.1, 0.0, 1.0)
    min_level_weight: float = 1.0
    photo_detect_width: int = _within(1024, 64, 16384)
    photo_min_face_fraction: float = _within(0.03, 0.0, 1.0)


@dataclass(frozen=True)
class ClassifierConfig:
    """The emotion model."""

    model: str = ""
    threads: int = _within(1, 1, 64)
    max_faces: int = _within(8, 1, 256)


@dataclass(frozen=True)
class UnsureConfig:
    """When a face is reported `unsure` instead of labelled (vision/judge.py; chosen on wild-dev, see README)."""

    enabled: bool = True
    min_confidence: float = _within(0.45, 0.0, 1.0)
    min_face_px: int = _within(32, 0, 10000)
    min_detector_score: float = _within(0.0, 0.0, 1.0)
    min_brightness: float = _within(30.0, 0.0, 255.0)
    min_contrast: float = _within(12.0, 0.0, 255.0)
    min_sharpness: float = _within(150.0, 0.0, 1e6)
    max_yaw_deg: float = _within(45.0, 0.0, 90.0)
    max_pitch: float = _within(0.2, 0.0, 10.0)


@dataclass(frozen=True)
class TrackingConfig:
    """Following faces over time and steadying their labels."""

    iou_threshold: float = _within(0.3, 0.0, 1.0)
    max_missing_seconds: float = _within(1.0, 0.0, 600)
    smoothing_seconds: float = _within(0.8, 0.0, 600)
    switch_seconds: float = _within(0.5, 0.0, 600)
    switch_margin: float = _within(0.1, 0.0, 1.0)
    switch_min_confidence: float = _within(0.4, 0.0, 1.0)


@dataclass(frozen=True)
class MqttConfig:
    """The broker and the topics events go to."""

    enabled: bool = True
    host: str = _not_empty("localhost")  # paho would refuse an empty one only when connecting, with a traceback
    port: int = _within(1883, 1, 65535)
    prefix: str = "edge_fer"
    device_id: str = ""  # the host name when not set, filled in at load
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)  # at load, the one from password_env or password_file
    password_env: str = ""
    password_file: str = ""
    tls: bool = False
    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""
    keepalive: int = _within(60, 5, 3600)
    qos: int = _within(1, 0, 1)
    queue_size: int = _within(1000, 1, 10_000_000)
    state_interval_seconds: float = _within(60.0, 0.5, 86400)  # the keep-alive: changes are published at once
    state_min_interval_seconds: float = _within(3.0, 0.0, 86400)  # no two states closer together than this
    snapshot_seconds: float = _within(0.0, 0.0, 86400)  # an annotated picture for Home Assistant this often; 0: off
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    support_url: str = ""
    protocol: str = _one_of("auto", "auto", "5", "3.1.1")
    session_expiry_seconds: int = _within(300, 0, 4294967295)
    message_expiry_seconds: int = _within(86400, 0, 4294967295)


@dataclass(frozen=True)
class DisplayConfig:
    """The local Tk overlay."""

    enabled: bool = False
    save_dir: str = "~/edge-fer"


@dataclass(frozen=True)
class ImagesConfig:
    """One-shot image mode."""

    max_pixels: int = _within(50_000_000, 1, 1_000_000_000)
    max_faces: int = _within(100, 1, 10_000)


@dataclass(frozen=True)
class LoggingConfig:
    """Log output to stderr (journald under systemd)."""

    level: str = _one_of("INFO", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class WebConfig:
    """The web view, its stream and metrics (off by default: it shows faces)."""

    enabled: bool = False
    listen: str = "127.0.0.1:8080"  # HOST:PORT, the host an IP address or localhost; checked at load
    fps: float = _within(5.0, 0.1, 30.0)
    jpeg_quality: int = _within(75, 10, 100)
    password: str = field(default="", repr=False)  # at load, the one from password_env or password_file
    password_env: str = ""
    password_file: str = ""
    session_hours: float = _within(168.0, 0.01, 8760.0)
    tls: bool = False
    certfile: str = ""
    keyfile: str = ""
    max_connections: int = _within(32, 2, 1000)
    max_streams: int = _within(10, 1, 1000)
    timeout_seconds: float = _within(10.0, 0.5, 600.0)
    recent_events: int = _within(20, 1, 1000)

    @property
    def address(self) -> tuple[str, int]:
        """The host and port to bind (valid once loaded)."""
        return parse_listen(self.listen)

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the server."""
        return is_loopback(self.address[0])


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    yunet: YunetConfig = field(default_factory=YunetConfig)
    haar: HaarConfig = field(default_factory=HaarConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    unsure: UnsureConfig = field(default_factory=UnsureConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source_file: str = ""


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


def _check_value(key: str, value: Any, spec: dataclasses.Field, where: str) -> None:
    """The range or choices on the field itself, and the MQTT topic rules."""
    if "range" in spec.metadata:
        lo, hi = spec.metadata["range"]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: {key} = {describe(key, value)} is out of range [{lo}, {hi}]")
    choices = spec.metadata.get("choices", ())
    if choices and value not in choices:
        raise ConfigError(f"{where}: {key} = {describe(key, value)} must be one of {', '.join(choices)}")
    if spec.metadata.get("not_empty") and not value.strip():
        raise ConfigError(f"{where}: {key} = {describe(key, value)} must not be empty")
    if key in TOPIC_PARTS:
        _check_topic_part(key, value, TOPIC_PARTS[key], where)


# Values never shown in an error or log line.
SECRETS = {"mqtt.password", "web.password"}
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


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is (from its st_mode), as an error line says it."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def open_regular(path: str | Path) -> BinaryIO:
    """`path` open for reading if it is a regular file, else an OSError whose strerror says what it is.

    Opened without blocking and checked once open: a FIFO would wait for a writer forever, a device such as
    /dev/zero never ends, and a check before opening could be raced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except ValueError:  # a NUL in the name: no file has one
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file", str(path))
    return open(fd, "rb")


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
            with open_regular(path) as f:
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



def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (an IPv6 host in brackets) as (host, port); ValueError when it is neither."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif host != "localhost":
        ipaddress.IPv4Address(host)
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _check_web(web: WebConfig, where: str) -> None:
    """The listen address, a login wherever others can reach the server, and TLS files the server can use."""
    try:
        parse_listen(web.listen)
    except ValueError:
        raise ConfigError(f"{where}: web.listen = {describe('', web.listen)} must be HOST:PORT with an IP address "
                          "or localhost (127.0.0.1:8080, 0.0.0.0:8080, [::]:8080)") from None
    if web.enabled and not web.loopback and not (web.password or web.password_env or web.password_file):
        raise ConfigError(f"{where}: web.listen {web.listen} is reachable from other machines: set web.password, "
                          "web.password_env or web.password_file (a login is required off loopback)")
    if not web.tls:
        return
    if not web.certfile:
        raise ConfigError(f"{where}: web.tls needs web.certfile (and web.keyfile unless the key is in it)")
    for name, wanted in (("certfile", "CERTIFICATE-----"), ("keyfile", "PRIVATE KEY-----")):
        path = getattr(web, name) or (web.certfile if name == "keyfile" else "")
        try:
            with open_regular(path) as f:
                text = f.read(MAX_FILE_BYTES * 4).decode(errors="replace")
        except OSError as e:
            raise ConfigError(f"{where}: web.{name}: cannot read {shown(path)} ({e.strerror or e})") from None
        if wanted not in text:
            raise ConfigError(f"{where}: web.{name}: {shown(path)} holds no PEM {wanted[:-5].lower()}")
    try:
        # An encrypted key would make OpenSSL ask on the terminal; the empty password refuses it instead.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            web.certfile, web.keyfile or None, password=lambda: b"")
    except ssl.SSLError as e:
        raise ConfigError(f"{where}: web.certfile and web.keyfile cannot be used together "
                          f"(mismatched or encrypted key: {e.reason or e})") from None


def key_name(section: str, key: Any) -> str:
    """'section.key' as shown in errors; a key that is not plain text is quoted so it stays on one line."""
    plain = isinstance(key, str) and key.isprintable() and key.strip() == key and 0 < len(key) <= 60
    return f"{section}.{key if plain else describe('', key)}"


# Where a value given on the command line (`--set section.key=value`) is said to come from in errors.
OVERRIDE = "--set"


def _did_you_mean(word: Any, known: list[str]) -> str:
    """'; did you mean X?' for the known name closest to a mistyped one, else nothing."""
    close = difflib.get_close_matches(word, known, n=1) if isinstance(word, str) else []
    return f"; did you mean {close[0]}?" if close else ""


def _section_class(name: Any, where: str) -> Any:
    """The dataclass of section `name`; ConfigError naming the nearest section when there is none."""
    hints = typing.get_type_hints(Config)
    if name not in hints or name == "source_file":
        known = [n for n in hints if n != "source_file"]
        raise ConfigError(f"{where}: unknown section {describe('', name)}{_did_you_mean(name, known)}")
    return hints[name]


def _key_hint(section: str, key: Any) -> str:
    """The nearest key of the same section, else the same key in another section, as '; did you mean X?'."""
    hints = typing.get_type_hints(Config)
    own = _did_you_mean(key, [f.name for f in dataclasses.fields(hints[section])])
    if own:
        return own.replace("mean ", f"mean {section}.", 1)
    elsewhere = [f"{n}.{key}" for n, cls in hints.items() if n not in (section, "source_file")
                 and key in {f.name for f in dataclasses.fields(cls)}]
    return f"; did you mean {elsewhere[0]}?" if elsewhere else ""


def _checked(section: str, cls: Any, key: Any, value: Any, where: str) -> Any:
    """One key's value, typed and checked; a ConfigError naming the key (and the nearest known one) if wrong."""
    full = key_name(section, key)
    specs = {f.name: f for f in dataclasses.fields(cls)}
    if key not in specs:
        raise ConfigError(f"{where}: unknown key {full}{_key_hint(section, key)}")
    value = _coerce(full, value, typing.get_type_hints(cls)[key], where)
    _check_value(full, value, specs[key], where)
    return value


def _build(data: dict[str, Any], where: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    sections: dict[str, Any] = {}
    for name, body in data.items():
        cls = _section_class(name, where)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section {name} must be a mapping")
        values = {key: _checked(name, cls, key, value, where) for key, value in body.items()}
        sections[name] = cls(**values)
    cfg = Config(**sections, source_file=where)
    _check_tls(cfg.mqtt, where)
    _check_web(cfg.web, where)
    return cfg


def _secret(section: str, env: str, file: str, where: str, allow_empty: bool) -> str:
    """A password from the environment variable named `env`, else the first line of the file `file`."""
    if env:
        if env not in os.environ:
            raise ConfigError(f"{where}: {section}.password_env: environment variable {describe('', env)} is not set")
        if not allow_empty and not os.environ[env].strip():
            raise ConfigError(f"{where}: {section}.password_env: environment variable {describe('', env)} is empty")
        return os.environ[env]
    try:
        with open_regular(Path(file).expanduser()) as f:
            lines = f.read(MAX_FILE_BYTES).decode().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror or str(e)
        raise ConfigError(f"{where}: {section}.password_file: cannot read {shown(file)} ({reason})") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{where}: {section}.password_file: {shown(file)} has no password on its first line")
    return lines[0].strip()


def _resolve_mqtt(mqtt: MqttConfig, where: str, secrets: bool) -> MqttConfig:
    """The host name as the default device id and (with `secrets`) the password from password_env or password_file."""
    password = mqtt.password
    if secrets and not password and (mqtt.password_env or mqtt.password_file):
        password = _secret("mqtt", mqtt.password_env, mqtt.password_file, where, allow_empty=True)
    return dataclasses.replace(mqtt, password=password, device_id=mqtt.device_id or socket.gethostname())


def _resolve_web(web: WebConfig, where: str, secrets: bool) -> WebConfig:
    """(With `secrets`, and the view enabled) the web password from password_env or password_file."""
    password = web.password
    # A view that is off needs no password, even where its source is missing.
    if secrets and web.enabled and not password and (web.password_env or web.password_file):
        password = _secret("web", web.password_env, web.password_file, where, allow_empty=False)
    return dataclasses.replace(web, password=password)


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


def _error_line(e: yaml.YAMLError, text: str) -> int | None:
    """The line (from 1) a YAML error is on: never past the file's last line, where PyYAML puts an early end."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return None
    end = len(text.rstrip())
    if mark.index < end:
        return int(mark.line) + 1
    # The file ended inside something: the line that opened it (a bracket, a quote, a key), else the last line.
    context = getattr(e, "context_mark", None)
    if context is not None and context.index < end:
        return int(context.line) + 1
    return text[:end].count("\n") + 1


def _yaml_reason(e: yaml.YAMLError) -> str:
    """PyYAML's own words for the problem, on one short line."""
    problem = shown(getattr(e, "problem", "") or "")
    if "<stream end>" in problem or "end of stream" in problem:
        return "the file ends too early (a bracket or quote not closed?)"
    return problem if len(problem) <= 100 else problem[:97] + "..."


def _parse_yaml(text: str, where: str) -> Any:
    """The document in a config file, or a ConfigError that says where it is wrong."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        number = _error_line(e, text)
        line = f" at line {number}" if number else ""
        if isinstance(e, _Refused):
            raise ConfigError(f"{where}: {e.text}{line}") from None
        reason = _yaml_reason(e)
        raise ConfigError(f"{where}: not valid YAML{line}" + (f": {reason}" if reason else "")) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


def find_config(explicit: str | Path | None) -> Path | None:
    """The file to read: the one given, else ./config.yaml, else /etc/edge-fer/config.yaml, else none."""
    if explicit:
        return Path(explicit)
    return next((p for p in SEARCH_PATH if p.is_file()), None)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), secrets: bool = True) -> Config:
    """Read and validate a config file (or the defaults) with `section.key=value` overrides on top."""
    data: dict[str, Any] = {}
    where = "defaults"
    found = find_config(path)
    if found is not None:
        where = shown(found)
        try:
            with open_regular(found) as f:
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
        _checked(section, _section_class(section, OVERRIDE), key, value, OVERRIDE)  # its errors blame --set
        body = data.setdefault(section, {})
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section {section} must be a mapping")
        body[key] = value
    # Checks across keys blame the file; without one, every value that is not a default came from --set.
    blame = OVERRIDE if found is None and overrides else where
    cfg = dataclasses.replace(_build(data, blame), source_file=where)
    # Without `secrets` (a run that never connects) the password is left unread: whoever runs it may not be
    # allowed to read the service's password file.
    return dataclasses.replace(cfg, mqtt=_resolve_mqtt(cfg.mqtt, blame, secrets),
                               web=_resolve_web(cfg.web, blame, secrets))


def as_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (for --check-config and logs)."""
    out = dataclasses.asdict(cfg)
    out.pop("source_file")
    if out["mqtt"]["password"]:
        out["mqtt"]["password"] = "***"
    if out["web"]["password"]:
        out["web"]["password"] = "***"
    return out
