"""Capture: newest frame wins, pacing, file end and loop, a device that is not there."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli.main import main
from edge_fer.config import CameraConfig
from edge_fer.errors import EXIT_RUNTIME, EdgeFerError
from edge_fer.live.capture import Capture
from tests.conftest import ROOT, write_video


def _numbered_video(path: Path, n: int) -> Path:
    """Frames whose mean gray level encodes their index."""
    return write_video(path, [np.full((120, 160, 3), 10 + 2 * i, np.uint8) for i in range(n)])


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_a_video_is_paced_and_ends(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 30)
    t0 = time.monotonic()
    with Capture(CameraConfig(source=str(video), file_fps=30.0)) as cap:
        seqs = []
        while True:
            frame = cap.latest(timeout=1.0)
            if frame is None:
                break
            seqs.append(frame.seq)
        assert cap.state == "ended"
    assert seqs == sorted(set(seqs)) and seqs[-1] == 30
    assert time.monotonic() - t0 > 0.8  # 30 frames at 30 fps take about a second


def test_the_newest_frame_wins_and_the_skipped_are_counted(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 40)
    with Capture(CameraConfig(source=str(video), file_fps=200.0)) as cap:
        time.sleep(0.5)  # nobody takes frames meanwhile
        frame = cap.latest(timeout=1.0)
        assert frame is not None and frame.seq > 5
        assert cap.dropped >= frame.seq - 2
        level = float(frame.image.mean())
        assert abs(level - (10 + 2 * (frame.seq - 1))) < 3  # the image is that frame's own


def test_loop_plays_a_file_again(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 10)
    with Capture(CameraConfig(source=str(video), file_fps=100.0, loop=True)) as cap:
        assert _wait(lambda: cap.frames > 25, 10)
        assert cap.state == "ok"


def test_a_device_that_is_not_there_is_down_and_retried(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with Capture(CameraConfig(source="/dev/video97", reopen_max_seconds=0.5)) as cap:
        assert _wait(lambda: cap.state == "down", 5)
        assert cap.latest(timeout=0.2) is None
    assert time.monotonic() - t0 < 8  # closing does not wait for the backoff


def test_a_stream_password_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 9 here: the stream is down at once, and its URL is logged with the password hidden.
    with caplog.at_level("WARNING"), Capture(CameraConfig(source="rtsp://cam:s3cret@127.0.0.1:9/live?password=s3cret",
                                                          reopen_max_seconds=0.5)) as cap:
        assert _wait(lambda: cap.state == "down", 10)
    said = [r.getMessage() for r in caplog.records if "127.0.0.1:9" in r.getMessage()]
    assert said and all("s3cret" not in m and "cam:***@" in m for m in said), said


def _played(cfg: CameraConfig) -> tuple[list[int], Capture]:
    """The gray levels of every frame a capture delivers until it ends (nothing is dropped at a slow take)."""
    levels = []
    with Capture(cfg) as cap:
        while (frame := cap.latest(timeout=5.0)) is not None:
            levels.append(int(round((float(frame.image.mean()) - 10) / 2)))
    return levels, cap


def test_a_damaged_video_plays_to_its_end_skipping_the_bad_frames(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 60)
    data = bytearray(video.read_bytes())
    rng = random.Random(8)
    start = rng.randrange(4000, len(data) - 2000)
    data[start:start + 300] = bytes(rng.randrange(256) for _ in range(300))  # a few hundred bytes changed
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    reader = cv2.VideoCapture(str(damaged))
    reads = [reader.read()[0] for _ in range(70)]
    assert False in reads[:50] and sum(reads) >= 55  # OpenCV fails a frame mid-file, then decodes on
    levels, cap = _played(CameraConfig(source=str(damaged), file_fps=500.0))
    assert cap.state == "ended" and cap.frames == sum(reads)  # every frame OpenCV can decode
    assert cap.bad_frames >= 1 and levels[-1] >= 55  # played to the end, the bad frame counted


def test_the_daemon_on_a_damaged_video_prints_only_its_own_lines(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 60)
    data = bytearray(video.read_bytes())
    rng = random.Random(8)
    start = rng.randrange(4000, len(data) - 2000)
    data[start:start + 300] = bytes(rng.randrange(256) for _ in range(300))
    (tmp_path / "damaged.avi").write_bytes(bytes(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    res = subprocess.run([sys.executable, "-m", "edge_fer", "--source", str(tmp_path / "damaged.avi"),
                          "--set", "mqtt.enabled=false", "--set", "camera.file_fps=100"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    ours = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) edge_fer[.\w]*: |edge-fer: )")
    assert [line for line in res.stderr.splitlines() if not ours.match(line)] == []
    assert "damaged frames are skipped" in res.stderr and "damaged frames skipped: 1" in res.stderr


def test_an_unplayable_video_file_fails_after_the_documented_attempts(tmp_path: Path) -> None:
    bogus = tmp_path / "clip.avi"
    bogus.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    t0 = time.monotonic()
    with Capture(CameraConfig(source=str(bogus))) as cap:
        with pytest.raises(EdgeFerError) as e:
            while time.monotonic() - t0 < 20:
                cap.latest(timeout=0.5)
    assert cap.state == "failed" and "tried 3 times" in str(e.value) and time.monotonic() - t0 < 10
    # The daemon says so in one line and exits 4.
    err = io.StringIO()
    assert main(["--source", str(bogus), "--set", "mqtt.enabled=false"], out=io.StringIO(), err=err) == EXIT_RUNTIME
    assert err.getvalue() == f"edge-fer: {bogus}: cannot be opened as a video (tried 3 times)\n"


@pytest.mark.parametrize("kind", ["a folder", "a FIFO"])
def test_a_folder_or_a_fifo_as_the_source_is_said_to_be_one_and_fails(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "clip.avi"
    if kind == "a folder":
        source.mkdir()
    else:
        os.mkfifo(source)
    t0 = time.monotonic()
    with Capture(CameraConfig(source=str(source))) as cap:
        with pytest.raises(EdgeFerError) as e:
            while time.monotonic() - t0 < 20:
                cap.latest(timeout=0.5)
    assert str(e.value) == f"{source}: {kind}, not a video file (tried 3 times)"
    err = io.StringIO()
    assert main(["--source", str(source), "--set", "mqtt.enabled=false"], out=io.StringIO(), err=err) == EXIT_RUNTIME
    assert err.getvalue() == f"edge-fer: {source}: {kind}, not a video file (tried 3 times)\n"


def test_a_video_file_plays_at_its_own_rate_unless_file_fps_says_otherwise(tmp_path: Path) -> None:
    frames = [np.full((60, 80, 3), 10 + 2 * i, np.uint8) for i in range(20)]
    video = write_video(tmp_path / "v40.avi", frames, fps=40.0)
    # camera.fps is what a camera is asked for; it does not slow a 40 fps file down to 2 fps.
    t0 = time.monotonic()
    levels, _ = _played(CameraConfig(source=str(video), fps=2.0))
    own = time.monotonic() - t0
    assert len(levels) == 20 and 0.4 < own < 3.0  # 20 frames at 40 fps: half a second
    t0 = time.monotonic()
    levels, _ = _played(CameraConfig(source=str(video), fps=2.0, file_fps=10.0))
    assert len(levels) == 20 and time.monotonic() - t0 > 1.8  # 20 frames at 10 fps: two seconds


def test_picamera2_broken_by_numpy_2_says_what_to_do(tmp_path, monkeypatch) -> None:
    # What apt's picamera2 does in a venv with numpy 2 (its simplejpeg is built against numpy 1):
    # the import raises ValueError. A stand-in package reproduces exactly that import failure.
    import sys

    import pytest

    from edge_fer.errors import UsageError
    from edge_fer.live.capture import _import_picamera2

    (tmp_path / "picamera2").mkdir()
    (tmp_path / "picamera2" / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. '
        'Expected 96 from C header, got 88 from PyObject")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(UsageError, match=r"picamera2 could not be imported \(numpy.dtype size changed.*numpy<2"):
        _import_picamera2()
