"""One emulated Arm core's checks for .ci/aarch64: installed files, --image against x86, --check-config, the daemon."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.broker import Broker, Subscriber  # noqa: E402
from tests.conftest import ASTRONAUT, FER_TARBALL, NO_FACE_IMAGES, paste_faces, write_video  # noqa: E402

# Boxes must be identical: the same OpenCV release on the same pixels, only its SIMD kernels differ, and the
# inputs are fixed, so a difference is the same on every run, never a fluke.
BOX_TOLERANCE_PX = 0
# The int8 model's output is quantized in steps of 1/256, averaged with the mirrored face's: one step of
# rounding difference between XNNPACK's x86 and NEON int8 kernels moves a score by at most 1/256 (0.0039).
# Two steps allow for the rounding in the crop's resize as well; anything larger is a real difference.
SCORE_TOLERANCE = 2 / 256
# Every other number of a face (landmarks in px to 0.1, the detector's score): one step of the landmarks'
# rounding, for float sums the two architectures order differently.
OTHER_TOLERANCE = 0.1


def largest_difference(a: object, b: object) -> float:
    """The largest absolute difference between the numbers of two JSON values; inf where their shapes differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else float("inf")


class Checks:
    """Counts failures and prints one PASS/FAIL line per check."""

    def __init__(self, cpu: str) -> None:
        self.cpu = cpu
        self.failed = 0

    def report(self, ok: bool, what: str, why: str = "") -> bool:
        """One line; `why` is shown only on failure."""
        print(f"{'PASS' if ok else 'FAIL'} aarch64 {self.cpu}: {what}{'' if ok or not why else ': ' + why}", flush=True)
        self.failed += not ok
        return ok


class Runner:
    """edge-fer under qemu on one core, and the same wheel on x86, each in a directory with no config.yaml."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cwd = args.work / f"cwd-{args.cpu}"
        self.cwd.mkdir(exist_ok=True)
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISPLAY", "NOTIFY_SOCKET")}
        self.env_x86 = {**base, "PYTHONPATH": str(args.x86)}
        self.env_arm = base

    def arm_python(self) -> list[str]:
        """The venv's Python under qemu, on this core."""
        return [str(self.args.qemu), "-L", str(self.args.root), "-cpu", self.args.cpu,
                str(self.args.venv / "bin" / "python")]

    def arm(self, *argv: str) -> list[str]:
        """edge-fer under qemu, through the entry-point script pip wrote into the venv."""
        return [*self.arm_python(), str(self.args.venv / "bin" / "edge-fer"), *argv]

    def x86(self, *argv: str) -> list[str]:
        """edge-fer on x86, from the wheel's --target folder (put on PYTHONPATH by run)."""
        return [sys.executable, "-m", "edge_fer", *argv]

    def run(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        """Run either side's command in the scratch folder and capture its output."""
        env = self.env_x86 if cmd[0] == sys.executable else self.env_arm
        return subprocess.run(cmd, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=timeout)


def print_versions(c: Checks, r: Runner) -> None:
    """Which releases each side runs, and where its edge_fer comes from."""
    code = ("import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in "
            "('numpy', 'opencv-python-headless', 'ai-edge-litert', 'paho-mqtt', 'PyYAML', 'pillow')), end=''); "
            "import edge_fer; print('; edge_fer from', edge_fer.__file__)")
    for side, python in (("x86", [sys.executable]), ("aarch64", r.arm_python())):
        print(f"INFO aarch64 {c.cpu}: {side} runs {r.run([*python, '-c', code]).stdout.strip()}", flush=True)


def check_installed_files(c: Checks, wheel: Path, venv: Path) -> None:
    """Every file the wheel ships is installed byte for byte, and every model file in models/ is shipped."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if ".dist-info/" not in n and not n.endswith("/")]
        differ = [n for n in names if not (site / n).is_file() or (site / n).read_bytes() != z.read(n)]
    c.report(not differ, f"{len(names)} files of the wheel installed unchanged", ", ".join(differ))
    # pyproject's package-data decides what ships; a new kind of model file must not be left behind.
    models = [p.name for p in (REPO / "models").iterdir()
              if p.is_file() and "_float." not in p.name and p.suffix != ".pyc"]
    missing = [m for m in models if f"edge_fer/models/{m}" not in names]
    c.report(not missing, f"the wheel ships every file of models/ ({', '.join(sorted(models))})",
             "missing " + ", ".join(missing))


def make_images(folder: Path) -> list[Path]:
    """The example photo, and FER-2013 PrivateTest faces pasted into frames (made here, never committed)."""
    folder.mkdir(exist_ok=True)
    paths = [folder / "astronaut.png"]
    shutil.copy(ASTRONAUT, paths[0])
    if not FER_TARBALL.exists():
        print(f"SKIP aarch64: FER-2013 is not at {FER_TARBALL}; only the example photo is compared", flush=True)
        return paths
    from training import data

    faces = data.load(FER_TARBALL)["PrivateTest"].x
    busy = cv2.imread(str(NO_FACE_IMAGES[0]))
    for k in range(6):
        frame, _ = paste_faces([faces[2 * k], faces[2 * k + 1]], size=160, background=busy if k >= 4 else None)
        paths.append(folder / f"fer_private_{2 * k}_{2 * k + 1}.png")
        cv2.imwrite(str(paths[-1]), frame)
    return paths


def parse_json_lines(stdout: str) -> dict[str, dict]:
    """--json output by image file name."""
    docs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {Path(d["image"]).name: d for d in docs}


def top(face: dict) -> str:
    """The face's top-scoring emotion, judged or not."""
    return max(face["scores"], key=face["scores"].__getitem__)


def compare_image(c: Checks, name: str, x86: dict, arm: dict) -> None:
    """Same faces in the same boxes; scores and other numbers within their tolerances; the same emotion unless tied."""
    fx, fa = x86["faces"], arm["faces"]
    if len(fx) != len(fa):
        c.report(False, f"--image {name}: x86 found {len(fx)} faces, aarch64 {len(fa)}")
        return
    pairs = list(zip(fx, fa))
    box = max((largest_difference(a["box"], b["box"]) for a, b in pairs), default=0)
    score = max((largest_difference([a["scores"], a["confidence"]], [b["scores"], b["confidence"]])
                 for a, b in pairs), default=0.0)
    # The label and its "unsure" reason follow from the scores and the measures compared here; a face at a rule's
    # edge may be judged on one side and not on the other, so the top score's label is what must agree.
    judged = ("box", "scores", "confidence", "emotion", "unsure")
    other = max((largest_difference({k: v for k, v in a.items() if k not in judged},
                                    {k: v for k, v in b.items() if k not in judged})
                 for a, b in pairs), default=0.0)
    # A near tie may rank the top two the other way round; within the tolerance that is the same answer.
    labels_ok = all(top(a) == top(b) or abs(a["scores"][top(a)] - a["scores"][top(b)]) <= SCORE_TOLERANCE
                    for a, b in pairs)
    ok = box <= BOX_TOLERANCE_PX and score <= SCORE_TOLERANCE and other <= OTHER_TOLERANCE and labels_ok
    emotions = ", ".join(f["emotion"] for f in fa) or "none"
    c.report(ok, f"--image {name}: {len(fa)} face(s) ({emotions}) against x86, largest difference: box {box:g} px "
             f"(allowed {BOX_TOLERANCE_PX}), score {score:.4f} (allowed {SCORE_TOLERANCE:.4f}), "
             f"other numbers {other:g} (allowed {OTHER_TOLERANCE:g}){'' if labels_ok else '; emotions differ'}")


def check_images(c: Checks, r: Runner, images: list[Path]) -> None:
    """--image --json on every picture, x86 and aarch64, compared."""
    argv = ["--image", *map(str, images), "--json"]
    x86 = r.run(r.x86(*argv))
    t0 = time.monotonic()
    arm = r.run(r.arm(*argv))
    seconds = time.monotonic() - t0
    if not c.report(x86.returncode == 0 and arm.returncode == 0, "--image exits 0 on both",
                    f"x86 {x86.returncode}, aarch64 {arm.returncode}: {x86.stderr[-500:]}{arm.stderr[-2000:]}"):
        return
    dx, da = parse_json_lines(x86.stdout), parse_json_lines(arm.stdout)
    c.report(sorted(dx) == sorted(da) == sorted(p.name for p in images), f"--image answered all {len(images)} images")
    for name in sorted(dx.keys() & da.keys()):
        compare_image(c, name, dx[name], da[name])
    # Images where nothing is found compare nothing: most must have faces for the check to mean something.
    faces, with_faces = sum(len(d["faces"]) for d in dx.values()), sum(bool(d["faces"]) for d in dx.values())
    c.report(2 * with_faces >= len(images),
             f"the comparison covers {faces} faces, in {with_faces} of {len(images)} images")
    print(f"INFO aarch64 {c.cpu}: --image on {len(images)} images took {seconds:.0f} s under emulation "
          "(not a Raspberry Pi figure)", flush=True)


def check_config(c: Checks, r: Runner) -> None:
    """--check-config prints the same merged config on both; a bad key is the same one-line error, status 2."""
    cfg = r.cwd / "check.yaml"
    cfg.write_text(yaml.safe_dump({"camera": {"source": "/dev/video0", "fps": 10.0},
                                   "mqtt": {"host": "127.0.0.1", "device_id": "pi"}}))
    good = ("--check-config", "--config", str(cfg))
    x86, arm = r.run(r.x86(*good)), r.run(r.arm(*good))
    c.report(arm.returncode == 0 and arm.stdout == x86.stdout and "/dev/video0" in arm.stdout,
             "--check-config prints the same merged config as x86", f"status {arm.returncode} {arm.stderr[-500:]}")
    bad = ("--check-config", "--config", str(cfg), "--set", "camera.no_such_key=1")
    x86, arm = r.run(r.x86(*bad)), r.run(r.arm(*bad))
    c.report(arm.returncode == 2 and arm.stderr == x86.stderr and arm.stderr.startswith("edge-fer: ")
             and arm.stderr.count("\n") == 1, "an unknown key is one line on stderr, status 2, as on x86",
             f"status {arm.returncode}: {arm.stderr[-500:]}")


def face_video(folder: Path) -> Path:
    """3 s of the astronaut's face, then 3 s of an empty frame, at 5 fps (slow enough for emulation)."""
    photo = cv2.resize(cv2.imread(str(ASTRONAUT)), (480, 480))
    face = np.full((480, 640, 3), 128, np.uint8)
    face[:, 80:560] = photo
    blank = np.full_like(face, 128)
    return write_video(folder / "astronaut.avi", [face] * 15 + [blank] * 15, fps=5.0)


def check_daemon(c: Checks, r: Runner) -> None:
    """The daemon on a video file with a real mosquitto: start and end events, availability, a clean exit."""
    video = face_video(r.cwd)
    broker = Broker(r.cwd).start()
    device = f"aarch64-{c.cpu}"
    sub = Subscriber(broker.port, topic=f"edge_fer/{device}/#")
    try:
        cfg = r.cwd / "daemon.yaml"
        cfg.write_text(yaml.safe_dump({
            "camera": {"source": str(video), "fps": 5.0},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": device, "discovery": False},
            "tracking": {"max_missing_seconds": 1.0},
        }))
        t0 = time.monotonic()
        proc = r.run(r.arm("--config", str(cfg)), timeout=600)
        seconds = time.monotonic() - t0
        sub.wait_for(lambda s: [m.payload for m in s.on("availability")][-1:] == [b"offline"], 10)
        events = [m.json() for m in sub.on("/events")]
        kinds = [e["type"] for e in events]
        starts = {e["track_id"] for e in events if e["type"] == "start"}
        ends = {e["track_id"] for e in events if e["type"] == "end"}
        availability = [m.payload.decode() for m in sub.on("availability")]
        c.report(proc.returncode == 0, "the daemon ran the video to its end and exited 0",
                 f"status {proc.returncode}: {proc.stderr[-1500:]}")
        first = f"{events[0]['emotion']} {events[0]['confidence']:.2f}" if events else "none"
        c.report(bool(starts) and starts == ends, f"the daemon published {', '.join(kinds)} events over MQTT "
                 f"(first: {first})", "a track without both a start and an end")
        c.report(availability[:1] == ["online"] and availability[-1:] == ["offline"],
                 "availability went online, then offline", f"{availability}")
        print(f"INFO aarch64 {c.cpu}: the 6 s daemon video took {seconds:.0f} s under emulation, start included "
              "(not a Raspberry Pi figure)", flush=True)
    finally:
        sub.close()
        broker.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--wheel", type=Path, required=True, help="the project's wheel, as installed in --venv")
    p.add_argument("--x86", type=Path, required=True, help="the same wheel installed with pip --target on x86")
    p.add_argument("--qemu", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True, help="the arm64 Debian root (qemu's -L)")
    p.add_argument("--venv", type=Path, required=True, help="the aarch64 venv holding the wheel")
    p.add_argument("--cpu", required=True, help="the core qemu emulates, e.g. cortex-a72")
    p.add_argument("--work", type=Path, required=True, help="a scratch folder")
    args = p.parse_args()
    c, r = Checks(args.cpu), Runner(args)
    print_versions(c, r)
    check_installed_files(c, args.wheel, args.venv)
    check_images(c, r, make_images(args.work / "images"))
    check_config(c, r)
    check_daemon(c, r)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
