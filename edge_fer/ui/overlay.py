"""The Tk window: live frames with faces and scores, open a photo, snapshots and recordings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog
from typing import Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_fer.config import Config
from edge_fer.errors import EdgeFerError, WriteError, shown
from edge_fer.types import Face, Live
from edge_fer.vision.annotate import annotate, color_of
from edge_fer.vision.images import IMAGE_SUFFIXES, read_image, save_image, write_file

log = logging.getLogger(__name__)

POLL_MS = 30
PANEL_W = 260
NOTICE_SECONDS = 8.0  # how long a saved/failed message stays in the status bar over the live figures
DISK_CHECK_FRAMES = 15  # a recording checks the free space this often (OpenCV's writer fails silently)
FULL_ROW, BAR_ROW, TITLE_ROW = 20, 18, 20  # panel pixels: a face's title, each of its bars, a face in one line
# What the status bar says while the camera gives no picture, by the capture's state (edge_fer.live.capture).
CAMERA_STATES = {"starting": "starting...", "down": "down, retrying (the log says why)",
                 "stalled": "stalled: no new frame, waiting", "ended": "the video ended", "failed": "failed"}
# Both cases: Tk's patterns are case-sensitive on X11, and cameras name their photos IMG_0001.JPG. The usual
# suffixes first, as the dialog's filter menu shows the first few.
IMAGE_PATTERNS = tuple(pattern for suffix in sorted(IMAGE_SUFFIXES, key=lambda s: (s not in (".jpg", ".png"), s))
                       for pattern in (f"*{suffix}", f"*{suffix.upper()}"))


def _disk_full(folder: Path) -> bool:
    """True when the file system holding `folder` has no block left for us."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def source_name(source: object) -> str:
    """The camera source as the status bar names it: a stream URL without its user and password."""
    text = str(source)
    parts = urlsplit(text) if "://" in text else None
    if parts is not None and "@" in parts.netloc:
        text = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
    return shown(text)


def _on_key(action: Callable[[], object]) -> Callable[[tk.Event], None]:
    """A key binding that runs `action`."""
    def handler(_event: tk.Event) -> None:
        action()
    return handler


def hex_color(bgr: tuple[int, int, int]) -> str:
    """A Tk colour from a BGR tuple."""
    return f"#{bgr[2]:02x}{bgr[1]:02x}{bgr[0]:02x}"


class Host(Protocol):
    """What the window needs of the service around it."""

    def start_camera(self) -> None:
        """Start the live pipeline."""

    def stop_camera(self) -> None:
        """Stop the live pipeline and wait for it."""

    def latest(self) -> Live | None:
        """The newest result of the live pipeline, with its figures."""

    def camera_state(self) -> str:
        """The live capture's state now: starting, ok, down, stalled, ended or failed."""

    def analyze(self, image: np.ndarray) -> list[Face]:
        """The faces of one opened photo (called on a worker thread)."""

    def window_closed(self) -> None:
        """The user closed the window: the service stops."""


class Overlay:
    """The window; it polls the newest pipeline result with after() and never waits on inference."""

    def __init__(self, root: tk.Tk, cfg: Config, host: Host) -> None:
        self.root, self.cfg, self.host = root, cfg, host
        self.save_dir = Path(cfg.display.save_dir).expanduser()
        self.frame: np.ndarray | None = None  # the frame on screen, as captured or opened
        self._shown: np.ndarray | None = None
        self.faces: list[Face] = []
        self.face_labels: dict[int, str] = {}
        self.scale = 1.0
        self.offset = (0, 0)
        self.camera_on = False
        self.recorder: cv2.VideoWriter | None = None
        self.record_path: Path | None = None
        self._record_size = (0, 0)
        self._recorded = 0
        self._notice = ("", 0.0)
        self._seen_seq = -1
        self._photo: tk.PhotoImage | None = None
        self._pending: tuple[str, np.ndarray | None, list[Face], str] | None = None
        self._open_dir = ""  # the folder of the photo opened last
        self._build()
        self.root.after(POLL_MS, self._poll)

    def _build(self) -> None:
        root = self.root
        root.title("edge-fer")
        root.geometry("1000x600")
        root.minsize(480, 320)
        bar = tk.Frame(root)
        bar.pack(side=tk.TOP, fill=tk.X)
        self.buttons: dict[str, tk.Button] = {}
        actions: tuple[tuple[str, str, Callable[[], object]], ...] = (
            ("o", "Open image (o)", self.open_dialog), ("c", "Camera (c)", self.toggle_camera),
            ("s", "Snapshot (s)", self.snapshot), ("r", "Record (r)", self.toggle_record), ("q", "Quit (q)", self.quit))
        for key, text, cmd in actions:
            b = tk.Button(bar, text=text, command=cmd)
            b.pack(side=tk.LEFT, padx=2, pady=2)
            self.buttons[key] = b
            root.bind(f"<Key-{key}>", _on_key(cmd))
        self.status = tk.Label(root, anchor=tk.W, text="no picture yet: open an image or start the camera")
        self.status.pack(side=tk.BOTTOM, fill=tk.X)
        body = tk.Frame(root)
        body.pack(fill=tk.BOTH, expand=True)
        self.panel = tk.Canvas(body, width=PANEL_W, bg="#202020", highlightthickness=0)
        self.panel.pack(side=tk.RIGHT, fill=tk.Y)
        self.panel.bind("<Configure>", lambda _e: self._draw_panel())
        self.video = tk.Canvas(body, bg="black", highlightthickness=0)
        self.video.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        self.video.bind("<Configure>", lambda _e: self._redraw())
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self._hide_dotfiles()

    def _hide_dotfiles(self) -> None:
        """Have Tk's own file dialog (X11) hide dot folders and files, with a button to show them."""
        # Its settings exist once its script is loaded: a call it refuses loads it and opens nothing.
        try:
            self.root.tk.call("tk_getOpenFile", "-no-such-option")
        except tk.TclError:
            pass
        self.root.tk.call("set", "::tk::dialog::file::showHiddenBtn", "1")
        self.root.tk.call("set", "::tk::dialog::file::showHiddenVar", "0")

    # Drawing -------------------------------------------------------------------------------

    @property
    def shown(self) -> np.ndarray | None:
        """The frame on screen with its boxes and labels, full size: what snapshots and recordings keep."""
        if self._shown is None and self.frame is not None:
            # The panel beside the video carries the score bars, so the frame keeps only boxes and labels.
            self._shown = annotate(self.frame, self.faces, self.face_labels, bars=False)
        return self._shown

    def show(self, frame: np.ndarray, faces: list[Face], labels: dict[int, str] | None = None,
             status: str = "") -> None:
        """Put a frame and its faces on screen; a face without a label (a track id) is named by its number."""
        self.frame, self._shown = frame, None
        self.faces = faces
        self.face_labels = {i: (labels or {}).get(i, str(i + 1)) for i in range(len(faces))}
        if self.recorder is not None:
            self._record_frame()
        self._redraw()
        self._draw_panel()
        if status:
            self.status.configure(text=status)

    def _redraw(self) -> None:
        if self.frame is None:
            return
        cw, ch = max(1, self.video.winfo_width()), max(1, self.video.winfo_height())
        h, w = self.frame.shape[:2]
        self.scale = s = min(cw / w, ch / h)
        size = (max(1, int(w * s)), max(1, int(h * s)))
        img = cv2.resize(self.frame, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        # Drawn at the size shown, so labels keep their smallest legible size on screen however far the
        # frame is scaled down.
        scaled = [dataclasses.replace(f, box=(round(f.box[0] * s), round(f.box[1] * s), max(1, round(f.box[2] * s)),
                                              max(1, round(f.box[3] * s)))) for f in self.faces]
        img = annotate(img, scaled, self.face_labels, bars=False)
        ok, ppm = cv2.imencode(".ppm", img)
        self._photo = tk.PhotoImage(data=ppm.tobytes(), format="PPM")
        self.offset = ((cw - size[0]) // 2, (ch - size[1]) // 2)
        self.video.delete("all")
        self.video.create_image(*self.offset, image=self._photo, anchor=tk.NW, tags=("frame",))

    def _panel_plan(self, height: int) -> tuple[int, int]:
        """How many faces get all their bars and how many more get one line, in `height` pixels."""
        n = len(self.faces)
        room = height - 8
        full = [FULL_ROW + BAR_ROW * len(f.scores) + 4 for f in self.faces]
        # As many faces with their bars as leave a line for each of the rest; then lines while they fit.
        k = 0
        while k < n and sum(full[:k + 1]) + TITLE_ROW * (n - k - 1) <= room:
            k += 1
        if k == n or sum(full[:k]) + TITLE_ROW * (n - k) <= room:
            return k, n - k
        lines = max(0, (room - sum(full[:k])) // TITLE_ROW - 1)  # one line kept for "+N more"
        return k, lines

    def _draw_panel(self) -> None:
        """Each face's number and caption with a bar per emotion, as many as the height allows, then a line each."""
        p = self.panel
        p.delete("all")
        y = 8
        if not self.faces:
            p.create_text(10, y, anchor=tk.NW, fill="#c0c0c0", text="no faces", tags=("empty",))
            return
        full, lines = self._panel_plan(max(1, p.winfo_height()))
        for i, face in enumerate(self.faces[:full + lines]):
            color = hex_color(color_of(face.emotion))
            p.create_text(10, y, anchor=tk.NW, fill=color, text=f"{self.face_labels[i]}  {face.caption}",
                          tags=(f"title{i}",))
            if i >= full:  # one line: the caption, and a bar of its top score
                w = int((PANEL_W - 200) * face.confidence)
                p.create_rectangle(PANEL_W - 70, y + 3, PANEL_W - 70 + max(1, w), y + 14, fill=color, outline="",
                                   tags=(f"line{i}",))
                y += TITLE_ROW
                continue
            y += FULL_ROW
            for name, prob in face.scores.items():
                p.create_text(10, y + 7, anchor=tk.W, fill="#e0e0e0", text=name)
                w = int((PANEL_W - 90) * prob)
                p.create_rectangle(75, y + 1, 75 + max(1, w), y + 14, fill=hex_color(color_of(name)), outline="",
                                   tags=(f"bar{i}", f"bar{i}_{name}"))
                y += BAR_ROW
            y += 4
        if full + lines < len(self.faces):
            p.create_text(10, y, anchor=tk.NW, fill="#c0c0c0", text=f"+{len(self.faces) - full - lines} more",
                          tags=("more",))

    # Polling -------------------------------------------------------------------------------

    def _poll(self) -> None:
        try:
            pending, self._pending = self._pending, None
            if pending is not None:
                path, frame, faces, error = pending
                if error or frame is None:
                    self.status.configure(text=error)
                else:
                    self.show(frame, faces, status=f"{shown(path)}: {len(faces)} face(s)")
            if self.camera_on:
                self._poll_camera()
        finally:
            self.root.after(POLL_MS, self._poll)

    def _with_notice(self, text: str) -> str:
        notice, until = self._notice
        return f"{notice}  |  {text}" if time.monotonic() < until else text

    def _poll_camera(self) -> None:
        """Show a new live frame with its figures; while none comes, the capture's state as it is now."""
        state = str(self.host.camera_state())
        live = self.host.latest()
        if live is not None and live.result.frame.seq != self._seen_seq:
            result = live.result
            self._seen_seq = result.frame.seq
            labels = {i: f"#{t}" for i, t in enumerate(result.track_ids)}
            rec = "  REC" if self.recorder is not None else ""
            figures = f"{live.fps:.1f} fps  dropped {live.dropped}  camera {state}  faces {len(result.faces)}{rec}"
            self.show(result.frame.image, result.faces, labels, self._with_notice(figures))
        elif state != "ok":
            said = f"camera {source_name(self.cfg.camera.source)}: {CAMERA_STATES.get(state, state)}"
            self.status.configure(text=self._with_notice(said))

    # Actions -------------------------------------------------------------------------------

    def open_dialog(self) -> None:
        """Ask for an image file and analyze it."""
        # Images first: the filter the dialog starts with.
        path = filedialog.askopenfilename(parent=self.root, title="Open an image",
                                          initialdir=self._open_dir or os.getcwd(),
                                          filetypes=[("Images", IMAGE_PATTERNS), ("All files", "*")])
        if path:
            self._open_dir = os.path.dirname(path)
            self.open_image(path)

    def open_image(self, path: str | Path) -> threading.Thread:
        """Analyze an image on a worker thread; the poll loop shows it when done."""
        def work() -> None:
            try:
                frame = read_image(path, self.cfg.images.max_pixels)
                self._pending = (str(path), frame, self.host.analyze(frame), "")
            except EdgeFerError as e:
                self._pending = (str(path), None, [], str(e))
            except MemoryError:
                self._pending = (str(path), None, [], f"{shown(path)}: not enough memory to analyze it")
        if self.camera_on:
            self.toggle_camera()
        t = threading.Thread(target=work, name="open-image", daemon=True)
        t.start()
        return t

    def toggle_camera(self) -> None:
        """Start or stop the live pipeline."""
        if self.camera_on:
            self.host.stop_camera()
            self.camera_on = False
            self.status.configure(text="camera stopped")
        else:
            self.host.start_camera()
            self.camera_on = True
            self._seen_seq = -1
            self._poll_camera()

    def camera_ended(self, text: str) -> None:
        """The pipeline stopped by itself (its video ended, or it failed): say so and offer Camera again."""
        self.camera_on = False
        self._say(text, logging.WARNING)

    def _stamp(self) -> str:
        return dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]

    def _say(self, text: str, level: int = logging.INFO) -> None:
        """Put a message in the status bar, where it stays a few seconds over the live figures."""
        self._notice = (text, time.monotonic() + NOTICE_SECONDS)
        self.status.configure(text=text)
        log.log(level, "%s", text)

    def snapshot(self) -> Path | None:
        """Save the shown frame as PNG and its results as JSON beside it; a failed write is said, not saved."""
        if self.shown is None:
            self.status.configure(text="nothing to save yet")
            return None
        png = self.save_dir / f"edge-fer-{self._stamp()}.png"
        doc = {"image": png.name, "width": self.shown.shape[1], "height": self.shown.shape[0],
               "faces": [f.to_dict() for f in self.faces]}
        try:
            save_image(png, self.shown)
            try:
                write_file(png.with_suffix(".json"), json.dumps(doc, indent=1).encode())
            except WriteError:
                png.unlink(missing_ok=True)  # a picture without its results is not the snapshot asked for
                raise
        except WriteError as e:
            self._say(f"snapshot not saved: {e}", logging.WARNING)
            return None
        self._say(f"snapshot saved to {shown(png)}")
        return png

    def toggle_record(self) -> Path | None:
        """Start or stop recording the annotated stream to an .avi file; a failed write is said, not saved."""
        if self.recorder is not None:
            return self._finish_recording()
        if self.shown is None:
            self.status.configure(text="nothing to record yet")
            return None
        path = self.save_dir / f"edge-fer-{self._stamp()}.avi"
        try:
            write_file(path, b"")  # OpenCV's writer fails without a reason; this says why (read-only, ...)
        except WriteError as e:
            self._say(f"cannot record: {e}", logging.WARNING)
            return None
        h, w = self.shown.shape[:2]
        recorder = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), self.cfg.camera.fps, (w, h))
        if not recorder.isOpened():
            path.unlink(missing_ok=True)
            self._say(f"cannot record: {shown(path)}: OpenCV cannot write MJPG video here", logging.WARNING)
            return None
        self.recorder, self.record_path, self._record_size, self._recorded = recorder, path, (w, h), 0
        self._record_frame()
        return path

    def _finish_recording(self, why: str = "") -> Path | None:
        """Close the file and check that it holds every frame written; say what went wrong otherwise."""
        assert self.recorder is not None and self.record_path is not None
        self.recorder.release()
        self.recorder = None
        path, written = self.record_path, self._recorded
        check = cv2.VideoCapture(str(path))
        stored = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else 0
        check.release()
        # OpenCV's writer buffers and drops a failed write silently, so a full disk after the last write is
        # taken as a recording cut short.
        full = _disk_full(path.parent)
        if stored < written or why or full:
            reason = why or ("the disk is full" if full else "the file could not be written")
            self._say(f"recording failed: {shown(path)} is incomplete, {written} frames were recorded ({reason})",
                      logging.WARNING)
            return None
        self._say(f"recording saved to {shown(path)} ({written} frames)")
        return path

    def _record_frame(self) -> None:
        assert self.recorder is not None and self.shown is not None
        w, h = self._record_size
        # A frame of another size (a new source) is fitted to the file's size.
        frame = self.shown if self.shown.shape[:2] == (h, w) else cv2.resize(self.shown, (w, h))
        self.recorder.write(frame)
        self._recorded += 1
        if self._recorded % DISK_CHECK_FRAMES == 0 and _disk_full(self.save_dir):
            self._finish_recording("the disk is full")

    def quit(self) -> None:
        """Stop recording and the pipeline in order, then close the window."""
        if self.recorder is not None:
            self.toggle_record()
        if self.camera_on:
            self.host.stop_camera()
            self.camera_on = False
        self.host.window_closed()
        self.root.destroy()
