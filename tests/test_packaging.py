"""The wheel: it carries the shipped models, and not the comparison models kept beside them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_runtime_models_and_leaves_the_comparison_models_out(tmp_path: Path) -> None:
    # No build isolation: the dev extra installs setuptools and wheel, and nothing is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("edge_fer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("edge_fer_int8.tflite", "edge_fer_int8.json", "face_detection_yunet_2023mar.onnx",
                    "YUNET-LICENSE", "face_framing.json"):
        assert f"edge_fer/models/{shipped}" in names
    compared = sorted(p.name for p in (ROOT / "models" / "compare").glob("*.tflite"))
    assert compared, "models/compare holds the comparison models (VGG16)"
    assert not [n for n in names if "compare" in n or n.endswith(tuple(compared)) or "_float." in n]
    assert max(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names) < 2_000_000
