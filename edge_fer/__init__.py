"""edge-fer: facial emotion recognition on small devices, from photos, cameras and MQTT."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# The public names load OpenCV and the model runtime on first use, so that the event, MQTT and recorder
# modules (which import this package) stay light.
_PUBLIC = {"Analyzer": "vision.analyze", "Face": "types", "analyze_image": "vision.analyze",
           "EmotionClassifier": "vision.classifier", "FaceDetector": "vision.detector",
           "HaarDetector": "vision.detector", "YuNetDetector": "vision.detector"}
__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"edge_fer.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'edge_fer' has no attribute {name!r}")
