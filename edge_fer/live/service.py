"""The process's life: one stop event with its reason, every signal in one place, what systemd hears of it, the
grace timeout, the pipeline's error; the same for the headless daemon, --display and --gui."""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from edge_fer.config import Config, load
from edge_fer.errors import EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError
from edge_fer.live.capture import CameraState, check_source
from edge_fer.live.daemon import Daemon
from edge_fer.live.sdnotify import Notifier
from edge_fer.types import Face, Live
from edge_fer.vision.analyze import Analyzer
from edge_fer.web.feed import Feed
from edge_fer.web.view import WebView

log = logging.getLogger(__name__)

# Within systemd's TimeoutStopSec (10 s in the unit): a pipeline stuck longer is abandoned.
SHUTDOWN_GRACE_SECONDS = 6.0
POLL_MS = 50  # how often the window looks at the stop event



def display_available() -> bool:
    """True when a window can be opened (X11 or Wayland)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def require_display() -> None:
    """Raise the clear error for a window asked for without a display."""
    if not display_available():
        raise UsageError("the window needs a display (DISPLAY or WAYLAND_DISPLAY is not set); "
                         "run without --display/--gui for the headless daemon")


class StopReason(enum.Enum):
    """Why the service was woken; RELOAD keeps it running, every other reason ends it."""

    RELOAD = "SIGHUP: reload the configuration"
    TERMINATE = "SIGTERM"
    INTERRUPT = "SIGINT"
    WINDOW_CLOSED = "the window was closed"
    SOURCE_ENDED = "the video file ended"
    PIPELINE_FAILED = "the pipeline failed"


SIGNALS = {signal.SIGTERM: StopReason.TERMINATE, signal.SIGINT: StopReason.INTERRUPT,
           signal.SIGHUP: StopReason.RELOAD}


class PipelineThread:
    """A daemon on its own thread that can be started and stopped (the window's camera)."""

    def __init__(self, cfg: Config, notifier: Notifier, on_ready: Callable[[str], object],
                 on_end: Callable[[StopReason], None] | None = None, web: Feed | None = None) -> None:
        self.cfg = cfg
        self._web = web  # outlives each pipeline, so the web view's counts run on across reloads
        self._notifier = notifier
        self._on_ready = on_ready
        self._on_end = on_end
        self._daemon: Daemon | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: EdgeFerError | None = None

    @property
    def latest(self) -> Live | None:
        """The newest result of the running pipeline."""
        return self._daemon.latest if self._daemon is not None else None

    @property
    def camera_state(self) -> CameraState:
        """The running capture's state; STARTING until the pipeline has made one (its model loads first)."""
        capture = self._daemon.capture if self._daemon is not None else None
        return capture.state if capture is not None else CameraState.STARTING

    def start(self, analyzer: Analyzer | None = None) -> None:
        """Start a fresh pipeline (with an analyzer already loaded, when a reload checked it)."""
        self.stop()
        self._stop = threading.Event()
        self.error = None
        self._daemon = None
        stop = self._stop

        def run() -> None:
            try:
                self._daemon = Daemon(self.cfg, stop, self._notifier, self._on_ready, analyzer, self._web)
                self._daemon.run()
            except EdgeFerError as e:
                self.error = e
            except Exception:  # a bug: logged with its traceback for the journal, and the process exits non-zero
                log.exception("the pipeline failed")
                self.error = EdgeFerError("the pipeline failed (see the log)")
            if (self.error or not stop.is_set()) and self._on_end is not None:
                # The source ended by itself, or the pipeline could not go on.
                self._on_end(StopReason.PIPELINE_FAILED if self.error else StopReason.SOURCE_ENDED)

        self._thread = threading.Thread(target=run, name="pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = SHUTDOWN_GRACE_SECONDS) -> bool:
        """Stop the pipeline in order and wait for it; False if it did not finish in time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        return True


class WindowHost:
    """The service as the window sees it (overlay.Host): the camera, its newest result, photos, closing."""

    def __init__(self, service: Service, analyzer: Analyzer) -> None:
        self.service = service
        self.analyzer = analyzer  # the photo settings, loaded once for every opened image
        self.stopped = True  # False once a pipeline did not stop within the grace time

    def start_camera(self) -> None:
        """Start the live pipeline."""
        self.service.pipeline.start()

    def stop_camera(self) -> None:
        """Stop the live pipeline in order."""
        self.stopped = self.service.stop_pipeline()

    def latest(self) -> Live | None:
        """The newest result of the live pipeline."""
        return self.service.pipeline.latest

    def camera_state(self) -> str:
        """The live capture's state now."""
        return str(self.service.pipeline.camera_state)

    def analyze(self, image: np.ndarray) -> list[Face]:
        """The faces of one opened photo."""
        return self.analyzer.analyze(image)

    def window_closed(self) -> None:
        """The window was closed: the service stops."""
        self.service.request(StopReason.WINDOW_CLOSED)


class Service:
    """Owns the process's life: the stop event and its reason, signals, reloads, and the exit status."""

    def __init__(self, cfg: Config, config_path: str | None, overrides: list[str]) -> None:
        self.cfg = cfg
        self._config_path = config_path
        self._overrides = overrides
        self._wake = threading.Event()
        self._reason: StopReason | None = None
        self._lock = threading.Lock()
        # The process's one voice to systemd; a pipeline only pings the watchdog and reports its first frame.
        self.notifier = Notifier()
        self.web = WebView(Feed(cfg.mqtt.device_id))
        self.pipeline = PipelineThread(cfg, self.notifier, on_ready=self.notifier.ready, on_end=self.request,
                                       web=self.web.feed)

    def request(self, reason: StopReason) -> None:
        """Wake the service; a stop is never downgraded to a reload."""
        with self._lock:
            if self._reason is None or self._reason is StopReason.RELOAD:
                self._reason = reason
        self._wake.set()

    def _take(self) -> StopReason | None:
        with self._lock:
            reason, self._reason = self._reason, None
            self._wake.clear()
        return reason

    @contextmanager
    def running(self) -> Iterator[None]:
        """SIGTERM, SIGINT and SIGHUP wake the service while it runs; systemd hears STOPPING=1 as it leaves."""
        previous = {sig: signal.signal(sig, lambda signum, _frame: self.request(SIGNALS[signal.Signals(signum)]))
                    for sig in SIGNALS}
        try:
            yield
        finally:
            # Once, here only: a pipeline also stops on a reload, and STOPPING=1 then would have systemd end the unit.
            self.notifier.stopping()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reloaded(self) -> tuple[Config, Analyzer] | None:
        """The new configuration and its loaded model, or None (logged, READY=1 again) when either is bad."""
        self.notifier.reloading()
        try:
            cfg = load(self._config_path, self._overrides)
            check_source(cfg.camera)
            analyzer = Analyzer.from_config(cfg)
        except EdgeFerError as e:
            refused = f"reload refused, the running configuration stays: {e}"
            log.error("%s", refused)
            self.notifier.ready(refused)  # nothing changes and the old pipeline runs on: the reload is over
            return None
        logging.getLogger().setLevel(cfg.logging.level)
        log.info("configuration reloaded from %s", cfg.source_file)
        return cfg, analyzer

    def _restart(self, cfg: Config, analyzer: Analyzer | None, start: bool = True) -> bool:
        """Stop the pipeline and start one on `cfg` (READY=1 at its first frame); False when the old one is stuck."""
        if not self.stop_pipeline():
            return False
        self.cfg = self.pipeline.cfg = cfg
        self.web.reload(cfg.web)
        if start:
            self.pipeline.start(analyzer)
        else:  # the window's camera is off: nothing to wait for
            self.notifier.ready("configuration reloaded")
        return True

    def stop_pipeline(self) -> bool:
        """Stop the running pipeline in order; False (logged) when it did not stop within the grace time."""
        if self.pipeline.stop(timeout=SHUTDOWN_GRACE_SECONDS):
            return True
        log.error("the pipeline did not stop within %.0f s; exiting without a clean shutdown", SHUTDOWN_GRACE_SECONDS)
        return False

    def _exit_status(self, stopped: bool) -> int:
        """EXIT_RUNTIME for a stuck pipeline; the pipeline's own error is raised for main to report."""
        if not stopped:
            return EXIT_RUNTIME
        if self.pipeline.error is not None:
            raise self.pipeline.error
        return EXIT_OK

    def run_headless(self) -> int:
        """Run the daemon until a stop; SIGHUP reloads a valid configuration and leaves a bad one unapplied."""
        with self.running(), self.web.serving(self.cfg.web):
            # The pipeline runs on its own thread so a stuck one cannot keep the process from stopping.
            self.pipeline.start()
            while True:
                # Timed: a signal the kernel hands to another thread runs its handler only when this one wakes.
                self._wake.wait(0.5)
                reason = self._take()
                if reason is StopReason.RELOAD:
                    new = self._reloaded()
                    if new is not None and not self._restart(*new):
                        return EXIT_RUNTIME
                    continue
                if reason is not None:
                    log.info("stopping: %s", reason.value)
                    return self._exit_status(self.stop_pipeline())

    def run_window(self, camera: bool) -> int:
        """The Tk window over the same pipeline: started now (--display) or by the Camera button (--gui)."""
        require_display()
        try:
            import tkinter as tk

            from edge_fer.ui.overlay import Overlay
        except ImportError:
            raise EdgeFerError("the window needs tkinter: sudo apt install python3-tk") from None
        if camera:
            check_source(self.cfg.camera)  # the same clear error as headless, before a window opens
        try:
            root = tk.Tk()
        except tk.TclError as e:
            raise EdgeFerError(f"cannot open the window: {e}") from None
        with self.running(), self.web.serving(self.cfg.web), Analyzer.from_config(self.cfg, photos=True) as analyzer:
            host = WindowHost(self, analyzer)
            overlay = Overlay(root, self.cfg, host)

            def tick() -> None:
                reason = self._take() if self._wake.is_set() else None
                if reason is StopReason.RELOAD:
                    new = self._reloaded()
                    if new is not None:
                        overlay.cfg = new[0]
                        host.stopped = self._restart(*new, start=overlay.camera_on)
                elif reason in (StopReason.SOURCE_ENDED, StopReason.PIPELINE_FAILED) and not camera:
                    # --gui: the camera stops, the window stays and says why.
                    error = self.pipeline.error
                    overlay.camera_ended(f"camera stopped: {error}" if error else "camera stopped: the video ended")
                elif reason is not None:
                    log.info("stopping: %s", reason.value)
                    overlay.quit()
                    return
                if not host.stopped:
                    overlay.quit()
                    return
                root.after(POLL_MS, tick)

            root.after(POLL_MS, tick)
            if camera:
                overlay.toggle_camera()
            root.mainloop()
        if overlay.camera_on:
            host.stop_camera()
        if camera:
            return self._exit_status(host.stopped)
        return EXIT_OK if host.stopped else EXIT_RUNTIME
