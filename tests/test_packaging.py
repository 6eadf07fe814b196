"""The wheel: it carries the shipped models, and not the comparison or float models made beside them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_runtime_models_and_leaves_the_comparison_models_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for part in ("edge_fer", "models"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "compare"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    # What `training.export --out models/compare/...` and an export into models/ leave behind.
    shipped = src / "models" / "edge_fer_int8.tflite"
    (src / "models" / "compare").mkdir()
    shutil.copy(shipped, src / "models" / "compare" / "vgg16_48_int8.tflite")
    shutil.copy(shipped, src / "models" / "edge_fer_float.tflite")
    # No build isolation: the dev extra installs setuptools and wheel, and nothing is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("edge_fer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("edge_fer_int8.tflite", "edge_fer_int8.json", "face_detection_yunet_2023mar.onnx",
                 "YUNET-LICENSE", "face_framing.json"):
        assert f"edge_fer/models/{name}" in names
    assert not [n for n in names if "compare" in n or "vgg16" in n or "_float." in n]
