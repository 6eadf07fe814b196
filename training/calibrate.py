"""Fit a model's calibration on wild-dev through the pipeline and write it into the model's sidecar.

    python -m training.calibrate models/edge_fer_int8.tflite --wild ../shared/data/wild-dev.tar [--bias --balance 0.5]

The runtime turns the model's scores p into softmax(log(p) / temperature + bias): temperature scaling, and with
`--bias` one offset per label (vector scaling), so that a face called 0.8 is right about 80% of the time.
`--balance` weighs each photo by (1 / its class's count)^power, so the offsets do not learn wild-dev's own mix
of classes. wild-dev is for choosing, and this is a choice made on it: the held-out figures fit on one half of
the photos and measure on the other, both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training import data, suite

FLOOR = 1 / 512  # as the runtime's classifier: int8 probabilities of 0 stay finite in the logarithm


def scaled(probs: np.ndarray, temperature: float, bias: np.ndarray | None = None) -> np.ndarray:
    """Scores after calibration, as the runtime's classifier computes them from the model's probabilities."""
    z = np.log(np.maximum(probs, FLOOR)) / temperature + (0.0 if bias is None else bias)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit(probs: np.ndarray, y: np.ndarray, with_bias: bool, balance: float = 0.0,
        steps: int = 3000, lr: float = 0.05) -> tuple[float, np.ndarray]:
    """Temperature (and per-label bias) of least weighted negative log-likelihood, by gradient descent."""
    log_p = np.log(np.maximum(probs, FLOOR))
    counts = np.bincount(y, minlength=probs.shape[1]).astype(np.float64)
    w = (1.0 / np.maximum(counts[y], 1)) ** balance
    w /= w.sum()
    a, bias = 0.0, np.zeros(probs.shape[1])  # inverse temperature exp(a): positive whatever the step
    for _ in range(steps):
        q = scaled(probs, float(np.exp(-a)), bias)
        g = q.copy()
        g[np.arange(len(y)), y] -= 1
        g *= w[:, None]
        a -= lr * float((g * log_p).sum()) * float(np.exp(a))
        if with_bias:
            bias -= lr * 5 * g.sum(axis=0)
            bias -= bias.mean()  # a common offset changes nothing
    return float(np.exp(-a)), bias


def top_ece(probs: np.ndarray, y: np.ndarray) -> float:
    """ECE of the top score."""
    return suite.ece(probs.argmax(axis=1) == y, probs.max(axis=1))


def held_out(probs: np.ndarray, y: np.ndarray, with_bias: bool, balance: float) -> np.ndarray:
    """Scores of each photo calibrated by a fit on the other half (even and odd photos)."""
    halves = (np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1)
    out = np.zeros_like(probs)
    for fit_on, use in (halves, halves[::-1]):
        t, b = fit(probs[fit_on], y[fit_on], with_bias, balance)
        out[use] = scaled(probs[use], t, b)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a .tflite file with its .json sidecar (rewritten with the calibration)")
    p.add_argument("--wild", type=Path, default=suite.parse_args(["x"]).wild, help="wild-dev.tar or its folder")
    p.add_argument("--bias", action="store_true", help="also fit one offset per label (vector scaling)")
    p.add_argument("--balance", type=float, default=0.0, help="weigh photos by (1 / class count)^POWER")
    p.add_argument("--limit", type=int, default=0, help="only N photos (smoke runs)")
    args = p.parse_args(argv)
    for path in (args.wild, args.model):
        if not path.exists():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    photos = suite.read_wild(args.wild, args.limit)
    scored, _ = suite.wild_scores(args.model, photos, raw=True)
    probs, y = scored.probs[scored.found], scored.y[scored.found]
    t, bias = fit(probs, y, args.bias, args.balance)
    after, kept = scaled(probs, t, bias), held_out(probs, y, args.bias, args.balance)
    held = suite.metrics(suite.Scored(y, kept, np.ones(len(y), bool)))
    # The sidecar's labels may be in another order than FER-2013's codes, which the suite's scores use.
    meta = json.loads(args.model.with_suffix(".json").read_text())
    order = [data.LABELS.index(name) for name in meta["labels"]]
    result = {"temperature": round(t, 4), **({"bias": [round(float(bias[k]), 4) for k in order]} if args.bias else {}),
              "fitted_on": f"wild-dev through the pipeline ({len(y)} faces found)",
              "method": f"vector scaling (balance power {args.balance})" if args.bias else "temperature scaling",
              "wild_dev_ece_before": round(top_ece(probs, y), 4), "wild_dev_ece_after": round(top_ece(after, y), 4),
              "wild_dev_ece_held_out": round(top_ece(kept, y), 4),
              **{f"wild_dev_{k}_held_out": round(held[k], 4) for k in ("accuracy", "balanced_accuracy")}}
    meta["calibration"] = result
    side = args.model.with_suffix(".json")
    tmp = side.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(side)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
