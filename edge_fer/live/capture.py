"""Frame capture in its own thread, keeping only the newest frame (the only module that opens cameras)."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from edge_fer.config import CameraConfig, file_kind
from edge_fer.errors import EdgeFerError, UsageError, redacted, shown
from edge_fer.types import Frame, TextEnum

log = logging.getLogger(__name__)
T = TypeVar("T")

FAILURES_BEFORE_REOPEN = 10
# A video file that exists but cannot be played is tried this often (0.5 s, then 1 s apart), then it is an
# error; a camera (or a missing file with camera.wait_for_file) is waited for and retried without end.
FILE_OPEN_ATTEMPTS = 3
# Failed reads in a row that end a video file: damaged frames in between are skipped and counted.
FILE_END_FAILURES = 25
# A source that neither delivers nor fails for this long (stuck inside an open or a read) is stalled: its faces'
# tracks end and the watchdog goes unfed, so systemd restarts a capture that never comes back.
STALL_SECONDS = 3.0
# FFmpeg gives up on a silent stream URL after this (its own default is 30 s), so it is reopened with backoff.
NETWORK_TIMEOUT_MS = 6000


def quiet_native_logs() -> None:
    """Keep OpenCV's and FFmpeg's own lines off stderr: every problem is reported once, in our log."""
    # Read by OpenCV when it first opens a video through FFmpeg (-8 is AV_LOG_QUIET); a value set by the
    # user wins, for debugging a stream.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # OpenCV's own lines (e.g. [ WARN ] for a missing V4L2 device): through its API where the wheel has one
    # (4.9 and later); older wheels read the variable when they first log.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    logging_api = getattr(cv2.utils, "logging", None)
    if logging_api is not None:
        logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)


class CameraState(TextEnum):
    """What the capture is doing; the value is what state messages and the log show."""

    STARTING = "starting"
    OK = "ok"
    DOWN = "down"  # failed to open or read: retried with backoff
    STALLED = "stalled"  # inside an open or a read that has not returned for STALL_SECONDS
    ENDED = "ended"
    FAILED = "failed"



class UnplayableVideo(OSError):
    """A video file that is there but cannot be opened or yields no frame."""


class Source(Protocol):
    """Something that yields frames: an OpenCV capture or a Pi camera."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


def _target(cfg: CameraConfig) -> int | str:
    """What OpenCV opens: a camera index, or the path or URL as given."""
    src = cfg.source
    return int(src) if isinstance(src, int) or re.fullmatch(r"\d+", str(src)) else str(src)


def is_video_file(cfg: CameraConfig) -> bool:
    """Whether camera.source names a video file (not a camera index, a device, a stream URL or picamera2)."""
    target = _target(cfg)
    return (isinstance(target, str) and target != "picamera2" and "://" not in target
            and not target.startswith("/dev/"))


class OpenCVSource:
    """A V4L2/USB camera, video file or stream URL through OpenCV."""

    def __init__(self, cfg: CameraConfig) -> None:
        target = _target(cfg)
        self.is_file = is_video_file(cfg)
        if self.is_file:
            try:
                mode = os.stat(target).st_mode
            except (OSError, ValueError):  # ValueError: a NUL in the name
                raise OSError(f"{shown(redacted(target))}: no such video file") from None
            if not stat.S_ISREG(mode):  # a folder or a FIFO never plays: an error, not something to wait for
                raise UnplayableVideo(f"{shown(redacted(target))}: {file_kind(mode)}, not a video file")
        if isinstance(target, str) and "://" in target:
            # Bound FFmpeg's open and every read: a server that accepts and never speaks must not hang them.
            self._cap = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS,
                                                               cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS])
        else:
            self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            if self.is_file:
                raise UnplayableVideo(f"{shown(redacted(target))}: cannot be opened as a video")
            raise OSError(f"{shown(redacted(target))}: cannot open")
        # A file's own frame rate, when it states a plausible one.
        own = self._cap.get(cv2.CAP_PROP_FPS) if self.is_file else 0.0
        self.fps = own if 0.1 <= own <= 1000 else 0.0
        if not self.is_file:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            self._cap.set(cv2.CAP_PROP_FPS, cfg.fps)

    def read(self) -> np.ndarray | None:
        """The next frame, or None when none came."""
        ok, frame = self._cap.read()
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        """Release the device or file."""
        self._cap.release()


def _import_picamera2() -> Any:
    """The Picamera2 class, or the error that says how to install it."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise UsageError("camera.source is picamera2 but picamera2 is not installed: "
                         "sudo apt install python3-picamera2") from None
    except ValueError as e:
        # apt's picamera2 (simplejpeg) is built against Debian's numpy 1: numpy 2 in the venv breaks its import.
        raise UsageError(f"picamera2 could not be imported ({str(e).splitlines()[0]}): "
                         "install numpy<2 in edge-fer's venv (see README, Raspberry Pi)") from None
    return Picamera2


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (installed from apt on Raspberry Pi OS)."""

    def __init__(self, cfg: CameraConfig) -> None:
        self._cam = _import_picamera2()()
        config = self._cam.create_video_configuration(
            main={"size": (cfg.width, cfg.height), "format": "RGB888"},
            controls={"FrameRate": cfg.fps})
        self._cam.configure(config)
        self._cam.start()
        self.is_file = False
        self.fps = 0.0

    def read(self) -> np.ndarray | None:
        """The next frame (picamera2's RGB888 is BGR in memory)."""
        return self._cam.capture_array("main")

    def close(self) -> None:
        """Stop and release the camera."""
        self._cam.stop()
        self._cam.close()


def check_source(cfg: CameraConfig) -> None:
    """Raise now, with its hint, for a source that can never work here: picamera2 not installed, or a video file
    that is not there (unless camera.wait_for_file)."""
    if cfg.source == "picamera2":
        _import_picamera2()
    elif is_video_file(cfg) and not cfg.wait_for_file and not os.path.lexists(str(cfg.source)):
        raise UsageError(f"{shown(cfg.source)}: no such video file (a file is not a camera that comes back: "
                         "check the path, or set camera.wait_for_file: true to wait for it)")


def open_source(cfg: CameraConfig) -> Source:
    """The source named by camera.source."""
    if cfg.source == "picamera2":
        return PiCameraSource(cfg)
    return OpenCVSource(cfg)


class Capture:
    """Reads frames in a thread and keeps the newest; reopens a failed source with backoff."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.state = CameraState.STARTING
        self.error = ""  # why it failed, for the one line the user sees
        self.frames = 0
        self.dropped = 0
        self.bad_frames = 0  # damaged frames of a video file, skipped
        self._latest: Frame | None = None
        self._taken_seq = 0
        self._cond = threading.Condition()
        self._busy_since: float | None = None  # when the open or read now under way began
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def __enter__(self) -> Capture:
        check_source(self.cfg)  # fail now, with the apt hint, rather than retry forever
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 3.0) -> None:
        """Stop the thread and release the source; waits once, as a thread stuck in a native read never returns."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        if not self._closed and self._thread.is_alive():
            self._thread.join(timeout)  # still alive after: a daemon thread, left behind without blocking the exit
        self._closed = True

    def _set_state(self, state: CameraState, detail: str = "") -> None:
        with self._cond:  # the pipeline's thread also sets STALLED
            if state != self.state:
                level = logging.INFO if state in (CameraState.OK, CameraState.ENDED) else logging.WARNING
                log.log(level, "camera %s: %s%s", shown(redacted(self.cfg.source)), state,
                        f" ({detail})" if detail else "")
                self.state = state
                self._cond.notify_all()

    def _check_stall(self) -> None:
        """Mark the capture stalled once an open or a read has not returned for STALL_SECONDS."""
        with self._cond:
            since = self._busy_since
            if since is not None and time.monotonic() - since > STALL_SECONDS \
                    and self.state not in (CameraState.STALLED, CameraState.ENDED, CameraState.FAILED):
                self._set_state(CameraState.STALLED, f"no frame for {STALL_SECONDS:.0f} s")

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one open or read, noting when it began so a call that never returns is seen."""
        self._busy_since = time.monotonic()
        try:
            return fn()
        finally:
            self._busy_since = None

    def latest(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout`; None if none came or capture ended.

        Raises EdgeFerError once the source has failed for good (a video file that cannot be played)."""
        with self._cond:
            self._cond.wait_for(lambda: (self._latest is not None and self._latest.seq > self._taken_seq)
                                or self.state in (CameraState.ENDED, CameraState.FAILED) or self.stop_event.is_set(),
                                timeout)
            self._check_stall()
            if self.state == CameraState.FAILED:
                raise EdgeFerError(self.error)
            frame = self._latest
            if frame is None or frame.seq <= self._taken_seq:
                return None
            self._taken_seq = frame.seq
            return frame

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            self.frames += 1
            if self._latest is not None and self._latest.seq > self._taken_seq:
                self.dropped += 1  # the pipeline did not take the previous one: newest wins
            self._latest = Frame(image, self.frames, time.monotonic(), time.time())
            self._cond.notify_all()

    def _down(self, detail: str, backoff: float) -> float:
        """Mark the source down, wait `backoff` seconds (or until stopped); returns the next, doubled wait."""
        self._set_state(CameraState.DOWN, detail)
        self.stop_event.wait(backoff)
        return min(backoff * 2, self.cfg.reopen_max_seconds)

    def _run(self) -> None:
        backoff = 0.5
        unplayable = 0
        while not self.stop_event.is_set():
            try:
                source = self._call(lambda: open_source(self.cfg))
            except UnplayableVideo as e:
                unplayable += 1
                if unplayable >= FILE_OPEN_ATTEMPTS:
                    self._fail(f"{e} (tried {unplayable} times)")
                    return
                backoff = self._down(str(e), backoff)
                continue
            except (OSError, cv2.error, RuntimeError) as e:
                backoff = self._down(str(e), backoff)
                continue
            try:
                result = self._read_until_failure(source)
            finally:
                source.close()
            if result == "ended":
                skipped = f"; damaged frames skipped: {self.bad_frames}" if self.bad_frames else ""
                self._set_state(CameraState.ENDED, f"end of the video file{skipped}")
                return
            if result == "failed":
                if getattr(source, "is_file", False):
                    unplayable += 1
                    if unplayable >= FILE_OPEN_ATTEMPTS:
                        self._fail(f"{shown(redacted(self.cfg.source))}: no frame could be decoded "
                                   f"(tried {unplayable} times)")
                        return
                backoff = self._down("no frames", backoff)
            else:
                backoff = 0.5

    def _fail(self, error: str) -> None:
        self.error = error
        self._set_state(CameraState.FAILED, error)

    def _read_until_failure(self, source: Source) -> str:
        """Read frames until stop ('stopped'), a file's end ('ended', unless looping) or repeated failure."""
        is_file = getattr(source, "is_file", False)
        # A file plays at camera.file_fps, else at its own rate; a camera delivers at the rate it was asked for.
        rate = (self.cfg.file_fps or getattr(source, "fps", 0.0) or self.cfg.fps) if is_file else self.cfg.fps
        period = 1.0 / rate
        failures = 0
        next_t = time.monotonic()
        delivered = False
        while not self.stop_event.is_set():
            started = time.monotonic()
            image = self._call(source.read)
            if image is None:
                failures += 1
                if time.monotonic() - started > STALL_SECONDS:
                    return "failed"  # it timed out, not just a bad frame: reopen now, not after more timeouts
                if is_file and delivered:
                    # A damaged frame fails one read and the next ones decode; the end fails every read.
                    if failures >= FILE_END_FAILURES:
                        return "looped" if self.cfg.loop else "ended"
                    continue
                if failures >= FAILURES_BEFORE_REOPEN:
                    return "failed"
                self.stop_event.wait(min(period, 0.1))
                continue
            if is_file and delivered and failures:
                if not self.bad_frames:
                    log.warning("camera %s: damaged frames are skipped (first after frame %d)",
                                shown(redacted(self.cfg.source)), self.frames)
                self.bad_frames += failures
            failures = 0
            delivered = True
            self._set_state(CameraState.OK)
            self._publish(image)
            if is_file:
                next_t += period
                self.stop_event.wait(max(0.0, next_t - time.monotonic()))
        return "stopped"
