"""Config loading: defaults, the documented file, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import io
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_fer.config import Config, load
from edge_fer.errors import ConfigError
from tests.conftest import ASTRONAUT, ROOT


def test_documented_file_matches_the_defaults_key_for_key() -> None:
    documented = yaml.safe_load((ROOT / "config.yaml").read_text())
    defaults = dataclasses.asdict(Config())
    defaults.pop("source_file")
    assert documented == defaults


def test_no_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("edge_fer.config.SEARCH_PATH", (tmp_path / "config.yaml",))
    cfg = load()
    assert cfg.source_file == "defaults"
    assert cfg.haar.min_neighbors == Config().haar.min_neighbors


def test_values_and_overrides_are_typed(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("camera:\n  source: /dev/video2\n  fps: 10\nmqtt:\n  port: 1884\n")
    cfg = load(f, ["mqtt.host=broker.lan", "haar.min_neighbors=9", "camera.loop=true"])
    assert cfg.camera.source == "/dev/video2"
    assert cfg.camera.fps == 10.0 and isinstance(cfg.camera.fps, float)
    assert (cfg.mqtt.port, cfg.mqtt.host) == (1884, "broker.lan")
    assert cfg.haar.min_neighbors == 9 and cfg.camera.loop is True


@pytest.mark.parametrize("text, fragment", [
    ("haar:\n  min_neighbours: 3\n", "unknown key haar.min_neighbours"),
    ("detecter:\n  min_neighbors: 3\n", "unknown section 'detecter'"),
    ("mqtt:\n  port: 70000\n", "mqtt.port = 70000 is out of range"),
    ("mqtt:\n  port: eighty\n", "mqtt.port must be int, got str"),
    ("camera:\n  loop: 1\n", "camera.loop must be bool"),
    ("logging:\n  level: LOUD\n", "logging.level = 'LOUD' must be one of"),
    ("mqtt: [1, 2]\n", "section mqtt must be a mapping"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("camera:\n  fps: [\n", "not valid YAML at line"),
])
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(f)
    assert fragment in str(e.value)
    assert str(f) in str(e.value)


def test_every_default_lies_in_its_own_range_and_choices() -> None:
    checked = 0
    for section in dataclasses.fields(Config):
        if section.name == "source_file":
            continue
        for spec in dataclasses.fields(section.default_factory):
            lo, hi = spec.metadata.get("range", (spec.default, spec.default))
            assert lo <= spec.default <= hi, f"{section.name}.{spec.name}"
            assert spec.default in spec.metadata.get("choices", (spec.default,)), f"{section.name}.{spec.name}"
            checked += "range" in spec.metadata or "choices" in spec.metadata
    assert checked >= 30  # the ranges and choices sit on the fields
    with pytest.raises(ConfigError, match=r"camera.fps = 0.05 is out of range \[0.1, 1000\]"):
        load(None, ["camera.fps=0.05"])


def test_password_and_device_id_are_resolved_once_at_load_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from edge_fer.cli.main import main

    monkeypatch.setenv("EDGE_FER_TEST_PW", "s3cret-env")
    cfg = load(None, ["mqtt.password_env=EDGE_FER_TEST_PW"])
    assert (cfg.mqtt.password, cfg.mqtt.device_id) == ("s3cret-env", socket.gethostname())
    assert "s3cret-env" not in repr(cfg)
    secret = tmp_path / "pw"
    secret.write_text("s3cret-file\nignored\n")
    assert load(None, [f"mqtt.password_file={secret}", "mqtt.device_id=cam"]).mqtt.password == "s3cret-file"
    out, err = io.StringIO(), io.StringIO()
    assert main(["--check-config", "--set", "mqtt.password_env=EDGE_FER_TEST_PW"], out, err) == 0
    assert "s3cret" not in out.getvalue() + err.getvalue() and "password: '***'" in out.getvalue()
    monkeypatch.delenv("EDGE_FER_TEST_PW")
    with pytest.raises(ConfigError, match="mqtt.password_env: environment variable 'EDGE_FER_TEST_PW' is not set"):
        load(None, ["mqtt.password_env=EDGE_FER_TEST_PW"])
    secret.write_text("")
    with pytest.raises(ConfigError, match="mqtt.password_file: .* has no password on its first line"):
        load(None, [f"mqtt.password_file={secret}"])
    with pytest.raises(ConfigError, match="mqtt.password_file: cannot read .*missing"):
        load(None, [f"mqtt.password_file={tmp_path / 'missing'}"])
    # A run that never connects does not need the password: it is left unread.
    assert load(None, [f"mqtt.password_file={tmp_path / 'missing'}"], secrets=False).mqtt.password == ""
    unreadable = ["--set", f"mqtt.password_file={tmp_path / 'missing'}"]
    assert main(["--image", str(ASTRONAUT), *unreadable], io.StringIO(), io.StringIO()) == 0
    assert main(["--check-config", *unreadable], io.StringIO(), err) == 2 and "mqtt.password_file" in err.getvalue()


def test_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match="unknown key tracking.smoothing"):
        load(None, ["tracking.smoothing=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load(None, ["nodot=3"])


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "absent.yaml")


def _edge_fer_check(config: Path, *extra: str, limit_mb: int = 1024) -> subprocess.CompletedProcess:
    """`edge-fer --check-config` in a subprocess whose address space is capped, so a bomb cannot take the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 2**20, limit_mb * 2**20))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge_fer", "--check-config", "--config", str(config), *extra],
                          env=env, capture_output=True, text=True, timeout=60, preexec_fn=cap)


def test_an_alias_bomb_is_refused_in_one_line(tmp_path: Path) -> None:
    levels = ["    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"    - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("camera:\n  source:\n" + "\n".join(levels) + "\n")
    assert bomb.stat().st_size < 1000
    res = _edge_fer_check(bomb)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == f"edge-fer: {bomb}: more than 50 aliases (*name), refused at line 9\n"


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    f.write_text("mqtt:\n  host: a.lan\n  port: 1883\n  host: b.lan\n")
    with pytest.raises(ConfigError) as e:
        load(f)
    assert str(e.value) == f"{f}: duplicate key 'host' at line 4"
    # A key given again through a merge (<<) is an override, not a duplicate.
    f.write_text("mqtt:\n  <<: {host: a.lan, port: 1884}\n  host: b.lan\n")
    assert (load(f).mqtt.host, load(f).mqtt.port) == ("b.lan", 1884)


def test_errors_never_show_the_password_or_a_whole_value(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("mqtt:\n  password: 123456\n")
    with pytest.raises(ConfigError) as e:
        load(f)
    assert str(e.value) == f"{f}: mqtt.password must be str, got int"
    with pytest.raises(ConfigError) as e:
        load(None, ["mqtt.password=[hunter2, 1]"])
    assert "hunter2" not in str(e.value)
    long = "x" * 5000
    with pytest.raises(ConfigError) as e:
        load(None, [f"logging.level={long}"])
    assert len(str(e.value)) < 200 and "5000 characters" in str(e.value)


@pytest.mark.parametrize("key, value, reason", [
    ("device_id", "kitchen/cam", "must not contain '/'"),
    ("device_id", "cam+1", "must not contain '+'"),
    ("client_id", "edge#1", "must not contain '#'"),
    ("device_id", "cam\x00x", "must not contain NUL"),
    ("device_id", "a" * 5000, "is longer than 128 characters"),
    ("prefix", "home/+/fer", "must not contain '+'"),
    ("prefix", "home//fer", "no empty level"),
    ("prefix", "", "no empty level"),
    ("discovery_prefix", "homeassistant/", "no empty level"),
    ("discovery_prefix", "ha#", "must not contain '#'"),
], ids=lambda v: repr(v)[:24])
def test_bad_topic_values_are_config_errors_naming_the_key(tmp_path: Path, key: str, value: str,
                                                           reason: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"mqtt": {key: value}}))
    with pytest.raises(ConfigError) as e:
        load(f)
    assert f"mqtt.{key} = " in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 300


def test_good_topic_values_pass() -> None:
    cfg = load(None, ["mqtt.prefix=site/floor1/edge_fer", "mqtt.device_id=kitchen-cam_2", "mqtt.client_id=k.2"])
    assert cfg.mqtt.prefix == "site/floor1/edge_fer"


def test_tls_files_that_are_missing_or_wrong_are_config_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    base = ["mqtt.tls=true"]
    cases = [
        ([f"mqtt.ca_certs={tmp_path / 'absent.pem'}"], "mqtt.ca_certs: cannot read", "No such file"),
        ([f"mqtt.ca_certs={text}"], "mqtt.ca_certs:", "holds no PEM certificate"),
        ([f"mqtt.certfile={text}"], "mqtt.certfile:", "holds no PEM certificate"),
        ([f"mqtt.keyfile={tmp_path}"], "mqtt.keyfile: cannot read", "not a regular file"),
    ]
    for overrides, key, reason in cases:
        with pytest.raises(ConfigError) as e:
            load(None, base + overrides)
        assert key in str(e.value) and reason in str(e.value), str(e.value)
    assert load(None, [f"mqtt.ca_certs={tmp_path / 'absent.pem'}"]).mqtt.tls is False  # unused without tls

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    for name in ("one", "two"):
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "1", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt"],
                       cwd=tmp_path, check=True, capture_output=True, timeout=30)
    good = load(None, base + [f"mqtt.ca_certs={tmp_path / 'one.crt'}", f"mqtt.certfile={tmp_path / 'one.crt'}",
                              f"mqtt.keyfile={tmp_path / 'one.key'}"])
    assert good.mqtt.certfile.endswith("one.crt")
    (tmp_path / "c.yaml").write_text("mqtt:\n  tls: true\n")
    res = _edge_fer_check(tmp_path / "c.yaml", "--set", f"mqtt.certfile={tmp_path / 'one.crt'}",
                          "--set", f"mqtt.keyfile={tmp_path / 'two.key'}")
    assert res.returncode == 2 and res.stderr.startswith("edge-fer: ") and len(res.stderr.splitlines()) == 1
    assert "mqtt.certfile and mqtt.keyfile cannot be used together" in res.stderr, res.stderr


@pytest.mark.parametrize("key", ["mqtt.password_file", "mqtt.ca_certs"])
def test_a_nul_in_a_file_name_is_a_config_error_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}: cannot read 'a\\\\x00b' \\(No such file or directory\\)"):
        load(None, ["mqtt.tls=true", f'{key}="a\\0b"'])


def test_set_errors_blame_set_not_the_file_and_unknown_keys_get_the_nearest_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge_fer.config.SEARCH_PATH", (tmp_path / "config.yaml",))  # no file: the defaults
    f = tmp_path / "c.yaml"
    f.write_text("mqtt:\n  host: broker.lan\n")
    cases = [
        (f, ["mqtt.prot=1"], "--set: unknown key mqtt.prot; did you mean mqtt.port?"),
        (None, ["mqtt.prot=1"], "--set: unknown key mqtt.prot; did you mean mqtt.port?"),
        (f, ["mqtt.port=70000"], "--set: mqtt.port = 70000 is out of range [1, 65535]"),
        (None, ["mqtt.host="], "--set: mqtt.host = '' must not be empty"),
        (f, ["detecter.backend=haar"], "--set: unknown section 'detecter'; did you mean detector?"),
        (None, ["mqtt.score_threshold=0.5"], "--set: unknown key mqtt.score_threshold; did you mean "
                                             "yunet.score_threshold?"),
        (None, ["camera.zzz=1"], "--set: unknown key camera.zzz"),
        (None, ["mqtt.password=[hunter2, 1]"], "--set: mqtt.password must be str, got list"),
        # Without a file, a check across keys can only fail on values --set gave.
        (None, ["mqtt.tls=true", f"mqtt.ca_certs={tmp_path / 'absent.pem'}"],
         f"--set: mqtt.ca_certs: cannot read {tmp_path / 'absent.pem'} (No such file or directory)"),
    ]
    for path, overrides, message in cases:
        with pytest.raises(ConfigError) as e:
            load(path, overrides)
        assert str(e.value) == message, overrides
    # A key from the file is blamed on the file, with the same suggestion.
    f.write_text("mqtt:\n  prot: 1\n")
    with pytest.raises(ConfigError) as e:
        load(f, ["camera.fps=5"])
    assert str(e.value) == f"{f}: unknown key mqtt.prot; did you mean mqtt.port?"
    assert load(None, ["camera.fps=5"]).source_file == "defaults"  # --set is blamed, never named the source


@pytest.mark.parametrize("text, line, reason", [
    ("camera:\n  fps: 5\n  source: [0,\n", 3, "the file ends too early"),  # PyYAML says line 4
    ("mqtt:\n  host: 'broker\n  port: 1883\n", 2, "the file ends too early"),  # the quote opened on line 2
    ("camera:\n  fps: [\n", 2, "the file ends too early"),
    ("camera:\n  fps: 5\n   loop: true\n", 3, "mapping values are not allowed here"),
    ("camera:\n  fps: 5\n\n\n", None, None),
])
def test_a_yaml_error_names_the_line_it_is_on(tmp_path: Path, text: str, line: int | None,
                                              reason: str | None) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    if line is None:
        assert load(f).camera.fps == 5.0
        return
    with pytest.raises(ConfigError) as e:
        load(f)
    assert str(e.value).startswith(f"{f}: not valid YAML at line {line}: {reason}"), str(e.value)
    assert line <= len(text.splitlines())
