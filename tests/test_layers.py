"""The import graph: plain data and the messaging modules stay below the vision stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

VISION = ("cv2", "numpy", "PIL", "ai_edge_litert", "edge_fer.vision.analyze", "edge_fer.live.capture",
          "edge_fer.live.tracking")


def test_events_mqtt_publisher_and_record_load_without_the_vision_stack() -> None:
    code = ("import json, sys; import edge_fer.messaging.events, edge_fer.messaging.mqtt, "
            "edge_fer.messaging.publisher, edge_fer.recorder.record, "
            f"edge_fer.types; print(json.dumps([m for m in {VISION!r} if m in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The package's public names still load on first use.
    code = "import edge_fer; print(edge_fer.Analyzer.__module__, edge_fer.Face.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["edge_fer.vision.analyze", "edge_fer.types"]
