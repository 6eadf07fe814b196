"""The fleet bench at a small size: devices through a broker crash, nothing lost within each queue's bound."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")


def test_twenty_devices_through_a_broker_crash_lose_nothing_within_their_queue_bound(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    # A queue of 4 and 2 events a second against a broker down for 3 s: some events are over the bound.
    cmd = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--devices", "20", "--seconds", "10",
           "--restart-broker-at", "4", "--down-seconds", "3", "--events-per-minute", "120", "--queue-size", "4",
           "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    f = json.loads(out.read_text())
    assert {"devices", "events_sent", "events_received", "lost", "duplicates", "out_of_order", "p99_latency_ms",
            "bytes_per_device_per_minute"} <= set(f)
    assert f["devices"] == 20 and f["devices_reconnected"] == 20 and f["protocol"] == "5"
    assert f["events_sent"] > 200 and f["events_refused_queue_full"] > 0
    assert f["events_received"] == f["events_sent"] and f["lost"] == 0 and f["out_of_order"] == 0
    assert f["p99_latency_ms"] > 1000 > f["p50_latency_ms"]  # the events held through the crash came late
    assert 0 < f["bytes_per_device_per_minute"]
