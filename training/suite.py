"""Every candidate model on what users get, in one table: FER-2013 crops (original and FER+ majority labels),
and the labelled in-the-wild photos of wild-dev through the whole pipeline (detector, alignment, classifier).

    python -m training.suite models/edge_fer_int8.tflite /tmp/fer-peer/fer_emotion_model_quantized.tflite \\
        --wild ../shared/data/wild-dev.tar --report runs/suite.md [--final]

Choices are made on PublicTest and wild-dev; `--final` adds PrivateTest (original and FER+ labels), for the
numbers of a shipped candidate only. Accuracy counts every face by its top score, judged or not; a photo whose
face is not found counts as wrong. The "not judged" rule is measured apart: the share of wild-dev faces labelled
and the accuracy of those labels.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ECE_BINS = 15
NOT_FOUND = -1


@dataclass
class Scored:
    """One model on one set: true labels, scores in LABELS order (zeros where no face was found), and why each
    face is not judged (None where it is; only the pipeline set judges)."""

    y: np.ndarray
    probs: np.ndarray
    found: np.ndarray
    unsure: list[str | None] = field(default_factory=list)

    @property
    def pred(self) -> np.ndarray:
        """Top label of each face, NOT_FOUND where no face was found."""
        return np.where(self.found, self.probs.argmax(axis=1), NOT_FOUND)

    @property
    def confidence(self) -> np.ndarray:
        """Top score of each face (0 where none was found)."""
        return self.probs.max(axis=1)


def ece(correct: np.ndarray, confidence: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the gap between accuracy and mean confidence in equal-width bins, weighted."""
    if len(correct) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def metrics(s: Scored) -> dict:
    """Accuracy, balanced accuracy, macro-F1, recall per class, confusion (a last column for not found) and ECE."""
    from training.evaluate import f1_table

    n = len(data.LABELS)
    pred = s.pred
    # "Not found" is one more predicted class: it counts against recall, and no true face has it.
    cm, _, recall, f1 = f1_table(s.y, np.where(pred == NOT_FOUND, n, pred), n + 1)
    cm, recall, f1 = cm[:n], recall[:n], f1[:n]
    present = cm.sum(1) > 0
    correct = pred == s.y
    return {"n": len(s.y), "found": float(s.found.mean()), "accuracy": float(correct.mean()),
            "balanced_accuracy": float(recall[present].mean()), "macro_f1": float(f1[present].mean()),
            "recall": recall, "confusion": cm,
            "ece": ece(correct[s.found], s.confidence[s.found])}


def judged_share(s: Scored) -> tuple[float, float, float]:
    """Share of found faces labelled, accuracy of those labels, and accuracy of all found faces' top scores."""
    judged = s.found & np.array([u is None for u in s.unsure])
    correct = s.pred == s.y
    labelled = float(correct[judged].mean()) if judged.any() else float("nan")
    return float(judged.sum() / max(1, s.found.sum())), labelled, float(correct[s.found].mean())


# --- the sets ---------------------------------------------------------------------------------------------


def crop_scores(model: Path, split: data.Split, labels: np.ndarray, batch: int = 256) -> Scored:
    """A model on FER-2013 crops as they are (no detector): the crop-level measure."""
    from edge_fer.vision.classifier import EmotionClassifier

    with EmotionClassifier(model, threads=1) as clf:
        order = np.array([clf.labels.index(name) for name in data.LABELS])
        probs = np.concatenate([clf.predict(list(split.x[i:i + batch])) for i in range(0, len(split), batch)])
    return Scored(labels, probs[:, order], np.ones(len(labels), bool))


def ferplus_split(split: data.Split, majority: np.ndarray) -> tuple[data.Split, np.ndarray]:
    """The faces of a split with a FER+ majority among the seven, and those labels."""
    keep = majority[split.rows] >= 0
    return data.Split(split.x[keep], split.y[keep], split.rows[keep]), majority[split.rows][keep]


@dataclass
class WildPhoto:
    """One wild-dev photo: its label, and the gray frame with the largest face the detector found (or None)."""

    path: str
    label: int
    gray: np.ndarray | None
    detection: object | None


def unpack_wild(tar_path: Path, cache_dir: Path = data.DEFAULT_CACHE) -> Path:
    """wild-dev.tar unpacked once into the cache (its photos are read as files, exactly as users give them)."""
    key = hashlib.sha1(f"{tar_path.resolve()}|{tar_path.stat().st_size}".encode()).hexdigest()[:12]
    root = cache_dir / f"wild-dev-{key}"
    if not (root / "wild-dev" / "labels.csv").exists():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path) as tar:
            tar.extractall(root, filter="data")
    return root / "wild-dev"


def read_wild(source: Path, limit: int = 0) -> list[WildPhoto]:
    """Every labelled photo of wild-dev (a tar or its unpacked folder), with its largest detected face."""
    import cv2

    from edge_fer.config import Config
    from edge_fer.vision.detector import make_detector
    from edge_fer.vision.images import read_image

    root = unpack_wild(source) if source.is_file() else source
    with open(root / "labels.csv", newline="") as f:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(f)]
    if limit:
        # Every k-th photo keeps each class in a small sample.
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    detector = make_detector(Config(), photos=True)
    photos = []
    for rel, label in rows:
        frame = read_image(root / rel, Config().images.max_pixels)
        found = detector.detect(frame)
        largest = max(found, key=lambda d: d.box[2] * d.box[3]) if found else None
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        photos.append(WildPhoto(rel, data.LABELS.index(label), gray if largest else None, largest))
    return photos


def wild_scores(model: Path, photos: list[WildPhoto], raw: bool = False) -> tuple[Scored, list]:
    """A model through the runtime's pipeline on wild-dev's largest faces, with the quality of each face.

    `raw`: the model's own scores, without the sidecar's calibration (to fit a new one)."""
    from edge_fer.vision.analyze import Analyzer
    from edge_fer.vision.classifier import EmotionClassifier
    from edge_fer.vision.judge import quality

    n = len(data.LABELS)
    probs = np.zeros((len(photos), n), np.float32)
    found = np.zeros(len(photos), bool)
    unsure: list[str | None] = [None] * len(photos)
    qualities: list = [None] * len(photos)
    with EmotionClassifier(model, threads=1) as clf:
        if raw:
            clf.temperature, clf.bias = 1.0, np.zeros_like(clf.bias)
        analyzer = Analyzer(detector=_NoDetector(), classifier=clf)
        order = [clf.labels.index(name) for name in data.LABELS]
        side = clf.input_size[1]
        for i, p in enumerate(photos):
            if p.detection is None:
                continue
            face = analyzer.classify(p.gray, [p.detection])[0]
            scores = np.array([face.scores[clf.labels[k]] for k in order], np.float32)
            probs[i], found[i], unsure[i] = scores, True, face.unsure
            qualities[i] = quality(p.detection, analyzer.framing.crop(p.gray, p.detection, side), float(scores.max()))
    return Scored(np.array([p.label for p in photos]), probs, found, unsure), qualities


def fer_pipeline_scores(python: str, root: Path, photos: list[WildPhoto]) -> Scored:
    """PyPI `fer` as its users run it (`FER(mtcnn=False).detect_emotions`, its own detector and model) on the same
    photos, in its own interpreter; the largest face of each photo."""
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(str(root / p.path) for p in photos))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([python, "-c", FER_WORKER, f.name], env=env, capture_output=True, text=True, check=True)
    os.unlink(f.name)
    docs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    probs = np.zeros((len(photos), len(data.LABELS)), np.float32)
    found = np.zeros(len(photos), bool)
    for i, doc in enumerate(docs):
        if doc["emotions"]:
            probs[i] = [doc["emotions"][name] for name in data.LABELS]
            found[i] = True
    return Scored(np.array([p.label for p in photos]), probs, found)


# Run by `fer`'s interpreter: one JSON line per photo, the largest face's seven scores (or null).
FER_WORKER = """
import json, sys
import cv2
from fer.fer import FER
det = FER(mtcnn=False)
for path in open(sys.argv[1]).read().splitlines():
    faces = det.detect_emotions(cv2.imread(path))
    best = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
    print(json.dumps({"emotions": best["emotions"] if best else None}), flush=True)
"""


class _NoDetector:
    """The suite detects each photo once for all models; the analyzer only classifies."""

    def detect(self, frame: np.ndarray) -> list:
        return []


# --- the report -------------------------------------------------------------------------------------------


def table(rows: list[tuple[str, str, dict]]) -> str:
    """One line per model and set."""
    recall_heads = " | ".join(data.LABELS)
    lines = [f"| model | set | faces | found | accuracy | balanced | macro-F1 | ECE | {recall_heads} |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(data.LABELS)]
    for name, set_name, m in rows:
        recalls = " | ".join(f"{v * 100:.1f}" for v in m["recall"])
        lines.append(f"| {name} | {set_name} | {m['n']} | {m['found'] * 100:.1f}% | {m['accuracy'] * 100:.1f}% | "
                     f"{m['balanced_accuracy'] * 100:.1f}% | {m['macro_f1']:.3f} | {m['ece']:.3f} | {recalls} |")
    return "\n".join(lines)


def confusion_text(name: str, m: dict) -> str:
    """The confusion matrix as a markdown table (rows true, columns predicted, last column not found)."""
    heads = " | ".join(lab[:8] for lab in data.LABELS)
    lines = [f"**{name}**, wild-dev confusion (rows: true; columns: predicted)", "",
             f"| true | {heads} | not found |", "|---|" + "---|" * (len(data.LABELS) + 1)]
    for i, lab in enumerate(data.LABELS):
        lines.append(f"| {lab} | " + " | ".join(str(v) for v in m["confusion"][i]) + " |")
    return "\n".join(lines)


def tradeoff(name: str, s: Scored, qualities: list, thresholds: tuple[float, ...]) -> str:
    """Labels given against the share labelled, as the confidence floor of the rule moves (other rules at default)."""
    import dataclasses

    from edge_fer.config import UnsureConfig
    from edge_fer.vision.judge import judge

    lines = [f"**{name}**, wild-dev: the not-judged rule at other confidence floors (other rules at their defaults)",
             "", "| min_confidence | labelled | accuracy of labels given | accuracy of all found faces |",
             "|---|---|---|---|"]
    correct = s.pred == s.y
    for t in thresholds:
        cfg = dataclasses.replace(UnsureConfig(), min_confidence=t)
        judged = np.array([q is not None and judge(q, cfg) is None for q in qualities])
        share = judged.sum() / max(1, s.found.sum())
        acc = correct[judged].mean() if judged.any() else float("nan")
        lines.append(f"| {t:.2f} | {share * 100:.1f}% | {acc * 100:.1f}% | {correct[s.found].mean() * 100:.1f}% |")
    return "\n".join(lines)


def write_faces_csv(path: Path, name: str, photos: list[WildPhoto], s: Scored, qualities: list) -> None:
    """Per face: the measures the rules read, the label, the top score, and whether it was right (for choosing)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["model", "path", "label", "pred", "confidence", "correct", "unsure", "face_px",
                        "detector_score", "brightness", "contrast", "sharpness", "yaw_deg", "pitch"])
        for p, pred, conf, u, q in zip(photos, s.pred, s.confidence, s.unsure, qualities):
            if q is None:
                continue
            w.writerow([name, p.path, data.LABELS[p.label], data.LABELS[pred], f"{conf:.4f}", int(pred == p.label), u,
                        q.face_px, q.detector_score, f"{q.brightness:.1f}", f"{q.contrast:.1f}", f"{q.sharpness:.1f}",
                        None if q.yaw_deg is None else f"{q.yaw_deg:.1f}",
                        None if q.pitch is None else f"{q.pitch:.3f}"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from training.train import DEFAULT_DATA

    p = argparse.ArgumentParser(prog="python -m training.suite", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help=".tflite files, each with a .json sidecar")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="fer2013.tar.gz (or its CSV)")
    p.add_argument("--ferplus", type=Path, default=None, help="fer2013new.csv (default: beside --data)")
    p.add_argument("--wild", type=Path, default=None,
                   help="wild-dev.tar or its unpacked folder (default: beside --data)")
    p.add_argument("--final", action="store_true", help="also PrivateTest: for a shipped candidate's numbers only")
    p.add_argument("--limit", type=int, default=0, help="only N faces of each set (smoke runs)")
    p.add_argument("--report", type=Path, default=None, help="also write the markdown here")
    p.add_argument("--faces-csv", type=Path, default=None, help="write each wild-dev face's measures here")
    p.add_argument("--fer-python", default=None, metavar="PYTHON",
                   help="an interpreter with PyPI `fer` installed: also run fer's own pipeline on wild-dev")
    args = p.parse_args(argv)
    args.ferplus = args.ferplus or args.data.parent / "fer2013new.csv"
    args.wild = args.wild or args.data.parent / "wild-dev.tar"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.data, args.ferplus, args.wild, *args.models):
        if not path.exists():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    splits = data.load(args.data)
    majority = data.ferplus_majority(args.ferplus)
    crop_sets: list[tuple[str, data.Split, bool]] = [("PublicTest", splits["PublicTest"], False)]
    if args.final:
        crop_sets.append(("PrivateTest", splits["PrivateTest"], True))
    photos = read_wild(args.wild, args.limit)
    rows: list[tuple[str, str, dict]] = []
    extra: list[str] = []
    if args.faces_csv and args.faces_csv.exists():
        args.faces_csv.unlink()
    for model in args.models:
        name = model.name
        for split_name, split, original in crop_sets:
            if args.limit:
                split = split.take(args.limit)
            if original:
                rows.append((name, f"FER-2013 {split_name}", metrics(crop_scores(model, split, split.y))))
            plus, plus_y = ferplus_split(split, majority)
            rows.append((name, f"FER+ majority {split_name}", metrics(crop_scores(model, plus, plus_y))))
        wild, qualities = wild_scores(model, photos)
        m = metrics(wild)
        rows.append((name, "wild-dev (pipeline)", m))
        share, labelled, everyone = judged_share(wild)
        extra.append(f"**{name}**, wild-dev not-judged rule at its defaults: {share * 100:.1f}% of found faces "
                     f"labelled, right {labelled * 100:.1f}% of the time (all found faces by top score: "
                     f"{everyone * 100:.1f}%)")
        extra.append(tradeoff(name, wild, qualities, (0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)))
        extra.append(confusion_text(name, m))
        if args.faces_csv:
            write_faces_csv(args.faces_csv, name, photos, wild, qualities)
    if args.fer_python:
        root = unpack_wild(args.wild) if args.wild.is_file() else args.wild
        rows.append(("fer (its own detector and model)", "wild-dev (pipeline)",
                     metrics(fer_pipeline_scores(args.fer_python, root, photos))))
    text = (f"wild-dev: {len(photos)} photos, largest face of each through the pipeline (YuNet photo settings, "
            f"alignment, the model); ECE over found faces' top scores, {ECE_BINS} bins.\n\n"
            + table(rows) + "\n\n" + "\n\n".join(extra) + "\n")
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
