"""Peak memory (RSS) of edge-fer's runs, for a Raspberry Pi's memory budget.

    python bench/memory.py [--seconds 30] [--set detector.backend=haar ...]

Each case is `python -m edge_fer` in its own process pinned to core 0; its peak RSS is the kernel's
high-water mark for that process (VmHWM in /proc/self/status, read as it exits; ru_maxrss would also
count the forking parent's peak). The cases: --check-config (Python and the
libraries, no model); --image on the example photo (512x512) and on a 12 MP and a 48 MP JPEG made here
(4000x3000 and 8000x6000: the example face on a busy photo, as a phone or a Pi camera module 3 takes
them); the daemon on a looping 640x480 video of that face coming and going, with a real mosquitto on
loopback, for --seconds after its first event; and the same daemon with its window, on Xvfb where it
is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.broker import Broker, Subscriber  # noqa: E402
from tests.conftest import ASTRONAUT, NO_FACE_IMAGES, write_video  # noqa: E402

ENV = {**{k: v for k, v in os.environ.items() if k != "DISPLAY"}, "PYTHONPATH": str(ROOT)}
# python -m edge_fer that writes its own peak RSS (KiB) to the file named by its first argument on exit.
WITH_PEAK = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def write_peak():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kib)
atexit.register(write_peak)
sys.argv[0] = "edge-fer"
runpy.run_module("edge_fer", run_name="__main__", alter_sys=True)
"""


def edge_fer(peak_file: Path, *argv: str) -> list[str]:
    """The command line of one run, pinned to core 0, writing its peak RSS to peak_file."""
    return ["taskset", "-c", "0", sys.executable, "-c", WITH_PEAK, str(peak_file), *argv]


def peak_mib(proc: subprocess.Popen, peak_file: Path) -> float:
    """Wait for the process and return its peak RSS in MiB."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args[4:]} exited with status {proc.returncode}: {err}")
    return int(peak_file.read_text()) / 1024


def photo(path: Path, width: int, height: int) -> Path:
    """A JPEG of the example face (a fifth of the height) on the busy no-face photo, at width x height."""
    canvas = cv2.resize(cv2.imread(str(NO_FACE_IMAGES[0])), (width, height), interpolation=cv2.INTER_CUBIC)
    side = height // 2
    face = cv2.resize(cv2.imread(str(ASTRONAUT)), (side, side), interpolation=cv2.INTER_CUBIC)
    canvas[height // 4:height // 4 + side, width // 3:width // 3 + side] = face
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def one_shot(tmp: Path, *argv: str) -> float:
    """Peak RSS of a run that ends by itself."""
    peak = tmp / "peak"
    return peak_mib(subprocess.Popen(edge_fer(peak, *argv), env=ENV, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True), peak)


def start_xvfb() -> tuple[subprocess.Popen, str] | None:
    """An Xvfb display on a free number, or None where Xvfb is absent."""
    if shutil.which("Xvfb") is None:
        return None
    n = next(n for n in range(90, 120) if not Path(f"/tmp/.X11-unix/X{n}").exists()
             and not Path(f"/tmp/.X{n}-lock").exists())
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if time.monotonic() > deadline:
            proc.kill()
            return None
        time.sleep(0.05)
    return proc, f":{n}"


def daemon(tmp: Path, video: Path, seconds: float, display: str | None, sets: list[str]) -> tuple[float, int]:
    """Peak RSS of the daemon on the looping video, `seconds` after its first event, and the events seen."""
    broker = Broker(tmp).start()
    sub = Subscriber(broker.port, "edge_fer/memory/#")
    config = tmp / f"daemon-{broker.port}.yaml"
    config.write_text(yaml.safe_dump({
        "camera": {"source": str(video), "fps": 15.0, "loop": True},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": "memory"},
        "display": {"enabled": display is not None, "save_dir": str(tmp)},
        "logging": {"level": "WARNING"}}))
    env = {**ENV, "DISPLAY": display} if display else ENV
    peak = tmp / "peak"
    proc = subprocess.Popen(edge_fer(peak, "--config", str(config), *sets), env=env, stderr=subprocess.PIPE, text=True)
    try:
        if not sub.wait_for(lambda s: len(s.on("/events")) > 0, 60):
            raise RuntimeError("the daemon published no event within 60 s")
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        return peak_mib(proc, peak), len(sub.on("/events"))
    finally:
        if proc.returncode is None:
            proc.kill()
        sub.close()
        broker.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="daemon run after its first event")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config override for every run, e.g. detector.backend=haar")
    args = p.parse_args()
    sets = [arg for override in args.set for arg in ("--set", override)]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rows.append(("--check-config (Python and libraries, no model)", one_shot(tmp, "--check-config", *sets)))
        rows.append(("--image examples/astronaut.png (512x512)", one_shot(tmp, "--image", str(ASTRONAUT), *sets)))
        for w, h in ((4000, 3000), (8000, 6000)):
            image = photo(tmp / f"{w}x{h}.jpg", w, h)
            rows.append((f"--image, {w * h / 1e6:.0f} MP JPEG ({w}x{h})", one_shot(tmp, "--image", str(image), *sets)))
        frame = np.full((480, 640, 3), 128, np.uint8)
        frame[:, 80:560] = cv2.resize(cv2.imread(str(ASTRONAUT)), (480, 480))
        video = write_video(tmp / "face.avi", [frame] * 30 + [np.full_like(frame, 128)] * 30)
        mib, events = daemon(tmp, video, args.seconds, None, sets)
        rows.append((f"daemon, 640x480 video, MQTT, {args.seconds:.0f} s ({events} events)", mib))
        xvfb = start_xvfb()
        if xvfb:
            try:
                mib, events = daemon(tmp, video, args.seconds, xvfb[1], sets)
                rows.append((f"daemon with its window (Xvfb), {args.seconds:.0f} s ({events} events)", mib))
            finally:
                xvfb[0].kill()
                xvfb[0].wait()
    print("| run | peak RSS (MiB) |\n|---|---|")
    for name, mib in rows:
        print(f"| {name} | {mib:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
