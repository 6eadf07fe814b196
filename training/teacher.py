"""Soft targets from a teacher: OpenCV Zoo's RAF-DB MobileFaceNet scores every FER-2013 face, for distillation.

    python -m training.teacher --peer ../shared/peers/facial_expression_recognition_mobilefacenet_2022july_int8.onnx \\
        --out runs/teacher.npz [--workers 2]
    python -m training.teacher --include runs/teacher.npz --model models/edge_fer_int8.tflite --out runs/ensemble.npz

The teacher saw in-the-wild faces (RAF-DB) that FER-2013 lacks; a student trained towards its scores on FER-2013's
own images learns some of that without any other data set. Each 48x48 face is staged as the framing calibration
stages it, YuNet finds its five landmarks (the framing's average points where it finds none), and the face is
warped onto the teacher's 112x112 template, as OpenCV Zoo runs it. `--model` adds one of our own classifiers
(scored on the 48x48 crops, calibrated as the runtime calibrates it) and `--include` a teacher file made before;
the targets are the mean of every source: an ensemble of models that err differently, distilled into one. Its
licence, source and checksum:
../shared/peers/README.md; the checksum is verified before use.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from training import data

PEER_SHA256 = "f0d7093aff10e2638c734c5f18a6a7eabd2b9239b20bdb9b8090865a6f69a1ed"
# The teacher's 112x112 template (right eye, left eye, nose, right and left mouth corner) and its label order.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], np.float32)
TEACHER_LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def check_peer(path: Path) -> None:
    """Refuse a teacher file whose bytes are not the ones its README names."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PEER_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not the peer model's {PEER_SHA256}")


def _scores(args: tuple[str, np.ndarray]) -> np.ndarray:
    """Teacher probabilities (N, 7) in LABELS order for a chunk of 48x48 faces (run in a worker process)."""
    import cv2

    from edge_fer.config import YunetConfig
    from edge_fer.vision.align import Framing
    from edge_fer.vision.detector import YuNetDetector
    from training.calibrate_framing import PAD, UP, staged

    cv2.setNumThreads(1)
    peer, faces = args
    net = cv2.dnn.readNet(peer)
    detector = YuNetDetector(YunetConfig(), photos=True)
    # Where a face's landmarks fall on the staged picture when YuNet finds none: the framing's average.
    fallback = (Framing.load().landmarks * UP + PAD).astype(np.float32)
    side = 48 * UP + 2 * PAD
    order = [TEACHER_LABELS.index(name) for name in data.LABELS]
    out = np.zeros((len(faces), len(data.LABELS)), np.float32)
    for i, face in enumerate(faces):
        img = staged(face)
        found = [d for d in detector.detect(img) if d.landmarks is not None]
        c = side / 2
        best = min(found, key=lambda d: abs(d.box[0] + d.box[2] / 2 - c) + abs(d.box[1] + d.box[3] / 2 - c),
                   default=None)
        points = np.asarray(best.landmarks, np.float32) if best is not None else fallback
        m, _ = cv2.estimateAffinePartial2D(points, TEMPLATE, method=cv2.LMEDS)
        warped = cv2.warpAffine(img, m, (112, 112))
        rgb = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        net.setInput(((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None])
        logits = net.forward().reshape(-1)
        e = np.exp(logits - logits.max())
        out[i] = (e / e.sum())[order]
    return out


def teacher_scores(peer: Path, faces: np.ndarray, workers: int = 1, chunk: int = 500) -> np.ndarray:
    """Teacher probabilities for every face, computed in `workers` processes."""
    check_peer(peer)
    jobs = [(str(peer), faces[i:i + chunk]) for i in range(0, len(faces), chunk)]
    if workers == 1:
        return np.concatenate([_scores(job) for job in jobs])
    # Spawned, not forked: a fork of a process with threads running (TensorFlow's, OpenCV's) can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_scores, jobs)))


def model_scores(path: Path, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    """One of our classifiers' probabilities (N, 7) in LABELS order for 48x48 faces."""
    from edge_fer.vision.classifier import EmotionClassifier

    with EmotionClassifier(path, threads=1) as clf:
        order = [clf.labels.index(name) for name in data.LABELS]
        probs = np.concatenate([clf.predict(list(faces[i:i + batch])) for i in range(0, len(faces), batch)])
    return probs[:, order].astype(np.float32)


def stored_scores(path: Path, name: str, rows: np.ndarray) -> np.ndarray:
    """The scores an earlier teacher file holds for these FER-2013 rows of one split."""
    with np.load(path) as z:
        where = {int(r): i for i, r in enumerate(z[f"{name}_rows"])}
        probs = z[f"{name}_probs"]
    missing = [int(r) for r in rows if int(r) not in where]
    if missing:
        raise ValueError(f"{path}: no {name} scores for {len(missing)} faces (row {missing[0]} first)")
    return probs[[where[int(r)] for r in rows]]


def main(argv: list[str] | None = None) -> int:
    from training.train import DEFAULT_DATA

    p = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.splitlines()[0])
    p.add_argument("--peer", type=Path, help="the OpenCV Zoo MobileFaceNet FER .onnx file")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="one of our .tflite classifiers (with its sidecar), as one more teacher; repeatable")
    p.add_argument("--include", type=Path, action="append", default=[],
                   help="a teacher .npz made before, as one more teacher; repeatable")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True, help="an .npz of the teacher's scores per split, by FER-2013 row")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N faces of each split (smoke runs)")
    args = p.parse_args(argv)
    sources = ([args.peer] if args.peer else []) + args.model + args.include
    if not sources:
        print("name at least one teacher: --peer, --model or --include", file=sys.stderr)
        return 2
    for path in sources:
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    try:
        if args.peer:
            check_peer(args.peer)
        splits = data.load(args.data)
        arrays = {}
        for name in ("Training", "PublicTest"):
            split = splits[name].take(args.limit) if args.limit else splits[name]
            parts = [teacher_scores(args.peer, split.x, args.workers)] if args.peer else []
            parts += [model_scores(path, split.x) for path in args.model]
            parts += [stored_scores(path, name, split.rows) for path in args.include]
            probs = np.mean(parts, axis=0)
            arrays[f"{name}_rows"], arrays[f"{name}_probs"] = split.rows, probs
            agree = float(np.mean(probs.argmax(1) == split.y))
            print(f"{name}: {len(split)} faces, teacher agrees with the FER-2013 label on {agree:.1%}", flush=True)
    except (ValueError, KeyError, OSError) as e:
        print(f"teacher: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
