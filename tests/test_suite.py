"""The evaluation of what users get: metrics, calibration, the wild-dev pipeline set, and calibrated sidecars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_fer.errors import ModelError
from edge_fer.vision.classifier import EmotionClassifier
from tests.conftest import ASTRONAUT, FER_TARBALL, ROOT
from training import calibrate, suite

MODEL = ROOT / "models" / "edge_fer_int8.tflite"
# The model shipped until 2026-12-01: a sidecar without calibration.
OLD = ROOT / "models" / "compare" / "edge_fer_2026-11-25_int8.tflite"
WILD = FER_TARBALL.parent / "wild-dev.tar"


def test_metrics_count_a_face_not_found_as_wrong_and_weigh_classes_alike() -> None:
    y = np.array([0, 0, 0, 3, 3, 6])
    probs = np.zeros((6, 7), np.float32)
    for i, k in enumerate([0, 0, 3, 3, 3, 0]):
        probs[i, k] = 0.9
    found = np.array([True, True, True, True, False, True])
    m = suite.metrics(suite.Scored(y, probs, found))
    assert m["accuracy"] == pytest.approx(3 / 6)
    # Recall: angry 2/3, happy 1/2 (one not found), neutral 0.
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m["confusion"][3].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]  # the last column: not found
    assert m["found"] == pytest.approx(5 / 6)


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy() -> None:
    assert suite.ece(np.array([True, True, False, False]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.0)
    assert suite.ece(np.array([True, False]), np.array([0.95, 0.95])) == pytest.approx(0.45)
    # Two bins: 0.9-confident and right, 0.3-confident and right half the time.
    c = np.array([0.9, 0.9, 0.3, 0.3])
    assert suite.ece(np.array([True, True, True, False]), c) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)


def test_calibration_recovers_the_temperature_of_overconfident_scores() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (4000, 7))
    true_p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(7, p=p) for p in true_p])
    overconfident = np.exp(2 * z) / np.exp(2 * z).sum(1, keepdims=True)
    t, bias = calibrate.fit(overconfident, y, with_bias=False)
    assert 1.8 < t < 2.2 and not bias.any()
    before = calibrate.top_ece(overconfident, y)
    after = calibrate.top_ece(calibrate.scaled(overconfident, t), y)
    assert after < 0.03 < before
    # A label the scores under-call gets a positive offset.
    shifted = true_p * np.array([1, 1, 1, 0.3, 1, 1, 1])
    shifted /= shifted.sum(1, keepdims=True)
    _, bias = calibrate.fit(shifted, y, with_bias=True)
    assert bias.argmax() == 3


def calibrated_copy(tmp_path: Path, calibration: object) -> Path:
    model = tmp_path / "m.tflite"
    shutil.copy(OLD, model)
    meta = json.loads(OLD.with_suffix(".json").read_text())
    meta["calibration"] = calibration
    model.with_suffix(".json").write_text(json.dumps(meta))
    return model


def test_the_sidecars_calibration_is_applied_and_a_model_without_one_loads_as_before(tmp_path: Path) -> None:
    import cv2

    face = cv2.resize(cv2.imread(str(ASTRONAUT), cv2.IMREAD_GRAYSCALE)[63:176, 178:268], (48, 48))
    with EmotionClassifier(OLD) as clf:
        raw = clf.predict([face])
        assert clf.temperature == 1.0 and not clf.bias.any()
    with EmotionClassifier(MODEL) as clf:  # the shipped model: temperature scaling, fitted on wild-dev
        assert clf.meta["calibration"]["method"] == "temperature scaling" and clf.temperature != 1.0
    bias = [0.0, 0.5, 0.0, -1.0, 0.0, 0.0, 0.3]
    with EmotionClassifier(calibrated_copy(tmp_path, {"temperature": 2.0, "bias": bias})) as clf:
        got = clf.predict([face])
    assert np.allclose(got, calibrate.scaled(raw, 2.0, np.array(bias)), atol=1e-5)
    assert got.max() < raw.max()  # a temperature above 1 softens
    for bad in ({"temperature": 0}, {"temperature": "hot"}, {"temperature": 1.0, "bias": [1.0]},
                {"temperature": 1.0, "bias": [99.0] * 7}, "warm"):
        with pytest.raises(ModelError, match="calibration"):
            EmotionClassifier(calibrated_copy(tmp_path, bad))


def test_labels_no_event_could_carry_are_refused_at_load(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(OLD, model)
    meta = json.loads(OLD.with_suffix(".json").read_text())
    names = meta["labels"]
    for bad in ([*names[:6], "unsure"], [*names[:6], "no_face"], [*names[:6], names[0]], [*names[:6], "x" * 201],
                [*names[:6], ""], [*names[:6], 3], "happy"):
        model.with_suffix(".json").write_text(json.dumps({**meta, "labels": bad}))
        with pytest.raises(ModelError, match="'labels'"):
            EmotionClassifier(model)
    model.with_suffix(".json").write_text(json.dumps({**meta, "labels": [*names[:6], "joy"]}))
    with EmotionClassifier(model) as clf:
        assert clf.labels[-1] == "joy"


def test_a_photo_folder_in_wild_dev_form_goes_through_the_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "wild"
    for rel in ("happy/astronaut.png", "sad/cat.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASTRONAUT, root / "happy" / "astronaut.png")
    shutil.copy(ROOT / "tests" / "data" / "chelsea.png", root / "sad" / "cat.png")  # a cat: no face
    (root / "labels.csv").write_text("path,label\nhappy/astronaut.png,happy\nsad/cat.png,sad\n")
    photos = suite.read_wild(root)
    assert [p.label for p in photos] == [3, 4] and photos[1].detection is None
    scored, qualities = suite.wild_scores(MODEL, photos)
    assert scored.found.tolist() == [True, False] and scored.pred.tolist() == [3, suite.NOT_FOUND]
    assert qualities[0].face_px > 80 and qualities[1] is None
    m = suite.metrics(scored)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    share, labelled, everyone = suite.judged_share(scored)
    assert (share, labelled, everyone) == (1.0, 1.0, 1.0)


def test_the_suite_on_every_set_in_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not WILD.exists() or not FER_TARBALL.exists():
        pytest.skip(f"wild-dev.tar and fer2013.tar.gz are not in {FER_TARBALL.parent}")
    report = tmp_path / "suite.md"
    assert suite.main([str(MODEL), "--data", str(FER_TARBALL), "--wild", str(WILD), "--limit", "60", "--final",
                       "--report", str(report), "--faces-csv", str(tmp_path / "faces.csv")]) == 0
    text = report.read_text()
    for set_name in ("FER+ majority PublicTest", "FER-2013 PrivateTest", "FER+ majority PrivateTest",
                     "wild-dev (pipeline)"):
        assert f"| edge_fer_int8.tflite | {set_name} |" in text
    assert "not-judged rule at its defaults" in text and "| min_confidence |" in text
    rows = (tmp_path / "faces.csv").read_text().splitlines()
    assert rows[0].startswith("model,path,label,pred,confidence") and len(rows) > 50


def test_the_previous_model_still_loads_and_answers_as_it_did() -> None:
    import hashlib

    sums = dict(reversed(line.split()) for line in (OLD.parent / "SHA256SUMS").read_text().splitlines())
    assert hashlib.sha256(OLD.read_bytes()).hexdigest() == sums[OLD.name]
    with EmotionClassifier(OLD) as clf:
        assert "calibration" not in clf.meta and clf.temperature == 1.0 and not clf.bias.any()
    (face,) = image_json(OLD)["faces"]
    # What README showed for this model on the example photo before the calibrated one shipped.
    assert (face["emotion"], round(face["confidence"], 2)) == ("happy", 0.91)


def image_json(model: Path) -> dict:
    """`edge-fer --image examples/astronaut.png --json` with another model."""
    import io

    from edge_fer.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    assert main(["--image", str(ASTRONAUT), "--json", "--model", str(model)], out=out, err=err) == 0, err.getvalue()
    return json.loads(out.getvalue())
