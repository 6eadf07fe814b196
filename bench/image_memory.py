"""Peak memory (RSS) of the one-shot mode on large photos: the budget README states.

    python bench/image_memory.py [--megapixels 49]

Each photo is made here (an RGB, an RGBA and a 16-bit gray PNG, with a few lines drawn so that it
compresses to under a megabyte), then `edge-fer --image PHOTO --annotate OUT` runs in a fresh
process that reports its own peak RSS (getrusage ru_maxrss) when done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RUN = ("import resource, sys; from edge_fer.cli.main import main; status = main(sys.argv[1:]); "
       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr); sys.exit(status)")


def make(kind: str, side: int, path: Path) -> Path:
    """A side x side PNG of one kind: 'RGB', 'RGBA' or 'I;16'."""
    if kind == "I;16":
        pixels = np.zeros((side, side), np.uint16)
        pixels[::50] = 60000
    else:
        pixels = np.zeros((side, side, len(kind)), np.uint8)
        pixels[::50] = 255
        if kind == "RGBA":
            pixels[..., 3] = 200
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


def peak_mb(*argv: str) -> int:
    """Peak RSS in MiB of one edge-fer run in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", RUN, *argv], env=env, capture_output=True, text=True, check=True)
    return int(res.stderr.split()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megapixels", type=float, default=49.0)
    args = p.parse_args()
    side = int((args.megapixels * 1e6) ** 0.5)
    print(f"{date.today()}: peak RSS of edge-fer --image on {side}x{side} PNGs")
    print("| photo | file size | peak RSS, --image | peak RSS, --image --annotate |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        small = peak_mb("--image", str(ROOT / "examples" / "astronaut.png"))
        print(f"| astronaut.png (512x512, for the baseline) | - | {small} MiB | - |")
        for kind in ("RGB", "RGBA", "I;16"):
            photo = make(kind, side, Path(tmp) / f"{kind.replace(';', '')}.png")
            plain = peak_mb("--image", str(photo))
            drawn = peak_mb("--image", str(photo), "--annotate", str(Path(tmp) / "out.png"))
            print(f"| {side}x{side} {kind} | {photo.stat().st_size // 1024} KiB | {plain} MiB | {drawn} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
