"""training/: the data readers and FER+ targets (numpy only), and a smoke run that trains and exports (TensorFlow)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import FER_TARBALL
from training import data

# The runtime's tests run without the train extra (a Raspberry Pi need not install TensorFlow).
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="needs TensorFlow, the train extra: pip install -e \".[dev,train]\"")


def _fer_rows(n_per_split: dict[str, int]) -> list[tuple[int, np.ndarray, str]]:
    """The first rows of each split of the shared FER-2013."""
    if not FER_TARBALL.exists():
        pytest.skip(f"FER-2013 is not at {FER_TARBALL}")
    splits = data.load(FER_TARBALL)
    return [(int(splits[s].y[i]), splits[s].x[i], s) for s in data.SPLITS for i in range(n_per_split[s])]


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fer2013.csv of 400 real rows plus two bad ones."""
    path = tmp_path_factory.mktemp("fer") / "fer2013.csv"
    rows = _fer_rows({"Training": 256, "PublicTest": 72, "PrivateTest": 72})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for label, img, usage in rows[:10]:
            w.writerow([label, " ".join(map(str, img.ravel())), usage])
        w.writerow([3, "1 2 3", "Training"])  # too few pixels
        w.writerow([9, " ".join(["0"] * 2304), "Training"])  # no such label
        for label, img, usage in rows[10:]:
            w.writerow([label, " ".join(map(str, img.ravel())), usage])
    return path


def test_csv_reader_skips_bad_rows_by_number(small_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    splits = data.load(small_csv, cache_dir=None)
    assert [len(splits[s]) for s in data.SPLITS] == [256, 72, 72]
    assert "row 10 skipped" in caplog.text and "row 11 skipped" in caplog.text
    assert splits["Training"].x.shape == (256, 48, 48) and splits["Training"].x.dtype == np.uint8
    table = data.counts_table(splits)
    assert table.splitlines()[1].split()[-1] == "256"


def test_tarball_and_cache_give_the_same_arrays(small_csv: Path, tmp_path: Path) -> None:
    import tarfile

    tarball = tmp_path / "fer2013.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(small_csv, arcname="fer2013/fer2013.csv")
    first = data.load(tarball, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = data.load(tarball, cache_dir=tmp_path / "cache")
    direct = data.load(small_csv, cache_dir=None)
    for s in data.SPLITS:
        assert np.array_equal(first[s].x, direct[s].x) and np.array_equal(again[s].y, direct[s].y)


def test_kaggle_folder_reader(small_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    splits = data.load(small_csv, cache_dir=None)
    root = tmp_path / "kaggle"
    for split, folder in (("Training", "train"), ("PrivateTest", "test")):
        for i in range(5):
            label = data.LABELS[splits[split].y[i]]
            d = root / folder / label
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{split}_{splits[split].rows[i]}.png"), splits[split].x[i])
    (root / "train" / "happy").mkdir(exist_ok=True)
    (root / "train" / "happy" / "Training_99999999.jpg").write_bytes(b"broken")
    got = data.load(root, cache_dir=None)
    assert len(got["Training"]) == 5 and len(got["PrivateTest"]) == 5 and len(got["PublicTest"]) == 0
    assert "Training_99999999.jpg skipped: unreadable image" in caplog.text
    order = np.argsort(got["Training"].rows)
    ref = np.argsort(splits["Training"].rows[:5])
    assert np.array_equal(got["Training"].x[order], splits["Training"].x[:5][ref])


@needs_tensorflow
def test_smoke_run_trains_resumes_exports_and_evaluates(small_csv: Path, tmp_path: Path) -> None:
    from edge_fer.vision.classifier import EmotionClassifier
    from training import evaluate, export, train

    run = tmp_path / "run"
    common = ["--data", str(small_csv), "--run-dir", str(run), "--arch", "edge-small", "--epochs", "2",
              "--batch-size", "32", "--precision", "float32", "--mixup", "0.2", "--augment", "runtime"]
    # A zero time budget stops after the first epoch, as the end of a session would.
    assert train.main(common + ["--time-budget", "0"]) == 1
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1 and not state["finished"] and (run / "last.keras").exists()
    assert train.main(common + ["--resume"]) == 0
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"] and [h["epoch"] for h in state["history"]] == [1, 2]

    out = tmp_path / "models" / "smoke"
    assert export.main(["--run-dir", str(run), "--out", str(out)]) == 0
    for kind in ("float", "int8"):
        model = out.parent / f"smoke_{kind}.tflite"
        meta = json.loads(model.with_suffix(".json").read_text())
        assert meta["labels"] == list(data.LABELS) and meta["input_size"] == [48, 48]
        assert meta["training"]["command"].startswith("python -m training.train --data")
        assert meta["training"]["epochs"] == 2 and "PublicTest" in meta["metrics"]
        with EmotionClassifier(model) as clf:
            probs = clf.predict([np.zeros((48, 48), np.uint8), np.full((60, 50, 3), 200, np.uint8)])
            assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=0.02)
    meta = json.loads((out.parent / "smoke_int8.json").read_text())
    assert 0 <= meta["metrics"]["int8_vs_float"]["top1_agreement"] <= 1

    report = tmp_path / "report" / "eval.md"
    assert evaluate.main([str(out.parent / "smoke_int8.tflite"), str(out.parent / "smoke_float.tflite"),
                          "--data", str(small_csv), "--split", "PrivateTest", "--latency-runs", "20",
                          "--report", str(report)]) == 0
    text = report.read_text()
    assert "| smoke_int8.tflite |" in text and "| smoke_float.tflite |" in text
    assert (report.parent / "confusion_smoke_int8_PrivateTest.png").exists()


@needs_tensorflow
@pytest.mark.parametrize(("arch", "size"), [("vgg16", None), ("resnet50", 64)])
def test_applications_build_from_scratch(arch: str, size: int | None) -> None:
    from training.models import build

    model = build(arch, weights=None, size=size)
    assert model.get_layer(arch).input_shape[1:3] == (size or 48, size or 48)
    out = model(np.zeros((2, 48, 48, 1), np.float32))
    assert tuple(out.shape) == (2, 7)
    if arch == "resnet50":
        # From scratch every residual block starts as the identity: its last batch norm's scale is zero, no other.
        gammas = {layer.name: layer.gamma.numpy() for layer in model.get_layer(arch).layers if hasattr(layer, "gamma")}
        zeroed = sorted(name for name, g in gammas.items() if not g.any())
        assert len(zeroed) == 16 and all(name.endswith("_3_bn") for name in zeroed)
        assert all(g.all() for name, g in gammas.items() if name not in zeroed)


@needs_tensorflow
def test_resnet50_from_a_weights_file_keeps_its_scales(tmp_path: Path) -> None:
    import keras

    from training.models import build

    trunk = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(48, 48, 3), pooling="avg")
    saved = tmp_path / "resnet50_trunk.weights.h5"
    trunk.save_weights(saved)
    loaded = build("resnet50", weights=str(saved)).get_layer("resnet50")
    assert loaded.get_layer("conv5_block3_3_bn").gamma.numpy().all()


@needs_tensorflow
def test_training_fine_tunes_from_a_local_weights_file(small_csv: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    from training import train

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(7)
    trunk = keras.applications.VGG16(include_top=False, weights=None, input_shape=(48, 48, 3), pooling="avg")
    saved = tmp_path / "vgg16_trunk.weights.h5"
    trunk.save_weights(saved)
    run = tmp_path / "run"
    # A learning rate near zero keeps the trained trunk at the file's weights, so the test can see they were used.
    args = ["--data", str(small_csv), "--run-dir", str(run), "--arch", "vgg16", "--epochs", "1", "--limit", "64",
            "--batch-size", "32", "--precision", "float32", "--lr", "1e-9", "--weight-decay", "0"]
    assert train.main(args + ["--weights", str(saved)]) == 0
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] and state["args"]["weights"] == str(saved)
    tuned = keras.models.load_model(run / "last.keras").get_layer("vgg16").get_weights()
    expected = trunk.get_weights()
    assert len(tuned) == len(expected) == 26
    assert all(np.allclose(t, e, atol=1e-5) for t, e in zip(tuned, expected))
    assert not np.allclose(keras.applications.VGG16(include_top=False, weights=None, input_shape=(48, 48, 3))
                           .get_weights()[0], expected[0])
    capsys.readouterr()

    # The wrong network's weights, a missing file, and --weights for the edge CNN: one line, exit 2, before any data.
    for bad, why in (([*args[:5], "resnet50", *args[6:], "--weights", str(saved)], "not weights of resnet50"),
                     (args + ["--weights", str(tmp_path / "absent.h5")], "no such file"),
                     ([*args[:5], "edge", *args[6:], "--weights", str(saved)], "is for vgg16 and resnet50")):
        assert train.main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1, err


def test_ferplus_votes_mix_into_the_targets(tmp_path: Path) -> None:
    import argparse

    from training.train import soft_targets

    votes = tmp_path / "fer2013new.csv"
    votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                     "Training,fer0.png,0,10,0,0,0,0,0,0,0,0\n"
                     "Training,fer1.png,5,0,0,5,0,0,0,0,0,0\n"
                     "Training,,3,0,0,0,0,0,0,0,0,7\n"
                     "Training,fer3.png,0,0,0,0,0,0,0,2,8,0\n")
    dist = data.read_ferplus(votes)
    # A row FER+ dropped (no image name) and one with no vote among the seven have no distribution.
    assert dist.shape == (4, 7) and np.isnan(dist[2]).all() and np.isnan(dist[3]).all()
    assert dist[1][data.LABELS.index("neutral")] == 0.5 and dist[1][data.LABELS.index("sad")] == 0.5
    split = data.Split(np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 48, 48), np.uint8),
                       np.array([3, 6, 0, 1]), np.array([0, 1, 2, 3]))
    args = argparse.Namespace(ferplus=votes, ferplus_weight=0.5, teacher=None)
    kept, t = soft_targets(split, args)
    # The faces without votes are left out, images and labels alike.
    assert kept.rows.tolist() == [0, 1] and kept.x[1, 0, 0] == 1 and kept.y.tolist() == [3, 6]
    assert np.allclose(t.sum(axis=1), 1)
    assert t[0][3] == 1.0  # FER+ agrees: all on happy
    assert t[1][6] == 0.75 and t[1][4] == 0.25  # half the label, half the votes
    kept, t = soft_targets(split, argparse.Namespace(ferplus=None, teacher=None))
    assert len(kept) == 4 and np.array_equal(t, np.eye(7)[[3, 6, 0, 1]])
    # A teacher's scores, found by FER-2013 row whatever their order in its file, mix in by their weight.
    teacher = tmp_path / "teacher.npz"
    scores = np.full((4, 7), 1 / 7, np.float32)
    scores[3] = np.eye(7)[5]  # row 0's teacher says surprise
    np.savez(teacher, Training_rows=np.array([3, 2, 1, 0]), Training_probs=scores)
    kept, t = soft_targets(split, argparse.Namespace(ferplus=votes, ferplus_weight=0.5, teacher=teacher,
                                                     teacher_weight=0.25))
    assert kept.rows.tolist() == [0, 1]
    assert np.isclose(t[0][3], 0.75) and np.isclose(t[0][5], 0.25) and np.allclose(t.sum(axis=1), 1)
    np.savez(teacher, Training_rows=np.array([1]), Training_probs=scores[:1])
    with pytest.raises(ValueError, match="no Training scores for 1 faces"):
        soft_targets(split, argparse.Namespace(ferplus=votes, ferplus_weight=0.5, teacher=teacher, teacher_weight=0.5))


def test_ferplus_majority_leaves_out_ties_and_other_majorities(tmp_path: Path) -> None:
    votes = tmp_path / "fer2013new.csv"
    votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                     "PublicTest,a.png,2,6,0,0,0,0,0,0,2,0\n"  # happy
                     "PublicTest,b.png,4,0,0,4,0,0,0,0,2,0\n"  # a tie
                     "PublicTest,c.png,1,0,0,0,0,0,0,6,3,0\n"  # contempt
                     "PublicTest,d.png,3,0,0,0,0,0,0,0,0,7\n"  # not a face
                     "PublicTest,,9,0,0,0,0,0,0,0,0,1\n"  # dropped by FER+
                     "PublicTest,f.png,0,0,0,0,3,2,0,0,0,0\n")  # anger
    assert data.ferplus_majority(votes).tolist() == [3, -1, -1, -1, -1, 0]


def test_class_weights_balance_the_prior_the_targets_bring() -> None:
    from training.train import class_weights

    onehot = np.eye(7, dtype=np.float32)[[0, 0, 0, 1]]
    w = class_weights(onehot, 1.0)
    # One-hot targets: each sample its class's (1/frequency)^p, mean 1.
    assert np.isclose(w.mean(), 1) and np.isclose(w[3] / w[0], 3.0)
    # Votes that move half of every face to neutral make neutral common: its weight falls, the others' rise.
    soft = 0.5 * onehot + 0.5 * np.eye(7, dtype=np.float32)[[6, 6, 6, 6]]
    ws = class_weights(soft, 1.0)
    assert np.isclose(ws.mean(), 1) and ws[3] / ws[0] > 1.5


def test_real_ferplus_file_lines_up_with_fer2013() -> None:
    path = FER_TARBALL.parent / "fer2013new.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    dist = data.read_ferplus(path)
    assert dist.shape == (35887, 7)
    ok = ~np.isnan(dist).any(axis=1)
    assert ok.mean() > 0.99 and np.allclose(dist[ok].sum(axis=1), 1, atol=1e-5)


@needs_tensorflow
def test_mixup_mixes_each_face_with_one_other_by_its_label_share() -> None:
    import tensorflow as tf

    from training.augment import mixup

    tf.random.set_seed(3)
    n = 7
    # Each face a constant picture of its own index, each of a different class: the mixed target says who was mixed
    # with whom and by how much, and the picture and sample weight must say the same.
    x = tf.constant(np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32) * 10)
    t = tf.eye(n)
    w = tf.range(1.0, n + 1.0)
    mx, mt, mw = (v.numpy() for v in mixup(x, t, w, alpha=0.4))
    assert np.allclose(mt.sum(axis=1), 1.0)
    own = mt[np.arange(n), np.arange(n)]
    assert (own >= 0.5 - 1e-6).all() and (own < 1.0).any()
    for i in range(n):
        share = mt[i].copy()
        share[i] = 0.0
        j = int(share.argmax()) if share.max() > 0 else i
        assert np.allclose(mx[i], own[i] * 10 * i + (1 - own[i]) * 10 * j)
        assert np.isclose(mw[i], own[i] * (i + 1) + (1 - own[i]) * (j + 1))


@needs_tensorflow  # the parser offers training.models' architectures, which import Keras
@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--batch-size", "-4"], ["--mixup", "-0.2"], ["--epochs", "two"]])
def test_out_of_range_numbers_are_refused_by_name_with_status_2(bad: list[str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from training import train

    with pytest.raises(SystemExit) as stop:
        train.main(["--run-dir", str(tmp_path / "run"), *bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {bad[0]}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@needs_tensorflow
def test_runtime_augmentation_degrades_faces_as_cameras_do_and_keeps_their_range() -> None:
    import dataclasses

    import tensorflow as tf

    from training.augment import RUNTIME, AugmentConfig, augment_batch

    tf.random.set_seed(5)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (64, 48, 48, 1)).astype(np.float32))
    out = augment_batch(x, RUNTIME).numpy()
    assert out.shape == (64, 48, 48, 1) and out.min() >= 0 and out.max() <= 255.001
    # Each degradation alone, on every face, does what its name says.
    only = dict(rotate_deg=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0, erase_prob=0.0)
    lap = lambda v: float(np.mean([cv2.Laplacian(f[..., 0], cv2.CV_32F).var() for f in v]))  # noqa: E731
    flat = np.ones((8, 48, 48, 1), np.float32)
    for name, check in (("lowres_prob", lambda o: lap(o) < 0.5 * lap(x.numpy())),
                        ("blur_prob", lambda o: lap(o) < 0.5 * lap(x.numpy())),
                        ("noise_prob", lambda o: lap(o) > lap(x.numpy()))):
        cfg = dataclasses.replace(AugmentConfig(**only), **{name: 1.0})
        assert check(augment_batch(x, cfg).numpy()), name
    dark = augment_batch(tf.constant(flat * 128), dataclasses.replace(AugmentConfig(**only), gamma_prob=1.0,
                                                                       gamma=(2.0, 2.0))).numpy()
    assert np.allclose(dark, 255 * (128 / 255) ** 2, atol=0.5)
    squeezed = augment_batch(x, dataclasses.replace(AugmentConfig(**only), flat_prob=1.0)).numpy()
    ratio = squeezed.std(axis=(1, 2, 3)) / x.numpy().std(axis=(1, 2, 3))
    assert (ratio > 0.29).all() and (ratio < 0.71).all()
    jpeg = augment_batch(x, dataclasses.replace(AugmentConfig(**only), jpeg_prob=1.0)).numpy()
    assert not np.allclose(jpeg, x.numpy(), atol=2) and np.allclose(jpeg.mean(), x.numpy().mean(), atol=4)
    # Yaw: a vertical bar at the centre stays where it is, and one side of a grid shrinks against the other.
    bar = np.zeros((1, 48, 48, 1), np.float32)
    bar[:, :, 23:25] = 255
    turned = augment_batch(tf.constant(np.repeat(bar, 16, 0)),
                           dataclasses.replace(AugmentConfig(**only), yaw=0.3)).numpy()
    assert (turned[:, 24, 22:26, 0].max(axis=1) > 200).all()


PEER = FER_TARBALL.parent.parent / "peers" / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"


def test_teacher_scores_faces_and_refuses_a_file_that_is_not_the_peer(tmp_path: Path, fer_private) -> None:
    from training import teacher

    if not PEER.exists():
        pytest.skip(f"the teacher model is not at {PEER}")
    faces = fer_private.x[:24]
    probs = teacher.teacher_scores(PEER, faces)
    assert probs.shape == (24, 7) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    # Far better than chance against FER-2013's own labels, as its README says of in-the-wild faces.
    assert np.mean(probs.argmax(axis=1) == fer_private.y[:24]) > 0.3
    fake = tmp_path / "peer.onnx"
    fake.write_bytes(PEER.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="is not the peer model's"):
        teacher.teacher_scores(fake, faces)
    assert teacher.main(["--peer", str(fake), "--out", str(tmp_path / "t.npz")]) == 2
