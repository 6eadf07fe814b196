"""The web view's cost and isolation: CPU per frame with a viewer or none, event latency, 10 streams, one stalled.

    taskset -c 1 python bench/web.py --seconds 60 [--browser]

The daemon runs as a subprocess (on the cores this script may use: pin it with taskset) on a looping 640x480
video of the faces the repository ships, pasted on a busy photo, coming and going (a face for --face-seconds,
none for as long), delivered at --fps like a camera, publishing to a real mosquitto on loopback, with the web view on at
web.fps 5. Three phases of --seconds each, after a warm-up (the first two in --rounds alternating turns):

1. no client: the daemon's CPU time (utime + stime from /proc) over its frames processed (from /metrics);
2. one viewer: a client that reads the MJPEG stream and the event feed as the page does (or, with --browser,
   Debian's headless chromium on the page itself); the same figure, and the rise over phase 1;
3. ten stream clients, one of them stalled (it connects and never reads): the frames the pipeline took and
   dropped, and each reading client's pictures per second against the rate the hub encoded.

Capture-to-event latency is each start/change event's `latency_ms` on the event feed (capture of the frame that
caused it to its hand-over to the MQTT publisher), p50 and p99 per phase.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.broker import Broker, free_port, until  # noqa: E402
from tests.conftest import NO_FACE_IMAGES, paste_faces, shipped_faces, write_video  # noqa: E402

WEB_FPS = 5.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")) / 1024


def metrics(port: int) -> dict[str, float]:
    """/metrics as name{labels} -> value (labels as the text has them)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Host": "localhost"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class StreamReader(threading.Thread):
    """Reads /stream.mjpg and counts the pictures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.pictures = 0
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/stream.mjpg", headers={"Host": "localhost"})
        resp = conn.getresponse()
        try:
            while not self.done.is_set():
                line = resp.fp.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    resp.fp.readline()
                    resp.fp.read(int(line.split(b":")[1]))
                    self.pictures += 1
        except (OSError, ValueError, AttributeError):
            return
        finally:
            resp.close()
            conn.close()


class EventReader(threading.Thread):
    """Reads /events and keeps each track event's latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/events", headers={"Host": "localhost"})
        resp = conn.getresponse()
        event = ""
        try:
            while not self.done.is_set():
                line = resp.fp.readline().decode()
                if not line:
                    return
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "track":
                    doc = json.loads(line.split(":", 1)[1])
                    if "latency_ms" in doc:
                        self.latencies.append(doc["latency_ms"])
        except (OSError, ValueError, AttributeError):
            return
        finally:
            resp.close()
            conn.close()


def stop_all(*readers: StreamReader | EventReader) -> None:
    for r in readers:
        r.done.set()


def browser(url: str):
    """Headless chromium (Debian's, with its chromedriver) on the page; no driver is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.get(url)
    return driver


def percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "n/a"


def phase(pid: int, port: int, seconds: float) -> dict[str, float]:
    """CPU seconds, frames processed and dropped over `seconds`."""
    m0, c0 = metrics(port), cpu_seconds(pid)
    time.sleep(seconds)
    m1, c1 = metrics(port), cpu_seconds(pid)
    frames = m1["edge_fer_frames_total"] - m0["edge_fer_frames_total"]
    return {"cpu": c1 - c0, "frames": frames, "dropped": m1["edge_fer_dropped_frames_total"]
            - m0["edge_fer_dropped_frames_total"], "encoded": m1["edge_fer_web_encoded_frames_total"]
            - m0["edge_fer_web_encoded_frames_total"], "ms_per_frame": (c1 - c0) / max(frames, 1) * 1000,
            "fps": frames / seconds}


def pooled(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several phases' figures as one: sums, and CPU per frame over all their frames."""
    total = {k: sum(r[k] for r in runs) for k in ("cpu", "frames", "dropped", "encoded")}
    seconds = sum(r["frames"] / r["fps"] for r in runs if r["fps"])
    return {**total, "ms_per_frame": total["cpu"] / max(total["frames"], 1) * 1000,
            "fps": total["frames"] / seconds if seconds else 0.0,
            "spread": max(r["ms_per_frame"] for r in runs) - min(r["ms_per_frame"] for r in runs)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    p.add_argument("--fps", type=float, default=15.0, help="the video is delivered at this rate")
    p.add_argument("--browser", action="store_true", help="phase 2's viewer is headless chromium on the page")
    p.add_argument("--rounds", type=int, default=3, help="phases 1 and 2 alternate this many times")
    p.add_argument("--face-seconds", type=float, default=0.5,
                   help="each face is in view this long, then none for as long (more events, a surer p99)")
    args = p.parse_args()
    faces = [f for name, group in sorted(shipped_faces().items()) for f in group]
    busy = cv2.imread(str(NO_FACE_IMAGES[0]))
    blank, _ = paste_faces([], background=busy)
    per_face = max(1, round(args.fps * args.face_seconds))
    frames = []
    for face in faces:
        shown, _ = paste_faces([face], size=160, background=busy)
        frames += [shown] * per_face + [blank] * per_face
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = write_video(folder / "bench.avi", frames, fps=args.fps)
        broker = Broker(folder).start()
        port = free_port()
        config = folder / "c.yaml"
        config.write_text(yaml.safe_dump({
            "camera": {"source": str(video), "file_fps": args.fps, "loop": True},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": "bench"},
            "tracking": {"max_missing_seconds": 0.2},
            "web": {"enabled": True, "listen": f"127.0.0.1:{port}", "fps": WEB_FPS, "max_streams": 12},
            "logging": {"level": "WARNING"}}))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "--config", str(config)], env=env,
                                stderr=subprocess.DEVNULL)
        try:
            assert until(lambda: _healthy(port), 60), "the daemon's web view did not come up"
            time.sleep(5)  # warm-up: the model's first runs, the first tracks
            rss_web = rss_mib(proc.pid)
            # No client and one viewer in turns, so that a drift of the machine's speed falls on both alike.
            idle_runs, viewed_runs = [], []
            none_events, viewer_events = EventReader(port), EventReader(port)
            for _ in range(args.rounds):
                events = EventReader(port)  # the event feed alone costs next to nothing: it gives the latency
                events.start()
                idle_runs.append(phase(proc.pid, port, args.seconds / args.rounds))
                stop_all(events)
                none_events.latencies += events.latencies
                events = EventReader(port)
                events.start()
                driver, stream = None, None
                if args.browser:
                    driver = browser(f"http://127.0.0.1:{port}/")
                else:
                    stream = StreamReader(port)
                    stream.start()
                time.sleep(2)
                viewed_runs.append(phase(proc.pid, port, args.seconds / args.rounds))
                if driver is not None:
                    driver.quit()
                stop_all(events, *([stream] if stream else []))
                viewer_events.latencies += events.latencies
            idle, viewed = pooled(idle_runs), pooled(viewed_runs)

            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
            readers = [StreamReader(port) for _ in range(9)]
            crowd_events = EventReader(port)
            for r in [*readers, crowd_events]:
                r.start()
            time.sleep(2)
            counts0 = [r.pictures for r in readers]
            crowd = phase(proc.pid, port, args.seconds)
            rates = sorted((r.pictures - c) / args.seconds for r, c in zip(readers, counts0))
            m = metrics(port)
            stalled_closed = m.get('edge_fer_web_refused_total{reason="stalled"}', 0)
            stop_all(*readers, crowd_events)
            stalled.close()
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        rss_off = rss_without_web(config, env)
        broker.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    viewer = "headless chromium on the page" if args.browser else "a client on /stream.mjpg and /events"
    print(f"bench/web.py --seconds {args.seconds:g} --rounds {args.rounds} --fps {args.fps:g} "
          f"--face-seconds {args.face_seconds:g}"
          f"{' --browser' if args.browser else ''}"
          f" ({when}, {os.cpu_count()} CPUs, affinity {sorted(os.sched_getaffinity(0))})")
    print("| phase | fps processed | frames dropped | CPU per frame | capture-to-event p50 / p95 / p99 (events) |")
    print("|---|---|---|---|---|")
    for name, r, ev in (("no client", idle, none_events), (f"one viewer ({viewer})", viewed, viewer_events),
                        ("10 stream clients, 1 stalled", crowd, crowd_events)):
        print(f"| {name} | {r['fps']:.1f} | {r['dropped']:.0f} | {r['ms_per_frame']:.2f} ms | "
              f"{percentile(ev.latencies, 50)} / {percentile(ev.latencies, 95)} / {percentile(ev.latencies, 99)} ms "
              f"({len(ev.latencies)}) |")
    print(f"CPU per frame with one viewer: {viewed['ms_per_frame'] - idle['ms_per_frame']:+.2f} ms over "
          f"{args.rounds} alternating rounds of {args.seconds / args.rounds:g} s each (the rounds of one phase spread "
          f"over {idle['spread']:.2f} ms without a client, {viewed['spread']:.2f} ms with one)")
    print(f"10 clients: hub encoded {crowd['encoded'] / args.seconds:.2f} pictures/s; the 9 reading clients got "
          f"{rates[0]:.2f} (slowest) to {rates[-1]:.2f} (fastest) pictures/s; stalled clients closed: "
          f"{stalled_closed:.0f}")
    print(f"daemon RSS: {rss_off:.1f} MiB with web.enabled false, {rss_web:.1f} MiB with it on and no client "
          f"({rss_web - rss_off:+.1f} MiB), {rss:.1f} MiB after the 10 clients")
    return 0


def rss_without_web(config: Path, env: dict[str, str]) -> float:
    """The same daemon's RSS with the web view off, once it has run as long as the other had at its warm-up."""
    off = config.with_name("off.yaml")
    doc = yaml.safe_load(config.read_text())
    doc["web"]["enabled"] = False
    off.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "--config", str(off)], env=env,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(15)  # model loaded, first tracks: as the web daemon was when measured
        return rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        return conn.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
