"""The subcommands of edge-fer: each with its own help, the old flags still the default run, one error funnel."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli.funnel import funnel
from edge_fer.cli.main import COMMANDS, main
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, ExitStatus
from edge_fer.recorder.store import open_store
from tests.conftest import ASTRONAUT, ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def edge_fer(*argv: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", ENV)
    kw.setdefault("cwd", ROOT)
    return subprocess.run([sys.executable, "-m", "edge_fer", *argv], text=True, timeout=120, **kw)


def test_the_exit_statuses_keep_their_documented_values() -> None:
    # README "Exit status" documents these numbers; scripts and systemd depend on them.
    assert {s.name: int(s) for s in ExitStatus} == {"OK": 0, "INPUT": 1, "USAGE": 2, "MODEL": 3, "RUNTIME": 4,
                                                     "INTERRUPTED": 130, "PIPE": 141}


def test_the_top_help_lists_every_subcommand_and_each_has_its_own_help() -> None:
    code, out, err = run("--help")
    assert code == EXIT_OK and err == ""
    assert "--image PATH" in out  # today's flags are still documented
    listed = [line.split()[0] for line in out.splitlines()
              if line.startswith("  ") and not line.lstrip().startswith("-") and line.split()[0] in COMMANDS]
    assert listed == ["image", "run", "record", "report", "check-config"]
    for name in COMMANDS:
        code, out, err = run(name, "--help")
        assert code == EXIT_OK and err == "", name
        assert out.startswith(f"usage: edge-fer {name} "), out[:200]
    assert "--db DB" in run("record", "--help")[1] and "--bucket" in run("report", "--help")[1]
    assert "--source SRC" in run("run", "--help")[1] and "--json" in run("image", "--help")[1]


@pytest.mark.parametrize("argv, message", [
    (["record"], "the following arguments are required: --db (see edge-fer record --help)"),
    (["report", "--db", "x.db", "--bogus"], "unrecognized arguments: --bogus (see edge-fer report --help)"),
    (["image"], "the following arguments are required: PATH (see edge-fer image --help)"),
    (["run", "--image", "x.png"], "unrecognized arguments: --image x.png (see edge-fer run --help)"),
    (["check-config", "--source", "0"], "unrecognized arguments: --source 0 (see edge-fer check-config --help)"),
    (["--bogus"], "unrecognized arguments: --bogus (see edge-fer --help)"),
    (["imgae", "x.png"], "unknown command 'imgae'; did you mean image? (see edge-fer --help)"),
])
def test_a_usage_error_points_at_its_own_subcommands_help(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert (code, out, err) == (EXIT_USAGE, "", f"edge-fer: {message}\n")


def test_image_and_check_config_answer_as_the_old_flags_do(tmp_path: Path) -> None:
    assert run("image", str(ASTRONAUT), "--json") == run("--image", str(ASTRONAUT), "--json")
    f = tmp_path / "c.yaml"
    f.write_text("mqtt:\n  host: broker.lan\n")
    new = run("check-config", "--config", str(f), "--set", "camera.fps=5")
    assert new == run("--check-config", "--config", str(f), "--set", "camera.fps=5")
    assert new[0] == EXIT_OK and "host: broker.lan" in new[1] and "fps: 5.0" in new[1]


def _mp4(path: Path) -> Path:
    """A real, playable MPEG-4 clip of a few gray frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 64))
    assert writer.isOpened(), "OpenCV cannot write MPEG-4 here"
    for i in range(5):
        writer.write(np.full((64, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("command", [["--image"], ["image"]])
def test_a_video_given_as_an_image_says_to_use_source(tmp_path: Path, command: list[str]) -> None:
    clip = _mp4(tmp_path / "clip.mp4")
    assert cv2.VideoCapture(str(clip)).read()[0]  # a video the daemon could play
    code, out, err = run(*command, str(clip), str(ASTRONAUT), "--json")
    assert code == EXIT_INPUT
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(ASTRONAUT)]  # the photo still answered
    assert err == f"edge-fer: {clip}: a video, not an image: use --source for videos (edge-fer run --source {clip})\n"


def test_image_publish_prints_no_info_lines_on_success(tmp_path: Path) -> None:
    from tests.broker import Broker, Subscriber

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edge_fer/#")
    mqtt = ["--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={broker.port}", "--set", "mqtt.device_id=cam"]
    try:
        old = edge_fer("--image", str(ASTRONAUT), "--publish", *mqtt, capture_output=True)
        new = edge_fer("image", str(ASTRONAUT), "--publish", *mqtt, capture_output=True)
        assert sub.wait_for(lambda s: len(s.on("cam/events")) == 2, 10), "the faces were not published"
        # A broker that is gone is still reported: warnings and errors are not silenced.
        broker.stop()
        gone = edge_fer("image", str(ASTRONAUT), "--publish", *mqtt, capture_output=True)
    finally:
        sub.close()
        broker.stop()
    for res in (old, new):
        assert res.returncode == EXIT_OK and "(512x512): 1 face" in res.stdout
        assert res.stderr == "", res.stderr
    assert gone.returncode == EXIT_RUNTIME and "not reachable; results not published" in gone.stderr


def test_report_into_a_closed_pipe_stops_quietly_with_the_sigpipe_status(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    open_store(str(db)).close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already gone
    try:
        res = edge_fer("report", "--db", str(db), stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert (res.returncode, res.stderr) == (ExitStatus.PIPE, "")


def test_the_funnel_turns_a_real_out_of_memory_into_one_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert funnel(lambda: len(bytearray(1 << 62)), out, err) == EXIT_RUNTIME  # 4 EiB: no machine has it
    assert err.getvalue() == "edge-fer: out of memory\n"


def test_record_and_report_load_neither_the_vision_stack_nor_the_cli_into_the_recorder(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    open_store(str(db)).close()
    code = ("import json, sys; from edge_fer.cli.main import main; status = main(['report', '--db', sys.argv[1]]); "
            "print(json.dumps([status, sorted({'cv2', 'numpy'} & set(sys.modules))]), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, str(db)], env=ENV, capture_output=True, text=True, timeout=60)
    assert json.loads(res.stderr.splitlines()[-1]) == [EXIT_OK, []], res.stderr
    # The recorder no longer imports the command line (the cycle import-linter refused).
    code = "import sys, edge_fer.recorder.record; print(sorted(m for m in sys.modules if m.startswith('edge_fer.cli')))"
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stderr
