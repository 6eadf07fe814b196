"""The edge-fer command run in-process: output formats, exit codes and error lines."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli import main
from edge_fer.errors import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE
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


def test_faces_are_ordered_largest_first(tmp_path: Path, fer_private) -> None:
    happy = [i for i in range(len(fer_private)) if fer_private.y[i] == 3][:2]
    frame, _ = paste_faces([fer_private.x[happy[0]]], size=120, frame_wh=(800, 480))
    big = cv2.resize(cv2.cvtColor(fer_private.x[happy[1]], cv2.COLOR_GRAY2BGR), (220, 220), interpolation=cv2.INTER_CUBIC)
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
    assert code == EXIT_USAGE and err.strip() == f"edge-fer: {bad}: unknown key camera.fsp"


def test_picamera2_missing_is_a_clear_error() -> None:
    code, _, err = run("--source", "picamera2", "--set", "mqtt.enabled=false")
    assert code == EXIT_USAGE
    assert err.strip() == ("edge-fer: camera.source is picamera2 but picamera2 is not installed: "
                           "sudo apt install python3-picamera2")


def test_help_and_version_return_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert main(["--help"]) == EXIT_OK
    assert "--image PATH" in capsys.readouterr().out
