"""The Tk window on a real X server (Xvfb): drawing, buttons, keys, files, and the headless cases."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli.main import main
from edge_fer.config import load
from edge_fer.errors import EXIT_RUNTIME, EXIT_USAGE
from edge_fer.vision.annotate import MIN_SCALE, color_of, label_size, place_labels
from tests.conftest import ASTRONAUT, ROOT

NO_CAMERA = "/dev/video63"  # a camera that is not plugged in

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")


@pytest.fixture(scope="module")
def xvfb():
    """A virtual X display for this module's windows."""
    # Xvfb picks a free display itself and writes its number to the pipe: sockets and lock files left in
    # /tmp by X servers that were killed can never make it choose a taken one. -noreset, and the pipe kept
    # open: a server that resets when its last client leaves writes the number again, and a closed pipe kills it.
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-noreset", "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(write_fd,))
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], 10)
    number = os.read(read_fd, 16).decode().strip() if ready else ""
    if not number.isdigit():
        proc.kill()
        os.close(read_fd)
        pytest.skip("Xvfb did not start")
    display = f":{number}"
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    yield display
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
    proc.terminate()  # not kill: Xvfb removes its socket and lock file on the way out
    proc.wait(10)
    os.close(read_fd)


def pump(root, until, timeout: float) -> bool:
    """Run the Tk loop until `until()` is true or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        root.update()
        if until():
            return True
        time.sleep(0.01)
    return until()


def grab(display: str, widget) -> np.ndarray:
    """A screenshot of a widget from the X server, as BGR."""
    from PIL import ImageGrab

    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    img = ImageGrab.grab(bbox=(x, y, x + widget.winfo_width(), y + widget.winfo_height()), xdisplay=display)
    return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)


def near(pixels: np.ndarray, bgr: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.all(np.abs(pixels.astype(int) - np.array(bgr)) <= tol, axis=-1)


def left_edge(shot: np.ndarray, overlay, face) -> np.ndarray:
    """The screenshot's pixels around the middle of the face box's left edge."""
    x, y, _w, h = face.box
    ox, oy = overlay.offset
    s = overlay.scale
    left, middle = int(ox + x * s), int(oy + (y + h / 2) * s)
    return shot[middle - 5: middle + 5, left - 2: left + 3]


@pytest.fixture
def window(xvfb, tmp_path: Path, face_video: Path):
    yield from open_window(tmp_path, face_video)


@pytest.fixture
def unsure_window(xvfb, tmp_path: Path, face_video: Path):
    # No calibrated score reaches 0.999: every face is shown as not judged.
    yield from open_window(tmp_path, face_video, "unsure.min_confidence=0.999")


@pytest.fixture
def photo_window(xvfb, tmp_path: Path):
    """The window for photos: its camera is one that is not there."""
    yield from open_window(tmp_path, Path(NO_CAMERA))


@pytest.fixture(scope="module")
def six_faces(tmp_path_factory) -> Path:
    """The astronaut six times over, 3 by 2: six real faces."""
    tile = cv2.imread(str(ASTRONAUT))
    path = tmp_path_factory.mktemp("six") / "six.png"
    cv2.imwrite(str(path), np.vstack([np.hstack([tile] * 3)] * 2))
    return path


def open_window(tmp_path: Path, face_video: Path, *overrides: str):
    """The window on the face video, with the camera not yet started; closed after the test."""
    import tkinter as tk

    from edge_fer.live.service import Service, WindowHost
    from edge_fer.ui.overlay import Overlay
    from edge_fer.vision.analyze import Analyzer

    cfg = load(None, [f"camera.source={face_video}", "camera.loop=true", "mqtt.enabled=false",
                      f"display.save_dir={tmp_path / 'saved'}", *overrides])
    service = Service(cfg, None, [])
    pipeline = service.pipeline
    root = tk.Tk()
    overlay = Overlay(root, cfg, WindowHost(service, Analyzer.from_config(cfg, photos=True)))
    pump(root, lambda: root.winfo_viewable(), 5)
    yield overlay, pipeline
    pipeline.stop()
    with contextlib.suppress(tk.TclError):  # a test that pressed Quit destroyed it already
        root.destroy()


def test_live_frames_draw_boxes_and_score_bars_where_the_results_say(window, xvfb) -> None:
    overlay, pipeline = window
    overlay.toggle_camera()
    assert pump(overlay.root, lambda: len(overlay.faces) == 1, 30), "no face shown from the video"
    pump(overlay.root, lambda: False, 0.3)
    face = overlay.faces[0]
    shot = grab(xvfb, overlay.video)
    ox, oy = overlay.offset
    s = overlay.scale
    # The box's left edge, in screen pixels, is drawn in the emotion's colour.
    assert near(left_edge(shot, overlay, face), color_of(face.emotion)).any(), "no box edge where the face is"
    # Away from the face the frame is the plain gray background.
    assert near(shot[int(oy + 20 * s), int(ox + 20 * s)][None], (128, 128, 128), 10).all()
    # The panel's bar for the top emotion is drawn at its coordinates, as long as its probability says.
    panel = grab(xvfb, overlay.panel)
    x0, y0, x1, y1 = (int(v) for v in overlay.panel.coords(f"bar0_{face.emotion}"))
    assert near(panel[y0 + 3: y1 - 3, x0 + 1: x1 - 1], color_of(face.emotion)).mean() > 0.8
    assert abs((x1 - x0) - (260 - 90) * face.confidence) <= 2
    assert "fps" in overlay.status.cget("text")


def test_a_face_not_judged_is_shown_unsure_with_its_reason_and_its_scores(unsure_window, xvfb) -> None:
    overlay, _pipeline = unsure_window
    overlay.toggle_camera()
    assert pump(overlay.root, lambda: len(overlay.faces) == 1, 30), "no face shown from the video"
    face = overlay.faces[0]
    assert (face.emotion, face.unsure) == ("unsure", "uncertain")
    assert overlay.panel.itemcget("title0", "text").endswith("unsure (uncertain)")
    # Its box is drawn in the gray of faces not judged, and the bars still show every score.
    edge = left_edge(grab(xvfb, overlay.video), overlay, face)
    assert near(edge, color_of("unsure"), 8).any()  # the frame around it is 128 gray
    assert len(overlay.panel.find_withtag("bar0")) == 7


def test_snapshot_record_and_keys_write_files(window, xvfb, tmp_path: Path) -> None:
    overlay, pipeline = window
    overlay.toggle_camera()
    assert pump(overlay.root, lambda: overlay.shown is not None and overlay.faces, 30)
    png = overlay.snapshot()
    assert png is not None and png.exists()
    doc = json.loads(png.with_suffix(".json").read_text())
    assert [f["emotion"] for f in doc["faces"]] == [f.emotion for f in overlay.faces]
    assert cv2.imread(str(png)).shape == overlay.shown.shape

    path = overlay.toggle_record()
    assert pump(overlay.root, lambda: overlay._recorded >= 10, 20)  # frames written, whatever was dropped
    assert overlay.toggle_record() == path
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n >= 10

    # The keyboard shortcut, typed by xdotool into the real window.
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")
    before = set((tmp_path / "saved").glob("*.png"))
    wid = overlay.root.winfo_id()
    overlay.root.focus_force()
    pump(overlay.root, lambda: False, 0.2)
    subprocess.run(["xdotool", "key", "--window", str(overlay.root.wm_frame()), "s"], check=True,
                   env={**os.environ, "DISPLAY": xvfb}, timeout=10)
    assert pump(overlay.root, lambda: len(set((tmp_path / "saved").glob("*.png")) - before) == 1, 5), \
        f"the s key did not take a snapshot (window {wid})"


def test_open_image_and_quit(window) -> None:
    overlay, pipeline = window
    overlay.toggle_camera()
    pump(overlay.root, lambda: overlay.faces, 30)
    overlay.open_image(ASTRONAUT).join(10)
    assert not overlay.camera_on  # opening a photo stops the camera
    assert pump(overlay.root, lambda: str(ASTRONAUT) in overlay.status.cget("text"), 5)
    assert len(overlay.faces) == 1 and overlay.shown.shape == (512, 512, 3)
    overlay.open_image(Path("/nonexistent.png")).join(10)
    assert pump(overlay.root, lambda: "no such file" in overlay.status.cget("text"), 5)
    overlay.toggle_camera()
    pump(overlay.root, lambda: pipeline.latest is not None, 20)
    overlay.quit()
    assert pipeline._thread is None  # the pipeline was stopped and joined


def test_window_without_a_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    for flag in ("--gui", "--display"):
        err = io.StringIO()
        assert main([flag], out=io.StringIO(), err=err) == EXIT_USAGE
        assert err.getvalue().startswith("edge-fer: the window needs a display")


def test_resizing_the_window_scales_the_video(window) -> None:
    overlay, _ = window
    overlay.open_image(ASTRONAUT).join(10)
    assert pump(overlay.root, lambda: overlay.shown is not None, 5)
    sizes = []
    for geometry in ("700x500", "1200x800"):
        overlay.root.geometry(geometry)
        pump(overlay.root, lambda: False, 0.5)
        cw, ch = overlay.video.winfo_width(), overlay.video.winfo_height()
        # The 512x512 photo fills the shorter side of the video area and stays square.
        assert abs(overlay.scale - min(cw, ch) / 512) < 1e-6
        x0, y0, x1, y1 = overlay.video.bbox("frame")
        assert abs((x1 - x0) - (y1 - y0)) <= 1 and max(x1 - x0, y1 - y0) <= max(cw, ch)
        sizes.append(x1 - x0)
    assert sizes[1] > sizes[0]


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    """A small tmpfs mounted at `where` (a full or read-only disk that root cannot write past either)."""
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_snapshot_and_recording_on_a_read_only_or_full_disk_say_what_failed(window, tmp_path: Path) -> None:
    overlay, _ = window
    errors = []
    overlay.root.report_callback_exception = lambda *exc: errors.append(exc)
    overlay.toggle_camera()
    assert pump(overlay.root, lambda: overlay.shown is not None, 30)
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        overlay.save_dir = ro / "shots"
        subprocess.run(["xdotool", "key", "--window", str(overlay.root.wm_frame()), "s"], check=False,
                       env={**os.environ}, timeout=10) if shutil.which("xdotool") else overlay.snapshot()
        assert pump(overlay.root, lambda: "not saved" in overlay.status.cget("text"), 5)
        assert "Read-only file system" in overlay.status.cget("text")
        assert overlay.snapshot() is None and overlay.toggle_record() is None
        assert overlay.status.cget("text").startswith("cannot record: ") and overlay.recorder is None
    with tmpfs(tmp_path / "full", "size=64k") as full:
        (full / "filler").write_bytes(b"\0" * 60_000)
        overlay.save_dir = full
        assert overlay.snapshot() is None
        assert "No space left on device" in overlay.status.cget("text")
        assert [p.name for p in full.iterdir()] == ["filler"]  # no partial picture left behind
        (full / "filler").unlink()
        path = overlay.toggle_record()  # room for the file, not for the frames
        assert path is not None
        seen = overlay._seen_seq
        assert pump(overlay.root, lambda: overlay._seen_seq >= seen + 20 or overlay.recorder is None, 20)
        if overlay.recorder is not None:
            assert overlay.toggle_record() is None
        text = overlay.status.cget("text")
        assert text.startswith("recording failed: ") and "the disk is full" in text, text
    assert errors == []


def _window_process(display: str, config: Path, *extra: str, errlog: Path) -> subprocess.Popen:
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)}
    with open(errlog, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "edge_fer", "--display", "--config", str(config), *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)


def _wait_for_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return True
        time.sleep(0.05)
    return text in path.read_text()


def test_display_mode_reloads_on_sighup_and_stops_on_sigterm(xvfb, tmp_path: Path, face_video: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"camera:\n  source: {json.dumps(str(face_video))}\n  loop: true\nmqtt:\n  enabled: false\n")
    errlog = tmp_path / "stderr.txt"
    proc = _window_process(xvfb, config, errlog=errlog)
    try:
        assert _wait_for_text(errlog, "first frame processed", 60), errlog.read_text()
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_text(errlog, "configuration reloaded", 20), errlog.read_text()
        assert _wait_for_text(errlog, "running: source", 20) and proc.poll() is None
        config.write_text("camera:\n  fsp: 3\n")
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_text(errlog, "reload refused", 20) and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in errlog.read_text()


def unplayable_video(folder: Path) -> Path:
    """A file named like a video that no decoder can open."""
    bogus = folder / "clip.avi"
    bogus.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    return bogus


def test_display_mode_follows_the_headless_errors(xvfb, tmp_path: Path) -> None:
    err = io.StringIO()
    code = main(["--display", "--source", "picamera2", "--set", "mqtt.enabled=false"], out=io.StringIO(), err=err)
    assert code == EXIT_USAGE
    assert err.getvalue() == ("edge-fer: camera.source is picamera2 but picamera2 is not installed: "
                              "sudo apt install python3-picamera2\n")
    bogus = unplayable_video(tmp_path)
    err = io.StringIO()
    code = main(["--display", "--source", str(bogus), "--set", "mqtt.enabled=false"], out=io.StringIO(), err=err)
    assert code == EXIT_RUNTIME
    assert err.getvalue() == f"edge-fer: {bogus}: cannot be opened as a video (tried 3 times)\n"


def test_gui_camera_that_fails_says_so_and_the_window_stays(xvfb, tmp_path: Path) -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")
    bogus = unplayable_video(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"camera:\n  source: {json.dumps(str(bogus))}\nmqtt:\n  enabled: false\n")
    errlog = tmp_path / "stderr.txt"
    env = {**os.environ, "DISPLAY": xvfb, "PYTHONPATH": str(ROOT)}
    with open(errlog, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "--gui", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        # The Camera key, typed into the real window once it is mapped.
        subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", "^edge-fer$", "windowfocus",
                        "--sync", "key", "c"], env=env, check=True, timeout=60, capture_output=True)
        assert _wait_for_text(errlog, "camera stopped: ", 20), errlog.read_text()
        assert "cannot be opened as a video (tried 3 times)" in errlog.read_text()
        assert proc.poll() is None  # --gui keeps its window: photos can still be opened
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in errlog.read_text()


def test_a_camera_that_is_not_there_shows_its_state_at_once(photo_window) -> None:
    overlay, pipeline = photo_window
    overlay.toggle_camera()
    assert overlay.status.cget("text") in (f"camera {NO_CAMERA}: starting...",
                                           f"camera {NO_CAMERA}: down, retrying (the log says why)")
    # The capture's own state, as soon as its first open fails: not "starting" until something gives up.
    assert pump(overlay.root, lambda: overlay.status.cget("text") == f"camera {NO_CAMERA}: down, retrying "
                "(the log says why)", 20), overlay.status.cget("text")
    assert pipeline.camera_state == "down"
    overlay.toggle_camera()
    assert overlay.status.cget("text") == "camera stopped"


def open_photo(overlay, path: Path, faces: int) -> None:
    overlay.open_image(path).join(60)
    assert pump(overlay.root, lambda: len(overlay.faces) == faces and str(path) in overlay.status.cget("text"), 10), \
        overlay.status.cget("text")


def test_the_score_panel_fits_as_many_faces_as_the_window_allows(photo_window, six_faces: Path) -> None:
    overlay, _ = photo_window
    open_photo(overlay, six_faces, 6)
    panel = overlay.panel

    def with_bars() -> list[int]:
        return [i for i in range(6) if panel.find_withtag(f"bar{i}")]

    # 1000x600: the first faces with all their bars, the others one line each; no face cut off.
    assert [i for i in range(6) if panel.find_withtag(f"title{i}")] == list(range(6))
    assert not panel.find_withtag("more")
    before = len(with_bars())
    assert 1 <= before < 6 and with_bars() == list(range(before))
    assert all(panel.bbox(f"title{i}")[3] <= panel.winfo_height() for i in range(6))
    # A taller window: more faces get their bars.
    overlay.root.geometry("1200x790")
    assert pump(overlay.root, lambda: len(with_bars()) > before, 5), with_bars()
    assert all(panel.bbox(f"title{i}")[3] <= panel.winfo_height() for i in range(6))


def test_boxes_and_panel_rows_carry_the_same_number(photo_window, six_faces: Path, xvfb) -> None:
    overlay, _ = photo_window
    open_photo(overlay, six_faces, 6)
    pump(overlay.root, lambda: overlay.video.find_withtag("frame"), 2)
    s, (ox, oy) = overlay.scale, overlay.offset
    shown = [dataclasses.replace(f, box=tuple(round(v * s) for v in f.box)) for f in overlay.faces]
    height, width = (round(v * s) for v in overlay.frame.shape[:2])
    names = [str(i + 1) for i in range(6)]
    labels = place_labels(shown, names, width, height)
    shot = grab(xvfb, overlay.video)
    for i, (face, label) in enumerate(zip(overlay.faces, labels)):
        assert overlay.panel.itemcget(f"title{i}", "text").startswith(f"{i + 1}  ")
        assert label.text.split()[0] == str(i + 1)
        # On screen, where the label goes: a background filled with the face's colour.
        x, y, w, h = label.rect
        area = shot[oy + y + 2: oy + y + h - 2, ox + x + 2: ox + x + w - 2]
        assert near(area, color_of(face.emotion), 12).mean() > 0.4, i


def test_a_small_face_keeps_a_legible_label_on_screen(photo_window, tmp_path: Path, xvfb) -> None:
    overlay, _ = photo_window
    frame = np.full((1080, 1920, 3), 128, np.uint8)
    frame[400:600, 800:1000] = cv2.resize(cv2.imread(str(ASTRONAUT)), (200, 200), interpolation=cv2.INTER_AREA)
    path = tmp_path / "far.png"
    cv2.imwrite(str(path), frame)
    open_photo(overlay, path, 1)
    pump(overlay.root, lambda: overlay.video.find_withtag("frame"), 2)
    face, s, (ox, oy) = overlay.faces[0], overlay.scale, overlay.offset
    assert face.box[2] * s < 20  # a face some 13 pixels wide on screen
    shot = grab(xvfb, overlay.video)
    left, top = round(ox + face.box[0] * s), round(oy + face.box[1] * s)
    # Up from the box's top edge, just inside its left side: the label's filled background, as tall as the
    # smallest legible label (the text of an unfilled caption is a few pixels of strokes here).
    column = near(shot[:top, left + 1][::-1][:, None], color_of(face.emotion), 40)[:, 0]
    run = int(np.argmin(column)) if not column.all() else len(column)
    assert run >= label_size("Ag", MIN_SCALE)[1] - 2, run


def test_the_open_dialog_hides_dot_folders_and_starts_on_images(photo_window, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    overlay, _ = photo_window
    folder = tmp_path / "photos"
    for name in (".git", ".pytest_cache", "trip"):
        (folder / name).mkdir(parents=True)
    for name in ("a.jpg", "IMG_0001.JPG", "b.png", "notes.txt", ".hidden.png"):
        (folder / name).write_bytes(b"")
    monkeypatch.chdir(folder)
    root, seen = overlay.root, {}
    dialog = ".__tk_filedialog"

    def look(tries: int = 0) -> None:
        """Read what the real dialog lists once it has, then cancel it."""
        icons = f"{dialog}.contents.icons"
        if root.tk.call("winfo", "exists", dialog) and int(root.tk.call(icons, "index", "end")) > 0:
            seen["items"] = [root.tk.call(icons, "get", i) for i in range(int(root.tk.call(icons, "index", "end")))]
            seen["filter"] = root.tk.call(f"{dialog}.contents.f2.menu", "cget", "-text")
            toggle = f"{dialog}.contents.f2.hidden"
            seen["toggle"] = (str(root.tk.call("winfo", "manager", toggle)),
                              str(root.tk.call(toggle, "cget", "-state")))
        if "items" in seen or tries > 400:
            if root.tk.call("winfo", "exists", dialog):
                root.tk.call(f"{dialog}.contents.f2.cancel", "invoke")
            return
        root.after(25, look, tries + 1)

    root.after(25, look)
    overlay.open_dialog()  # returns once the dialog is cancelled
    assert sorted(seen["items"], key=str.lower) == ["a.jpg", "b.png", "IMG_0001.JPG", "trip"]
    assert str(seen["filter"]).startswith("Images (*.jpg,*.JPG,*.png,*.PNG")
    assert seen["toggle"] == ("grid", "normal")  # dot files are one click away
