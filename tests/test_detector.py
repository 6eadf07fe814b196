"""Both detector backends: real photos, pasted faces, rotated faces, following a face, broken model files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli.main import main
from edge_fer.config import Config, HaarConfig, YunetConfig, load
from edge_fer.errors import EXIT_MODEL, ConfigError, ModelError
from edge_fer.types import Detection
from edge_fer.vision.align import Framing, eye_angle
from edge_fer.vision.analyze import Analyzer
from edge_fer.vision.detector import HaarDetector, YuNetDetector, one_per_face, shipped_model
from edge_fer.vision.images import read_image
from tests.conftest import ASTRONAUT, NO_FACE_IMAGES, overlap, paste_faces

YUNET_PHOTO, YUNET_CAMERA = YuNetDetector(YunetConfig(), photos=True), YuNetDetector(YunetConfig())
HAAR_PHOTO, HAAR_CAMERA = HaarDetector(HaarConfig(), photos=True), HaarDetector(HaarConfig())
ALL = [YUNET_PHOTO, YUNET_CAMERA, HAAR_PHOTO, HAAR_CAMERA]
IDS = ["yunet-photo", "yunet-camera", "haar-photo", "haar-camera"]


@pytest.mark.parametrize("detector", ALL, ids=IDS)
def test_one_face_in_the_astronaut_and_none_in_photos_without_faces(detector) -> None:
    found = detector.detect(read_image(ASTRONAUT, 10**8))
    assert len(found) == 1
    x, y, w, h = found[0].box
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180
    for path in NO_FACE_IMAGES:
        assert detector.detect(read_image(path, 10**8)) == [], path.name


def test_yunet_gives_five_landmarks_inside_the_box_and_a_score() -> None:
    (face,) = YUNET_PHOTO.detect(read_image(ASTRONAUT, 10**8))
    x, y, w, h = face.box
    assert face.landmarks is not None and len(face.landmarks) == 5
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)
    (rx, _), (lx, _) = face.landmarks[0], face.landmarks[1]
    assert rx < lx  # the person's right eye is on the left of the picture
    assert face.score is not None and 0.6 <= face.score <= 1.0


@pytest.mark.parametrize("detector, faces", [(YUNET_CAMERA, "clear_faces"), (HAAR_CAMERA, "clear_faces_haar")],
                         ids=["yunet", "haar"])
def test_pasted_faces_are_found_where_they_are(detector, faces: str, request) -> None:
    clear = request.getfixturevalue(faces)
    frame, truth = paste_faces([clear["happy"][0], clear["surprise"][0]], size=170)
    boxes = [d.box for d in detector.detect(frame)]
    assert len(boxes) == 2
    assert all(any(overlap(t, b) > 0.5 for b in boxes) for t in truth)


@pytest.mark.parametrize("detector, faces", [(YUNET_CAMERA, "clear_faces"), (HAAR_CAMERA, "clear_faces_haar")],
                         ids=["yunet", "haar"])
def test_refine_follows_a_moving_face_and_lets_go_of_a_vanished_one(detector, faces: str, request) -> None:
    frame, _ = paste_faces([request.getfixturevalue(faces)["happy"][0]], size=170)
    (found,) = detector.detect(frame)
    moved = np.roll(frame, (10, 25), axis=(0, 1))
    x, y, w, h = detector.refine(moved, found).box
    bx, by, bw, bh = found.box
    assert abs((x + w / 2) - (bx + bw / 2 + 25)) < 12
    assert abs((y + h / 2) - (by + bh / 2 + 10)) < 12
    assert detector.refine(np.full_like(frame, 128), found) is None


def test_a_face_rotated_by_20_degrees_is_levelled_and_keeps_its_emotion(clear_faces) -> None:
    frame, _ = paste_faces([clear_faces["happy"][0]], size=200)
    turn = cv2.getRotationMatrix2D((320, 240), 20, 1.0)
    rotated = cv2.warpAffine(frame, turn, (640, 480), borderValue=(128,) * 3)
    (upright,) = YUNET_PHOTO.detect(frame)
    (face,) = YUNET_PHOTO.detect(rotated)
    # Where the eyes really are in the rotated frame: the upright frame's landmarks, turned with it.
    truth = np.asarray(upright.landmarks) @ turn[:, :2].T + turn[:, 2]
    framing = Framing.load()
    m = framing.transform(face, 48)
    before = abs(eye_angle(truth) - eye_angle(np.asarray(upright.landmarks)) + 20)
    after = abs(eye_angle(truth @ m[:, :2].T + m[:, 2]) - eye_angle(np.asarray(upright.landmarks)))
    assert before < 1.0 and after < 8.0  # most of the 20 degrees is taken out (README: YuNet under-reads tilt)
    crop_points = np.asarray(face.landmarks) @ m[:, :2].T + m[:, 2]
    assert abs(eye_angle(crop_points)) < 0.5  # the eyes as detected come out level...
    assert np.abs(crop_points - framing.landmarks).max() < 6  # ...where FER-2013 puts them
    with Analyzer(YUNET_PHOTO) as analyzer:
        (result,) = analyzer.analyze(rotated)
    assert result.emotion == "happy"


def test_one_face_found_twice_is_one_face() -> None:
    big, inner, other = Detection((130, 12, 120, 120)), Detection((142, 64, 96, 96)), Detection((400, 50, 90, 90))
    assert one_per_face([inner, big, other]) == [big, other]


def test_a_missing_corrupt_or_replaced_yunet_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such face detector model"):
        YuNetDetector(YunetConfig(model=str(tmp_path / "missing.onnx")))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(shipped_model("face_detection_yunet_2023mar.onnx").read_bytes()[:50_000])
    with pytest.raises(ModelError, match="not a usable YuNet ONNX model"):
        YuNetDetector(YunetConfig(model=str(corrupt)))


def test_the_shipped_yunet_file_is_checked_against_its_checksum(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "models"
    fake.mkdir()
    data = bytearray(shipped_model("face_detection_yunet_2023mar.onnx").read_bytes())
    data[-10] ^= 0xFF  # one byte changed
    (fake / "face_detection_yunet_2023mar.onnx").write_bytes(bytes(data))
    monkeypatch.setattr("edge_fer.vision.detector.shipped_model", lambda name: fake / name)
    with pytest.raises(ModelError, match="checksum mismatch"):
        YuNetDetector()


def test_a_corrupt_model_through_the_cli_is_exit_3_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    err = io.StringIO()
    code = main(["--image", str(ASTRONAUT), "--set", f"yunet.model={bad}"], out=io.StringIO(), err=err)
    assert code == EXIT_MODEL
    said = err.getvalue()
    assert said.count("\n") == 1 and said.startswith("edge-fer: ") and "not a usable YuNet" in said


def test_a_cascade_that_does_not_load_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "cascade.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ModelError, match="the Haar cascade could not be loaded"):
        HaarDetector(cascade=bad)


@pytest.mark.parametrize("backend", ["yunet", "haar"])
def test_both_backends_through_the_cli(backend: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--image", str(ASTRONAUT), "--json", "--set", f"detector.backend={backend}"], out=out, err=err)
    assert code == 0, err.getvalue()
    (face,) = json.loads(out.getvalue())["faces"]
    assert face["emotion"] == "happy"
    assert (face["landmarks"] is None) == (backend == "haar")
    assert face["detector_score"] is not None


@pytest.mark.parametrize("override, message", [
    ("detector.backend=mtcnn", "detector.backend = 'mtcnn' must be one of yunet, haar"),
    ("yunet.score_threshold=1.5", "yunet.score_threshold = 1.5 is out of range"),
    ("yunet.detect_widht=320", "unknown key yunet.detect_widht"),
    ("yunet.photo_size=big", "yunet.photo_size must be int"),
    ("haar.scale_factor=1.0", "haar.scale_factor = 1.0 is out of range"),
    ("haar.min_neighbours=3", "unknown key haar.min_neighbours"),
])
def test_config_errors_of_each_backend_section_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load(None, [override])


def test_the_shipped_files_are_where_the_runtime_looks(tmp_path: Path) -> None:
    # The framing calibration loads, and a copy of the ONNX next to a user's config works as yunet.model.
    assert Framing.load().landmarks.shape == (5, 2)
    copy = tmp_path / "yunet.onnx"
    shutil.copy(shipped_model("face_detection_yunet_2023mar.onnx"), copy)
    assert len(YuNetDetector(YunetConfig(model=str(copy))).detect(read_image(ASTRONAUT, 10**8))) == 1
    assert Config().detector.backend == "yunet"



@pytest.mark.parametrize("backend, faces", [("yunet", "clear_faces"), ("haar", "clear_faces_haar")])
def test_the_daemon_step_tracks_a_face_with_either_backend(backend: str, faces: str, request) -> None:
    from edge_fer.live.pipeline import Pipeline
    from edge_fer.types import Frame

    clear = request.getfixturevalue(faces)
    cfg = load(None, [f"detector.backend={backend}", "mqtt.enabled=false", "tracking.max_missing_seconds=0.4"])
    pipeline = Pipeline(cfg)
    # 2 s of a happy face, 2 s of a surprised one in its place, 1.5 s of nothing, at 15 fps.
    frames = [paste_faces([clear["happy"][0]], size=180)[0]] * 30
    frames += [paste_faces([clear["surprise"][0]], size=180)[0]] * 30 + [paste_faces([], size=180)[0]] * 22
    steps = [pipeline.step(Frame(image, i, i / 15, 0.0)) for i, image in enumerate(frames)]
    events = [e for _, step_events in steps for e in step_events]
    # The face keeps its one track through the change of emotion: each result carries the tracker's id.
    assert [r.track_ids for r, _ in steps] == [[1]] * 60 + [[]] * 22
    assert [(e.type, e.emotion) for e in events] == [("start", "happy"), ("change", "surprise"), ("end", "surprise")]
    assert all((e.landmarks is None) == (backend == "haar") and e.detector_score is not None for e in events)
    assert 3.8 < events[-1].duration < 4.1  # seen for the 4 s of faces, not the grace after them


def test_searching_near_known_faces_is_chosen_only_while_it_is_cheaper() -> None:
    # At 480 px a 640x480 frame is 480x360 = 172,800 pixels; each search square is 160x160 = 25,600.
    assert YUNET_CAMERA.refine_pays(6, 640, 480) and not YUNET_CAMERA.refine_pays(7, 640, 480)
    assert HAAR_CAMERA.refine_pays(50, 640, 480)


def test_a_face_in_a_picture_wider_than_opencv_warps_is_framed_like_the_same_face_in_a_small_one() -> None:
    # OpenCV's warp refuses sources of 32,767 px or more on a side (a fuzzed GIF found it): only the face's region
    # is warped.
    small = cv2.imread(str(ASTRONAUT), cv2.IMREAD_GRAYSCALE)[40:200, 150:310]
    wide = np.zeros((160, 33_120), np.uint8)
    wide[:, 20_000:20_160] = small
    framing = Framing.load()
    face = Detection((28, 23, 90, 113), ((50.1, 61.8), (97.1, 62.6), (70.4, 84.5), (48.6, 102.8), (89.7, 103.6)))
    moved = Detection((20_028, 23, 90, 113), tuple((x + 20_000, y) for x, y in face.landmarks))
    for size in (48, 64):
        expected = framing.crop(small, face, size)
        assert expected.std() > 10 and np.array_equal(framing.crop(wide, moved, size), expected)
    # A box with no landmarks running off the picture's edge still gives a whole crop.
    assert framing.crop(wide, Detection((33_100, 100, 60, 90)), 48).shape == (48, 48)
