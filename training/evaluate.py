"""Measure TFLite models on a FER-2013 split, side by side, with the runtime's own classifier.

    python -m training.evaluate models/edge_fer_int8.tflite models/edge_fer_float.tflite --split PrivateTest
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from training import data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from training.train import DEFAULT_DATA

    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help=".tflite files, each with a .json sidecar")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", choices=data.SPLITS, default="PublicTest")
    p.add_argument("--latency-runs", type=int, default=300, help="single-face runs for the median latency (0: skip)")
    p.add_argument("--report", type=Path, default=None, help="write a markdown report here (confusion PNGs beside it)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images of the split")
    return p.parse_args(argv)


def f1_table(y: np.ndarray, pred: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Confusion matrix (true rows, predicted columns) and per-class precision, recall, F1."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return cm, precision, recall, f1


def evaluate_model(path: Path, split: data.Split, latency_runs: int = 300, batch: int = 64) -> dict:
    """Accuracy, macro-F1, per-class scores, confusion, size, parameters and single-face latency of one model."""
    from edge_fer.vision.classifier import EmotionClassifier

    with EmotionClassifier(path, threads=1) as clf:
        # Our label codes are FER-2013's; a model may order its labels differently.
        order = np.array([clf.labels.index(name) for name in data.LABELS])
        probs = np.concatenate([clf.predict(list(split.x[i:i + batch])) for i in range(0, len(split), batch)])
        pred = np.argmax(probs[:, order], axis=1)
        latency = float("nan")
        if latency_runs:
            face = split.x[0]
            for _ in range(20):
                clf.predict([face])
            times = []
            for i in range(latency_runs):
                t0 = time.perf_counter()
                clf.predict([split.x[i % len(split)]])
                times.append(time.perf_counter() - t0)
            latency = float(np.median(times) * 1000)
        params = clf.meta.get("parameters")
    cm, precision, recall, f1 = f1_table(split.y, pred, len(data.LABELS))
    return {"name": path.name, "path": str(path), "pred": pred, "accuracy": float(np.mean(pred == split.y)),
            "macro_f1": float(f1.mean()), "precision": precision, "recall": recall, "f1": f1, "confusion": cm,
            "size_kib": path.stat().st_size / 1024, "parameters": params, "latency_ms": latency}


def confusion_png(result: dict, path: Path) -> None:
    """Draw a row-normalised confusion matrix with counts."""
    import cv2

    cm = result["confusion"]
    n, cell, left, top = len(cm), 70, 90, 60
    img = np.full((top + n * cell + 40, left + n * cell + 10, 3), 255, np.uint8)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            shade = int(255 - 200 * rows[i, j])
            x, y = left + j * cell, top + i * cell
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (255, shade, shade), -1)
            color = (255, 255, 255) if rows[i, j] > 0.55 else (0, 0, 0)
            cv2.putText(img, f"{rows[i, j]:.2f}", (x + 12, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1,
                        cv2.LINE_AA)
            cv2.putText(img, str(cm[i, j]), (x + 12, y + 52), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
        cv2.putText(img, data.LABELS[i][:8], (4, top + i * cell + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, data.LABELS[i][:7], (left + i * cell + 4, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{result['name']}  acc {result['accuracy']:.4f}  (rows: true, columns: predicted)",
                (4, top + n * cell + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def markdown(results: list[dict], split: str, n: int) -> str:
    """One side-by-side table of the models (with recall per class), then per-class precision/recall/F1 of each."""
    recall_heads = " | ".join(f"{name} recall" for name in data.LABELS)
    lines = [f"FER-2013 {split}, {n} images; latency: median of single-face predictions, 1 thread, LiteRT, "
             "preprocessing included.", "",
             f"| model | accuracy | macro-F1 | {recall_heads} | size (KiB) | parameters | latency (ms/face) |",
             "|---|---|---|" + "---|" * len(data.LABELS) + "---|---|---|"]
    for r in results:
        params = f"{r['parameters']:,}" if isinstance(r["parameters"], int) else "n/a"
        latency = "n/a" if np.isnan(r["latency_ms"]) else f"{r['latency_ms']:.3f}"
        recalls = " | ".join(f"{v:.3f}" for v in r["recall"])
        lines.append(f"| {r['name']} | {r['accuracy'] * 100:.2f}% | {r['macro_f1']:.4f} | {recalls} | "
                     f"{r['size_kib']:.0f} | {params} | {latency} |")
    for r in results:
        lines += ["", f"**{r['name']}**: per class", "", "| class | precision | recall | F1 |", "|---|---|---|---|"]
        for i, name in enumerate(data.LABELS):
            lines.append(f"| {name} | {r['precision'][i]:.3f} | {r['recall'][i]:.3f} | {r['f1'][i]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    split = data.load(args.data)[args.split]
    if args.limit:
        split = split.take(args.limit)
    results = [evaluate_model(m, split, args.latency_runs) for m in args.models]
    print(markdown(results, args.split, len(split)))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(results, args.split, len(split)))
        for r in results:
            confusion_png(r, args.report.parent / f"confusion_{Path(r['name']).stem}_{args.split}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
