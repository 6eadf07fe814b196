"""Config loading: defaults, the documented file, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from edge_fer.config import Config, load
from edge_fer.errors import ConfigError
from tests.conftest import ROOT


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


def test_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match="unknown key tracking.smoothing"):
        load(None, ["tracking.smoothing=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load(None, ["nodot=3"])


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "absent.yaml")
