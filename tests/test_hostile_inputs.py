"""Where a regular file or a value belongs, a FIFO, an endless device, a folder or an empty value is one line."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edge_fer.errors import EXIT_INPUT, EXIT_USAGE
from edge_fer.recorder.store import open_store
from tests.broker import free_port
from tests.conftest import ASTRONAUT, ROOT


def run_edge_fer(cwd: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """edge-fer in a subprocess in `cwd` (no ./config.yaml), its memory capped: a hang or a runaway read fails."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge_fer", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap)


def fifo(path: Path) -> Path:
    """A named pipe nobody writes to: reading it would wait forever."""
    os.mkfifo(path)
    return path


def test_a_fifo_as_the_config_file_is_refused(tmp_path: Path) -> None:
    config = fifo(tmp_path / "config.yaml")
    res = run_edge_fer(tmp_path, "--check-config", "--config", str(config), timeout=60)
    assert (res.returncode, res.stdout) == (EXIT_USAGE, "")
    assert res.stderr == f"edge-fer: {config}: cannot read (a FIFO, not a regular file)\n"


@pytest.mark.parametrize("kind", ["a FIFO", "a character device"])
def test_a_password_file_that_is_not_a_regular_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    # /dev/zero never ends: read whole, it took all the memory there was (exit 4).
    secret = fifo(tmp_path / "password") if kind == "a FIFO" else Path("/dev/zero")
    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  password_file: {secret}\n")
    res = run_edge_fer(tmp_path, "--check-config", "--config", str(config), timeout=60)
    assert (res.returncode, res.stdout) == (EXIT_USAGE, "")
    assert res.stderr == f"edge-fer: {config}: mqtt.password_file: cannot read {secret} ({kind}, not a regular file)\n"


def test_a_fifo_or_a_device_among_the_images_is_reported_and_the_others_answered(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "photo.png")
    res = run_edge_fer(tmp_path, "--image", str(pipe), "/dev/zero", str(ASTRONAUT), "--json")
    assert res.returncode == EXIT_INPUT
    assert [json.loads(line)["image"] for line in res.stdout.splitlines()] == [str(ASTRONAUT)]
    assert res.stderr.splitlines() == [f"edge-fer: {pipe}: cannot read (a FIFO, not a regular file)",
                                       "edge-fer: /dev/zero: cannot read (a character device, not a regular file)"]


@pytest.mark.parametrize("command", [["--check-config"], [], ["--image", str(ASTRONAUT), "--publish"],
                                     ["record", "--db", "events.db"]])
def test_an_empty_mqtt_host_is_refused_when_the_config_is_loaded(tmp_path: Path, command: list[str]) -> None:
    # camera.source: before the fix the daemon went on to open a camera.
    res = run_edge_fer(tmp_path, *command, "--set", "mqtt.host=", "--set", "camera.source=clip.avi", timeout=60)
    assert (res.returncode, res.stdout) == (EXIT_USAGE, "")
    assert res.stderr == "edge-fer: --set: mqtt.host = '' must not be empty\n"
    assert not (tmp_path / "events.db").exists()


def test_empty_option_values_are_refused_not_taken_for_absent(tmp_path: Path) -> None:
    from edge_fer.cli.main import main

    db = tmp_path / "events.db"
    open_store(str(db)).close()
    for option in ("--since", "--out"):
        err = io.StringIO()
        assert main(["report", "--db", str(db), option, ""], io.StringIO(), err) == EXIT_USAGE, option
        assert err.getvalue().startswith(f"edge-fer: {option} ") and err.getvalue().count("\n") == 1
    # Taken for absent, an empty --retention kept every row for ever; here the recorder would run until stopped.
    res = run_edge_fer(tmp_path, "record", "--db", str(db), "--retention", "", "--set", f"mqtt.port={free_port()}",
                   timeout=60)
    assert res.returncode == EXIT_USAGE
    assert res.stderr == "edge-fer: --retention '': expected a duration such as 90s, 15m, 12h, 30d or 2w\n"
