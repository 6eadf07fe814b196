"""The edge-fer command run in-process: output formats, exit codes and error lines."""

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

from edge_fer.cli.main import main
from edge_fer.errors import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from tests.conftest import ASTRONAUT, NO_FACE_IMAGES, ROOT, paste_faces

MODEL = ROOT / "models" / "edge_fer_int8.tflite"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_json_for_the_example_photo() -> None:
    code, out, err = run("--image", str(ASTRONAUT), "--json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert (doc["image"], doc["width"], doc["height"]) == (str(ASTRONAUT), 512, 512)
    assert len(doc["faces"]) == 1
    face = doc["faces"][0]
    x, y, w, h = face["box"]
    # The astronaut's face sits around (175-275, 60-170) in the picture.
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180 and 60 < w < 160
    assert set(face["scores"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert abs(sum(face["scores"].values()) - 1) < 0.02
    assert face["emotion"] == max(face["scores"], key=face["scores"].get)
    assert face["confidence"] == face["scores"][face["emotion"]]


def test_table_is_the_default_and_names_every_emotion() -> None:
    code, out, _ = run("--image", str(ASTRONAUT))
    assert code == EXIT_OK
    assert out.startswith(f"{ASTRONAUT} (512x512): 1 face\n")
    for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        assert name in out


def test_no_face_is_a_normal_result() -> None:
    code, out, err = run("--image", *map(str, NO_FACE_IMAGES), "--json")
    assert code == EXIT_OK and err == ""
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["faces"] for d in docs] == [[], [], []]


def test_faces_are_ordered_largest_first(tmp_path: Path, clear_faces) -> None:
    happy = clear_faces["happy"][:2]
    frame, _ = paste_faces([happy[0]], size=120, frame_wh=(800, 480))
    big = cv2.resize(cv2.cvtColor(happy[1], cv2.COLOR_GRAY2BGR), (220, 220), interpolation=cv2.INTER_CUBIC)
    frame[100:320, 520:740] = big
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), frame)
    code, out, _ = run("--image", str(path), "--json")
    faces = json.loads(out)["faces"]
    assert code == EXIT_OK and len(faces) >= 1
    areas = [f["box"][2] * f["box"][3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert faces[0]["box"][0] > 450  # the large face on the right comes first


def test_annotate_writes_a_marked_copy(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    code, _, _ = run("--image", str(ASTRONAUT), "--annotate", str(target))
    assert code == EXIT_OK
    drawn = cv2.imread(str(target))
    original = cv2.imread(str(ASTRONAUT))
    assert drawn.shape == original.shape
    assert np.mean(np.any(drawn != original, axis=2)) > 0.01  # box, label and bars drawn
    # Several images go into a folder, one file each.
    folder = tmp_path / "many"
    code, _, _ = run("--image", str(ASTRONAUT), str(NO_FACE_IMAGES[0]), "--annotate", str(folder))
    assert code == EXIT_OK
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.annotated.png", "coffee.annotated.png"]


def test_bad_images_are_reported_and_good_ones_still_answered(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a jpeg")
    code, out, err = run("--image", str(tmp_path / "missing.png"), str(tmp_path / "empty.jpg"),
                         str(tmp_path / "text.jpg"), str(ASTRONAUT), "--json")
    assert code == EXIT_INPUT
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(ASTRONAUT)]
    lines = err.splitlines()
    assert lines == [f"edge-fer: {tmp_path / 'missing.png'}: no such file or folder",
                     f"edge-fer: {tmp_path / 'empty.jpg'}: empty file",
                     f"edge-fer: {tmp_path / 'text.jpg'}: not an image format that can be read"]
    assert "Traceback" not in err


def test_pixel_limit_from_config_override() -> None:
    code, out, err = run("--image", str(ASTRONAUT), "--set", "images.max_pixels=1000")
    assert code == EXIT_INPUT and out == ""
    assert err.strip() == f"edge-fer: {ASTRONAUT}: 512x512 is over the limit of 1,000 pixels (images.max_pixels)"


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "m.tflite"
    shutil.copy(MODEL, dst)
    shutil.copy(MODEL.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_corrupt_missing_and_mismatched_models_exit_with_model_status(tmp_path: Path) -> None:
    code, _, err = run("--image", str(ASTRONAUT), "--model", str(tmp_path / "none.tflite"))
    assert code == EXIT_MODEL and err.strip().endswith("none.tflite: no such model file")

    corrupt = _copy_model(tmp_path)
    corrupt.write_bytes(b"\x00" * 1000)
    code, _, err = run("--image", str(ASTRONAUT), "--model", str(corrupt))
    assert code == EXIT_MODEL and "not a usable TFLite model" in err and len(err.splitlines()) == 1

    mismatched = _copy_model(tmp_path)
    meta = json.loads(mismatched.with_suffix(".json").read_text())
    meta["labels"] = meta["labels"][:6]
    mismatched.with_suffix(".json").write_text(json.dumps(meta))
    code, _, err = run("--image", str(ASTRONAUT), "--model", str(mismatched))
    assert code == EXIT_MODEL and "the model has 7 outputs but the sidecar names 6 labels" in err

    mismatched.with_suffix(".json").unlink()
    code, _, err = run("--image", str(ASTRONAUT), "--model", str(mismatched))
    assert code == EXIT_MODEL and "sidecar is missing" in err


def test_usage_and_config_errors(tmp_path: Path) -> None:
    code, _, err = run("--bogus")
    assert code == EXIT_USAGE and "unrecognized arguments: --bogus" in err
    code, _, err = run("--image", str(ASTRONAUT), "--set", "haar.min_neighbours=2")
    assert code == EXIT_USAGE and "unknown key haar.min_neighbours" in err
    code, _, err = run("--json")
    assert code == EXIT_USAGE and "--json, --annotate and --publish go with --image" in err


def test_check_config_prints_the_merged_config(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("mqtt:\n  host: broker.lan\n  password: hunter2\n")
    code, out, err = run("--check-config", "--config", str(f), "--set", "camera.fps=5")
    assert code == EXIT_OK and err.strip() == f"{f}: OK"
    assert "host: broker.lan" in out and "fps: 5.0" in out
    assert "hunter2" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  fsp: 5\n")
    code, _, err = run("--check-config", "--config", str(bad))
    assert code == EXIT_USAGE and err.strip() == f"edge-fer: {bad}: unknown key camera.fsp; did you mean camera.fps?"


def test_picamera2_missing_is_a_clear_error() -> None:
    code, _, err = run("--source", "picamera2", "--set", "mqtt.enabled=false")
    assert code == EXIT_USAGE
    assert err.strip() == ("edge-fer: camera.source is picamera2 but picamera2 is not installed: "
                           "sudo apt install python3-picamera2")


def test_help_and_version_return_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert main(["--help"]) == EXIT_OK
    assert "--image PATH" in capsys.readouterr().out


def test_annotate_never_overwrites_an_input_and_outputs_never_collide(tmp_path: Path) -> None:
    original = ASTRONAUT.read_bytes()
    own = tmp_path / "v.png"
    own.write_bytes(original)
    code, out, err = run("--image", str(own), "--annotate", str(own))
    assert code == EXIT_USAGE and "is the input image" in err and out == ""
    assert own.read_bytes() == original
    # Two inputs called x.png, and an input that sits in OUT under the name an output would take.
    for cam in ("cam1", "cam2"):
        (tmp_path / cam).mkdir()
        shutil.copy(ASTRONAUT if cam == "cam1" else NO_FACE_IMAGES[0], tmp_path / cam / "x.png")
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "x.annotated.png")
    code, out, err = run("--image", str(tmp_path / "cam1" / "x.png"), str(tmp_path / "cam2" / "x.png"),
                         str(folder / "x.annotated.png"), "--annotate", str(folder), "--json")
    assert code == EXIT_OK, err
    docs = [json.loads(line) for line in out.splitlines()]
    targets = [Path(d["annotated"]) for d in docs]
    assert len(set(targets)) == 3 and all(t.parent == folder and t.exists() for t in targets)
    assert (folder / "x.annotated.png").read_bytes() == original  # the input in OUT is untouched
    assert all(t != Path(d["image"]) for t, d in zip(targets, docs))
    # Each copy is its own image's: the face is drawn on the astronaut's, the coffee's has none.
    assert cv2.imread(str(targets[0])).shape == (512, 512, 3)
    assert cv2.imread(str(targets[1])).shape == cv2.imread(str(NO_FACE_IMAGES[0])).shape


def test_annotate_into_a_path_that_cannot_be_created_is_one_line_and_the_rest_answered(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the folder would go")
    code, out, err = run("--image", str(ASTRONAUT), str(NO_FACE_IMAGES[0]), "--annotate", str(blocker / "out"))
    assert code == EXIT_RUNTIME
    assert out.count("face") >= 2 and "annotated copy" not in out  # both images answered, none claimed saved
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("edge-fer: ") and "Not a directory" in line
                                   and "was not saved" in line for line in lines), err


def test_file_names_with_control_characters_are_quoted(tmp_path: Path) -> None:
    weird = tmp_path / "a\nb\x1b[31mred.png"
    shutil.copy(NO_FACE_IMAGES[0], weird)
    code, out, err = run("--image", str(weird), str(tmp_path / "gone\x1b[2J.png"))
    assert code == EXIT_INPUT
    assert "\x1b" not in out + err and out.count("\n") == 1 and err.count("\n") == 1
    assert repr(str(weird)) in out and "\\x1b[2J" in err
    code, out, _ = run("--image", str(weird), "--json")
    assert json.loads(out)["image"] == str(weird)  # JSON escapes it and keeps the real name


def test_publish_sends_the_image_file_name_without_its_folders(tmp_path: Path) -> None:
    from tests.broker import Broker, Subscriber

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    photo = tmp_path / "home" / "alice" / "clinic-visit.png"  # the folders may say whose photo it is
    photo.parent.mkdir(parents=True)
    shutil.copy(ASTRONAUT, photo)
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edge_fer/#")
    try:
        code, out, err = run("--image", str(photo), "--json", "--publish", "--set", "mqtt.host=127.0.0.1",
                             "--set", f"mqtt.port={broker.port}", "--set", "mqtt.device_id=cam")
        assert code == EXIT_OK, err
        assert sub.wait_for(lambda s: len(s.on("cam/events")) == 1, 10), "no image event"
    finally:
        sub.close()
        broker.stop()
    assert sub.on("cam/events")[0].json()["image"] == "clinic-visit.png"
    assert b"alice" not in sub.on("cam/events")[0].payload
    assert json.loads(out)["image"] == str(photo)  # the local output still names the file in full


def _edge_fer(*argv: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", {**os.environ, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "edge_fer", *argv], text=True, timeout=120, **kw)


def test_a_closed_stdout_stops_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already gone: the first write fails
    try:
        res = _edge_fer("--image", str(ASTRONAUT), str(ASTRONAUT), stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert res.returncode == 141 and res.stderr == ""


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """A 7000x7000 (49 MP) RGBA PNG of under a megabyte: within max_pixels, large once decoded."""
    from PIL import Image

    pixels = np.zeros((7000, 7000, 4), np.uint8)
    pixels[::50] = 255
    pixels[..., 3] = 200
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


def test_a_49_megapixel_image_decodes_within_the_memory_budget(big_png: Path) -> None:
    code = ("import resource, sys; from edge_fer.cli.main import main; status = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr); sys.exit(status)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code, "--image", str(big_png)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == EXIT_OK and "(7000x7000): 0 faces" in res.stdout, res.stderr
    peak_mb = int(res.stderr.split()[-1])
    assert peak_mb < 500, f"peak RSS {peak_mb} MB"  # README's budget: under 600 MB for 49 MP


def test_out_of_memory_is_one_line_and_the_other_images_answered(big_png: Path) -> None:
    import resource

    # Address space, not RSS: with one malloc arena and one BLAS thread (their reservations otherwise vary by
    # machine) the example runs in under 400 MB; decoding 49 MP needs about 330 MB more.
    limit = 500 * 2**20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    lean = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_ARENA_MAX": "1", "OPENBLAS_NUM_THREADS": "1"}
    res = _edge_fer("--image", str(big_png), str(ASTRONAUT), capture_output=True, preexec_fn=cap, env=lean)
    assert res.returncode == EXIT_INPUT
    assert "(512x512): 1 face" in res.stdout
    assert res.stderr.startswith(f"edge-fer: {big_png}: 7000x7000 needs more memory than is free")
    assert len(res.stderr.splitlines()) == 1


def test_without_tkinter_the_daemon_runs_headless_and_the_window_says_what_to_install(face_video: Path) -> None:
    # Raspberry Pi OS Lite has no python3-tk: importing tkinter fails there, as it does with this stand-in.
    blocked = ("import sys; sys.modules['tkinter'] = None; from edge_fer.cli.main import main; "
               "sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    headless = subprocess.run([sys.executable, "-c", blocked, "--source", str(face_video), "--set",
                               "mqtt.enabled=false", "--set", "display.enabled=true"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert headless.returncode == 0 and "Traceback" not in headless.stderr, headless.stderr[-2000:]
    window = subprocess.run([sys.executable, "-c", blocked, "--display", "--source", str(face_video), "--set",
                             "mqtt.enabled=false"], env={**env, "DISPLAY": ":99"}, capture_output=True, text=True,
                            timeout=120)
    assert window.returncode == EXIT_RUNTIME
    assert window.stderr == "edge-fer: the window needs tkinter: sudo apt install python3-tk\n"
