"""The Tk window: live frames with faces and scores, open a photo, snapshots and recordings."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import tkinter as tk
from pathlib import Path
from tkinter import filedialog
from typing import Protocol

import cv2
import numpy as np

from edge_fer.vision.annotate import annotate, color_of
from edge_fer.config import Config
from edge_fer.errors import EdgeFerError, WriteError, shown
from edge_fer.vision.images import read_image, save_image, write_file
from edge_fer.types import Face, Live

log = logging.getLogger(__name__)

POLL_MS = 30
PANEL_W = 260
NOTICE_SECONDS = 8.0  # how long a saved/failed message stays in the status bar over the live figures
DISK_CHECK_FRAMES = 15  # a recording checks the free space this often (OpenCV's writer fails silently)


def _disk_full(folder: Path) -> bool:
    """True when the file system holding `folder` has no block left for us."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def hex_color(bgr: tuple[int, int, int]) -> str:
    """A Tk colour from a BGR tuple."""
    return "#%02x%02x%02x" % (bgr[2], bgr[1], bgr[0])


class Host(Protocol):
    """What the window needs of the service around it."""

    def start_camera(self) -> None:
        """Start the live pipeline."""

    def stop_camera(self) -> None:
        """Stop the live pipeline and wait for it."""

    def latest(self) -> Live | None:
        """The newest result of the live pipeline, with its figures."""

    def analyze(self, image: np.ndarray) -> list[Face]:
        """The faces of one opened photo (called on a worker thread)."""

    def window_closed(self) -> None:
        """The user closed the window: the service stops."""


class Overlay:
    """The window; it polls the newest pipeline result with after() and never waits on inference."""

    def __init__(self, root: tk.Tk, cfg: Config, host: Host) -> None:
        self.root, self.cfg, self.host = root, cfg, host
        self.save_dir = Path(cfg.display.save_dir).expanduser()
        self.shown: np.ndarray | None = None  # the annotated frame on screen, full size
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
        self._build()
        self.root.after(POLL_MS, self._poll)

    def _build(self) -> None:
        root = self.root
        root.title("edge-fer")
        root.geometry("1000x600")
        root.minsize(480, 320)
        bar = tk.Frame(root)
        bar.pack(side=tk.TOP, fill=tk.X)
        self.buttons = {}
        for key, text, cmd in (("o", "Open image (o)", self.open_dialog), ("c", "Camera (c)", self.toggle_camera),
                               ("s", "Snapshot (s)", self.snapshot), ("r", "Record (r)", self.toggle_record),
                               ("q", "Quit (q)", self.quit)):
            b = tk.Button(bar, text=text, command=cmd)
            b.pack(side=tk.LEFT, padx=2, pady=2)
            self.buttons[key] = b
            root.bind(f"<Key-{key}>", lambda _e, c=cmd: c())
        self.status = tk.Label(root, anchor=tk.W, text="no picture yet: open an image or start the camera")
        self.status.pack(side=tk.BOTTOM, fill=tk.X)
        body = tk.Frame(root)
        body.pack(fill=tk.BOTH, expand=True)
        self.panel = tk.Canvas(body, width=PANEL_W, bg="#202020", highlightthickness=0)
        self.panel.pack(side=tk.RIGHT, fill=tk.Y)
        self.video = tk.Canvas(body, bg="black", highlightthickness=0)
        self.video.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        self.video.bind("<Configure>", lambda _e: self._redraw())
        root.protocol("WM_DELETE_WINDOW", self.quit)

    # Drawing -------------------------------------------------------------------------------

    def show(self, frame: np.ndarray, faces: list[Face], labels: dict[int, str] | None = None, status: str = "") -> None:
        """Put a frame and its faces on screen."""
        # The panel beside the video carries the score bars, so the frame keeps only boxes and captions.
        self.shown = annotate(frame, faces, labels, bars=False)
        self.faces = faces
        self.face_labels = labels or {}
        if self.recorder is not None:
            self._record_frame()
        self._redraw()
        self._draw_panel()
        if status:
            self.status.configure(text=status)

    def _redraw(self) -> None:
        if self.shown is None:
            return
        cw, ch = max(1, self.video.winfo_width()), max(1, self.video.winfo_height())
        h, w = self.shown.shape[:2]
        self.scale = min(cw / w, ch / h)
        size = (max(1, int(w * self.scale)), max(1, int(h * self.scale)))
        img = cv2.resize(self.shown, size, interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR)
        ok, ppm = cv2.imencode(".ppm", img)
        self._photo = tk.PhotoImage(data=ppm.tobytes(), format="PPM")
        self.offset = ((cw - size[0]) // 2, (ch - size[1]) // 2)
        self.video.delete("all")
        self.video.create_image(*self.offset, image=self._photo, anchor=tk.NW, tags=("frame",))

    def _draw_panel(self) -> None:
        """A bar chart of every emotion for each face (largest first), as many as fit."""
        p = self.panel
        p.delete("all")
        height = max(1, p.winfo_height())
        y = 8
        if not self.faces:
            p.create_text(10, y, anchor=tk.NW, fill="#c0c0c0", text="no faces", tags=("empty",))
            return
        for i, face in enumerate(self.faces):
            block = 24 + 18 * len(face.scores)
            if y + block > height and i > 0:
                p.create_text(10, y, anchor=tk.NW, fill="#c0c0c0", text=f"+{len(self.faces) - i} more")
                break
            p.create_text(10, y, anchor=tk.NW, fill=hex_color(color_of(face.emotion)),
                          text=f"{self.face_labels.get(i, f'face {i + 1}')}: {face.caption}",
                          tags=(f"title{i}",))
            y += 20
            for name, prob in face.scores.items():
                p.create_text(10, y + 7, anchor=tk.W, fill="#e0e0e0", text=name)
                w = int((PANEL_W - 90) * prob)
                p.create_rectangle(75, y + 1, 75 + max(1, w), y + 14, fill=hex_color(color_of(name)), outline="",
                                   tags=(f"bar{i}", f"bar{i}_{name}"))
                y += 18
            y += 4

    # Polling -------------------------------------------------------------------------------

    def _poll(self) -> None:
        try:
            pending, self._pending = self._pending, None
            if pending is not None:
                path, frame, faces, error = pending
                if error:
                    self.status.configure(text=error)
                else:
                    self.show(frame, faces, status=f"{shown(path)}: {len(faces)} face(s)")
            live = self.host.latest() if self.camera_on else None
            if live is not None and live.result.frame.seq != self._seen_seq:
                result = live.result
                self._seen_seq = result.frame.seq
                labels = {i: f"#{t}" for i, t in enumerate(result.track_ids)}
                rec = "  REC" if self.recorder is not None else ""
                figures = (f"{live.fps:.1f} fps  dropped {live.dropped}  camera {live.camera}  "
                           f"faces {len(result.faces)}{rec}")
                notice, until = self._notice
                self.show(result.frame.image, result.faces, labels,
                          f"{notice}  |  {figures}" if time.monotonic() < until else figures)
        finally:
            self.root.after(POLL_MS, self._poll)

    # Actions -------------------------------------------------------------------------------

    def open_dialog(self) -> None:
        """Ask for an image file and analyze it."""
        path = filedialog.askopenfilename(parent=self.root, title="Open an image",
                                          filetypes=[("Images", "*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff"),
                                                     ("All files", "*")])
        if path:
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
            self.status.configure(text="camera starting...")

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
        recorder = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), self.cfg.camera.fps, (w, h))
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
