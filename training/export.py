"""Export a trained checkpoint to float32 and full-integer int8 TFLite, with the sidecar.

    python -m training.export --run-dir runs/edge --out models/edge_fer
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from training import data

REPRESENTATIVE = 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="last: the end of the schedule (the default recipe); best: highest PublicTest accuracy")
    p.add_argument("--out", type=Path, required=True,
                   help="output stem: writes STEM_float.tflite, STEM_int8.tflite and .json sidecars")
    p.add_argument("--data", type=Path, default=None,
                   help="data for the representative set and the check (default: the run's)")
    p.add_argument("--no-flip-tta", action="store_true", help="do not average the prediction with the mirrored face")
    return p.parse_args(argv)


def inference_model(run_dir: Path, checkpoint: str, flip_tta: bool):
    """The trained network in float32, ending in softmax, optionally averaged with its mirror image."""
    import keras

    from training.models import build

    state = json.loads((run_dir / "state.json").read_text())
    keras.mixed_precision.set_global_policy("float32")
    net = build(state["args"]["arch"], size=state["args"].get("input_size"))
    net.load_weights(run_dir / f"{checkpoint}.keras")
    inp = keras.Input(net.input_shape[1:], name="face")
    logits = net(inp)
    if flip_tta:
        mirrored = keras.ops.flip(inp, axis=2)
        logits = keras.layers.Average()([logits, net(mirrored)])
    out = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inp, out), state, net.count_params()


def convert(model, representative: np.ndarray | None) -> bytes:
    """TFLite bytes: float32, or full-integer int8 calibrated on `representative` images."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        # A SavedModel freezes the weights into constants; the batch dimension stays dynamic.
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _convert(conv, representative)


def _convert(conv, representative: np.ndarray | None) -> bytes:
    import tensorflow as tf

    if representative is not None:
        def samples():
            for img in representative:
                yield [img[None, ..., None].astype(np.float32)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = samples
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def git_commit() -> str:
    """The current commit of the project, or 'unknown'."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sidecar(state: dict, params: int, flip_tta: bool, quant: str, checkpoint: str, n_train: int) -> dict:
    """Labels, preprocessing and provenance of an exported model."""
    a = state["args"]
    return {
        "labels": list(data.LABELS),
        "input_size": [data.SIZE, data.SIZE],
        "color": "gray",
        "normalization": {"scale": 1.0, "offset": 0.0,
                          "note": "pixels 0..255; the model rescales inside"},
        "output": "probabilities",
        "test_time_augmentation": "horizontal flip averaged" if flip_tta else "none",
        "quantization": quant,
        "arch": a["arch"],
        "parameters": params,
        "training": {"data": f"FER-2013 Training split ({n_train:,} images)"
                             + (", less those FER+ dropped; FER+ votes in the targets"
                                if a.get("ferplus") not in (None, "None") else "")
                             + (", distilled from the teacher's scores (python -m training.teacher)"
                                if a.get("teacher") not in (None, "None") else ""),
                     "command": state["command"],
                     "checkpoint": checkpoint, "epochs": state["epoch"], "precision": state["precision"],
                     "wall_minutes": round(state["wall_seconds"] / 60, 1),
                     "best_public_test_epoch": state["best_epoch"]},
        "exported": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "metrics": {},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from training.evaluate import evaluate_model

    model, state, params = inference_model(args.run_dir, args.checkpoint, not args.no_flip_tta)
    splits = data.load(args.data or Path(state["args"]["data"]))
    rng = np.random.default_rng(0)
    train = splits["Training"]
    rep = train.x[rng.choice(len(train), min(REPRESENTATIVE, len(train)), replace=False)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    paths = {}
    for quant, reps in (("float32", None), ("int8", rep)):
        path = args.out.parent / f"{args.out.name}_{'float' if quant == 'float32' else 'int8'}.tflite"
        path.write_bytes(convert(model, reps))
        n_train = min(len(train), state["args"].get("limit") or len(train))
        meta = sidecar(state, params, not args.no_flip_tta, quant, args.checkpoint, n_train)
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        paths[quant] = path
    val = splits["PublicTest"]
    results = {q: evaluate_model(p, val, latency_runs=0) for q, p in paths.items()}
    agree = float(np.mean(results["float32"]["pred"] == results["int8"]["pred"]))
    drop = results["float32"]["accuracy"] - results["int8"]["accuracy"]
    for quant, path in paths.items():
        meta = json.loads(path.with_suffix(".json").read_text())
        meta["metrics"]["PublicTest"] = {"accuracy": round(results[quant]["accuracy"], 4),
                                         "macro_f1": round(results[quant]["macro_f1"], 4)}
        if quant == "int8":
            meta["metrics"]["int8_vs_float"] = {"top1_agreement": round(agree, 4), "accuracy_drop": round(drop, 4)}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB, PublicTest accuracy {results[quant]['accuracy']:.4f}")
    print(f"int8 vs float on PublicTest: top-1 agreement {agree:.4f}, accuracy drop {drop * 100:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
