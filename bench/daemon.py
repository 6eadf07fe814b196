"""The daemon's own figures on a video file: fps on one core, CPU per frame, capture-to-event latency, RSS.

    python bench/daemon.py --minutes 10 [--data ../shared/data/fer2013.tar.gz]

The daemon runs as a subprocess pinned to one core (taskset -c 1) on a looping 640x480 video
of FER-2013 PrivateTest faces that come and go on a busy photo, delivered at --fps like a
camera, publishing to a real mosquitto on loopback. "Most fps on one core" is 1000 / CPU ms per
frame: the rate at which the pipeline would saturate the core. A subscriber on
the same machine takes receive time minus the event's `frame_ts` as capture-to-event latency.
RSS and CPU time come from /proc at the first event and at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_fer.vision.images import read_image  # noqa: E402
from tests.broker import Broker, Subscriber  # noqa: E402
from tests.conftest import FER_TARBALL, NO_FACE_IMAGES, paste_faces, write_video  # noqa: E402
from training import data  # noqa: E402


def proc_figures(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=30.0, help="the video is delivered at this rate")
    p.add_argument("--data", type=Path, default=FER_TARBALL)
    args = p.parse_args()
    faces = data.load(args.data)["PrivateTest"]
    busy = read_image(NO_FACE_IMAGES[0], 10**8)
    blank, _ = paste_faces([], background=busy)
    frames = []
    for i in range(0, 40, 2):  # a face for 15 frames, none for 15, twenty faces
        face, _ = paste_faces([faces.x[np.flatnonzero(faces.y == 3)[i]]], size=160, background=busy)
        frames += [face] * 15 + [blank] * 15
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        video = write_video(tmpdir / "bench.avi", frames)
        broker = Broker(tmpdir).start()
        config = tmpdir / "c.yaml"
        config.write_text(yaml.safe_dump({
            "camera": {"source": str(video), "file_fps": args.fps, "loop": True},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": "bench", "state_interval_seconds": 2.0},
            "tracking": {"max_missing_seconds": 0.3},
            "logging": {"level": "WARNING"}}))
        sub = Subscriber(broker.port, "edge_fer/bench/#")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "edge_fer", "--config", str(config)],
                                env=env, stderr=subprocess.DEVNULL)
        sub.wait_for(lambda s: len(s.on("/events")) > 0, 60)
        rss0, cpu0 = proc_figures(proc.pid)
        t0 = time.monotonic()
        frames0 = max([m.json()["frames"] for m in sub.on("/state")] or [0])
        time.sleep(args.minutes * 60)
        rss1, cpu1 = proc_figures(proc.pid)
        elapsed = time.monotonic() - t0
        states = [m.json() for m in sub.on("/state")]
        frames1, dropped = states[-1]["frames"], states[-1]["dropped_frames"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        sub.close()
        broker.stop()
    latencies = []
    for m in sub.on("/events"):
        doc = m.json()
        if "frame_ts" in doc:
            sent = datetime.fromisoformat(doc["frame_ts"].replace("Z", "+00:00")).timestamp()
            latencies.append((m.received - sent) * 1000)
    n = frames1 - frames0
    print(f"run: {elapsed / 60:.1f} min after the first event, {n} frames, {len(latencies)} start/change events")
    cpu_ms = (cpu1 - cpu0) / max(n, 1) * 1000
    print(f"delivered {args.fps:.0f} fps, processed {n / elapsed:.1f} fps, {dropped} frames dropped in all; "
          f"CPU per frame {cpu_ms:.1f} ms, so at most {1000 / cpu_ms:.0f} fps on one core")
    print(f"capture-to-event latency: p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms")
    print(f"RSS: {rss0:.1f} MiB at the first event, {rss1:.1f} MiB at the end ({(rss1 / rss0 - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
