"""Capture: newest frame wins, pacing, file end and loop, a device that is not there."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_fer.capture import Capture
from edge_fer.config import CameraConfig
from tests.conftest import write_video


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
    with Capture(CameraConfig(source=str(video), fps=30.0)) as cap:
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
    with Capture(CameraConfig(source=str(video), fps=200.0)) as cap:
        time.sleep(0.5)  # nobody takes frames meanwhile
        frame = cap.latest(timeout=1.0)
        assert frame is not None and frame.seq > 5
        assert cap.dropped >= frame.seq - 2
        level = float(frame.image.mean())
        assert abs(level - (10 + 2 * (frame.seq - 1))) < 3  # the image is that frame's own


def test_loop_plays_a_file_again(tmp_path: Path) -> None:
    video = _numbered_video(tmp_path / "v.avi", 10)
    with Capture(CameraConfig(source=str(video), fps=100.0, loop=True)) as cap:
        assert _wait(lambda: cap.frames > 25, 10)
        assert cap.state == "ok"


def test_a_device_that_is_not_there_is_down_and_retried(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with Capture(CameraConfig(source="/dev/video97", reopen_max_seconds=0.5)) as cap:
        assert _wait(lambda: cap.state == "down", 5)
        assert cap.latest(timeout=0.2) is None
    assert time.monotonic() - t0 < 8  # closing does not wait for the backoff
