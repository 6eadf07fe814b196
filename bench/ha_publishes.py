"""State publishes per minute, and the state changes Home Assistant would record from them, on one video.

    git -C /work/main archive --prefix=edge-fer-old/ HEAD | tar -x -C /tmp     # the code before, untouched tree
    python bench/ha_publishes.py --video visits --tree /tmp/edge-fer-old
    python bench/ha_publishes.py --video visits                               # this tree

The daemon of --tree (default: this repository) runs as a subprocess pinned to one core (taskset -c 1) on a
looping video, publishing to a real mosquitto on loopback; a subscriber counts what arrives on the retained
`state` topic and the events, from the first event for --seconds. Two videos, both built here from FER-2013
PrivateTest faces (../shared/data, as the tests find it), the same for every tree:

- `visits` (15 fps, 30 s a loop, camera noise and a 2 px jitter): one person for 10 s whose face changes from
  happy to surprised to neutral, nobody for 4 s, two people for 12 s (one changes), nobody for 4 s;
- `blink` (bench/daemon.py's video at 30 fps, and its max_missing_seconds 0.3): twenty faces each in view for
  0.5 s and gone for 0.5 s, on a busy photo: a track starts and ends every second.

Everything else is each tree's own default (the keep-alive mqtt.state_interval_seconds was 5 s before, 60 s now).

"HA rows" replays every state message through the tree's own discovery (the retained config it announced):
each entity whose state or attributes change is one row in Home Assistant's recorder, as HA writes a state only
when one of them differs. Templates are rendered with jinja2, as Home Assistant renders them (`value_json`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_fer.vision.images import read_image  # noqa: E402
from tests.broker import Broker, Message, Subscriber  # noqa: E402
from tests.conftest import FER_TARBALL, NO_FACE_IMAGES, paste_faces, write_video  # noqa: E402
from training import data  # noqa: E402

HAPPY, SAD, SURPRISE, NEUTRAL = 3, 4, 5, 6


def _jittered(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame as a camera delivers it: shifted up to 2 px and with sensor noise."""
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    moved = np.roll(frame, (dy, dx), axis=(0, 1))
    noise = rng.normal(0, 3.0, frame.shape)
    return np.clip(moved.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def visits_video(path: Path, faces: data.Split) -> Path:
    """The `visits` loop (see the module's docstring) at 15 fps."""
    rng = np.random.default_rng(0)

    def face(label: int, i: int = 0) -> np.ndarray:
        return faces.x[np.flatnonzero(faces.y == label)[i]]

    fps = 15
    scenes: list[tuple[float, list[np.ndarray]]] = [
        (4, [face(HAPPY)]), (3, [face(SURPRISE)]), (3, [face(NEUTRAL)]), (4, []),
        (6, [face(HAPPY, 1), face(NEUTRAL, 1)]), (6, [face(SAD), face(NEUTRAL, 1)]), (4, []),
    ]
    frames = []
    for seconds, shown in scenes:
        still, _ = paste_faces(shown, size=170)
        frames += [_jittered(still, rng) for _ in range(int(seconds * fps))]
    return write_video(path, frames, fps=fps)


def blink_video(path: Path, faces: data.Split) -> Path:
    """bench/daemon.py's video: a happy face for 15 frames, none for 15, twenty faces, on a busy photo."""
    busy = read_image(NO_FACE_IMAGES[0], 10**8)
    blank, _ = paste_faces([], background=busy)
    frames = []
    for i in range(0, 40, 2):
        shown, _ = paste_faces([faces.x[np.flatnonzero(faces.y == HAPPY)[i]]], size=160, background=busy)
        frames += [shown] * 15 + [blank] * 15
    return write_video(path, frames, fps=30)


def config(video: str, source: Path, port: int) -> dict[str, Any]:
    """The daemon's configuration for `video`: the tree's defaults, but for bench/daemon.py's `blink` settings."""
    cfg: dict[str, Any] = {"camera": {"source": str(source), "loop": True},
                           "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "bench"},
                           "logging": {"level": "WARNING"}}
    if video == "blink":
        cfg["camera"]["file_fps"] = 30.0
        cfg["tracking"] = {"max_missing_seconds": 0.3}
    return cfg


class Entity:
    """One Home Assistant entity fed by the state topic, as HA's MQTT integration would keep it."""

    def __init__(self, name: str, comp: dict[str, Any], env: jinja2.Environment) -> None:
        self.name = name
        self.value = env.from_string(comp.get("value_template", "{{ value }}"))
        template = comp.get("json_attributes_template")
        self.attributes = env.from_string(template) if template else None
        self.whole_payload = template is None and bool(comp.get("json_attributes_topic"))
        self.last: tuple[str, str] | None = None
        self.rows = 0

    def receive(self, payload: dict[str, Any]) -> None:
        """One state message: a row when the entity's state or attributes differ from the last ones."""
        value = self.value.render(value_json=payload, value=json.dumps(payload)).strip()
        if self.attributes is not None:
            attrs = self.attributes.render(value_json=payload, value=json.dumps(payload)).strip()
        else:
            attrs = json.dumps(payload, sort_keys=True) if self.whole_payload else ""
        if (value, attrs) != self.last:
            if self.last is not None:
                self.rows += 1
            self.last = (value, attrs)


def ha_entities(discovery: dict[str, Any], state_topic: str) -> list[Entity]:
    """The entities of a device discovery payload that read the state topic."""
    env = jinja2.Environment()
    shared = discovery.get("state_topic")
    return [Entity(name, comp, env) for name, comp in discovery["components"].items()
            if comp.get("platform") != "device_automation" and comp.get("state_topic", shared) == state_topic]


def run(tree: Path, video_name: str, seconds: float, faces: data.Split) -> dict[str, Any]:
    """Run the tree's daemon on the video; the figures of the measured window."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        make = visits_video if video_name == "visits" else blink_video
        video = make(tmpdir / f"{video_name}.avi", faces)
        broker = Broker(tmpdir).start()
        path = tmpdir / "c.yaml"
        path.write_text(yaml.safe_dump(config(video_name, video, broker.port)))
        sub = Subscriber(broker.port, "#")
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "edge_fer", "--config", str(path)],
                                cwd=tree, env=env, stderr=subprocess.PIPE, text=True)
        try:
            if not sub.wait_for(lambda s: bool(s.on("/events")), 120):
                raise SystemExit(f"{tree}: no event within 120 s")
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            sub.close()
            broker.stop()
    if "Traceback" in err:
        raise SystemExit(f"{tree}: the daemon failed:\n{err[-3000:]}")

    def within(m: Message) -> bool:
        return t0 <= m.received < t1

    states = [m for m in sub.on("edge_fer/bench/state") if within(m)]
    events = Counter(m.json()["type"] for m in sub.on("edge_fer/bench/events") if within(m))
    discovery = [m for m in sub.messages if m.topic.startswith("homeassistant/device/") and m.payload]
    entities = ha_entities(discovery[-1].json(), "edge_fer/bench/state") if discovery else []
    before = [m for m in sub.on("edge_fer/bench/state") if m.received < t0][-1:]
    for m in before + states:  # the last state before the window sets where each entity starts
        for e in entities:
            e.receive(m.json())
    minutes = (t1 - t0) / 60
    return {"tree": str(tree), "video": video_name, "seconds": round(t1 - t0, 1),
            "state_publishes_per_minute": round(len(states) / minutes, 1),
            "events_per_minute": {k: round(v / minutes, 1) for k, v in sorted(events.items())},
            "ha_rows_per_minute": round(sum(e.rows for e in entities) / minutes, 1),
            "ha_rows_per_minute_by_entity": {e.name: round(e.rows / minutes, 1) for e in entities}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="the edge-fer tree whose daemon runs (default: this one)")
    p.add_argument("--video", choices=("visits", "blink"), default="visits")
    p.add_argument("--seconds", type=float, default=120.0, help="the measured window, from the first event")
    p.add_argument("--data", type=Path, default=FER_TARBALL)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if not (args.tree / "edge_fer" / "__main__.py").exists():
        raise SystemExit(f"{args.tree}: not an edge-fer tree")
    faces = data.load(args.data)["PrivateTest"]
    figures = run(args.tree.resolve(), args.video, args.seconds, faces)
    figures["date"] = date.today().isoformat()
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
