"""`edge-fer image`: each photo's faces as a table or JSON, annotated copies, and publishing the results."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TextIO

from edge_fer.cli.parsing import Parser, add_config_options, add_model_option, config_overrides, setup_logging
from edge_fer.config import Config, load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError, WriteError, shown
from edge_fer.types import Face

HELP = "each face of each image: box, emotion, confidence, all seven scores; folders expand to their images"
PATHS_HELP = "images, or folders of images"
JSON_HELP = "one JSON object per image"
ANNOTATE_HELP = "write annotated copies (a folder, or a file for one image)"
PUBLISH_HELP = "also send the results to the MQTT events topic"
# What a camera or video player plays: given as a photo, it gets a pointer to --source, not "not an image".
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                  ".mts", ".m2ts", ".h264", ".h265", ".mjpeg", ".mjpg", ".ogv"}


def build_parser(out: TextIO | None = None) -> Parser:
    """The options of `edge-fer image`."""
    p = Parser(prog="edge-fer image", description="Analyze photos: " + HELP + ".", out=out)
    p.add_argument("image", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--annotate", metavar="OUT", help=ANNOTATE_HELP)
    p.add_argument("--publish", action="store_true", help=PUBLISH_HELP)
    add_model_option(p)
    add_config_options(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Load the config (the MQTT password only with --publish) and answer for each image."""
    from edge_fer.live.capture import quiet_native_logs

    quiet_native_logs()
    cfg = load(args.config, config_overrides(args), secrets=args.publish)
    setup_logging(cfg.logging.level, quiet=True)
    return run_images(cfg, args, out, err)


def not_videos(paths: list[Path], err: TextIO) -> tuple[list[Path], bool]:
    """The paths that are not video files, and whether there were any (each reported, pointing at --source)."""
    kept = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            print(f"edge-fer: {shown(path)}: a video, not an image: use --source for videos "
                  f"(edge-fer run --source {shown(path)})", file=err)
    return kept, len(kept) < len(paths)


def format_table(name: str, width: int, height: int, faces: list[Face], labels: tuple[str, ...]) -> str:
    """A readable block of one image's faces."""
    count = f"{len(faces)} face" + ("" if len(faces) == 1 else "s")
    lines = [f"{name} ({width}x{height}): {count}"]
    if faces:
        lines.append("   #  box (x, y, w, h)        emotion    conf  " + " ".join(f"{lab[:8]:>8}" for lab in labels))
        for i, f in enumerate(faces, 1):
            box = ", ".join(f"{v:>4}" for v in f.box)
            scores = " ".join(f"{f.scores[lab]:>8.3f}" for lab in labels)
            why = f"  ({f.unsure})" if f.unsure else ""
            lines.append(f"  {i:>2}  {box:<22}  {f.emotion:<9} {f.confidence:>5.2f}  {scores}{why}")
    return "\n".join(lines)


def _file_key(path: Path) -> tuple[object, ...]:
    """What makes two paths the same file: its inode when it exists (hard links too), else its real path."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def annotate_targets(out: str, paths: list[Path]) -> dict[Path, Path]:
    """Where each image's annotated copy goes: never onto an input, never two onto one file.

    OUT is the file itself for one image with an image suffix (its suffix picks the format), else a folder of
    `<stem>.annotated<suffix>` in the input's own format (PNG for GIF, PGM, PPM); a name already taken (two
    inputs called x.jpg, or an input in OUT) becomes `<stem>.2.annotated<suffix>`, ..."""
    from edge_fer.vision.annotate import copy_suffix
    from edge_fer.vision.images import IMAGE_SUFFIXES

    target = Path(out)
    inputs = {_file_key(p) for p in paths}
    if len(paths) == 1 and target.suffix.lower() in IMAGE_SUFFIXES:
        if _file_key(target) in inputs:
            raise UsageError(f"--annotate {shown(target)} is the input image; it is never overwritten")
        return {paths[0]: target}
    taken = set(inputs)
    targets: dict[Path, Path] = {}
    for path in paths:
        n, suffix = 1, copy_suffix(path.name)
        while True:
            candidate = target / f"{path.stem}{'' if n == 1 else f'.{n}'}.annotated{suffix}"
            if _file_key(candidate) not in taken:
                break
            n += 1
        taken.add(_file_key(candidate))
        targets[path] = candidate
    return targets


def run_images(cfg: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Analyze each image; a bad one is reported and the rest are still answered."""
    from edge_fer.vision.analyze import Analyzer
    from edge_fer.vision.annotate import annotate
    from edge_fer.vision.images import expand_paths, read_image, save_image

    paths, errors = expand_paths(args.image)
    published: list[tuple[str, tuple[int, int], list[Face]]] = []  # each image's name, size and faces
    status: int = EXIT_OK
    for line in errors:
        print(f"edge-fer: {line}", file=err)
        status = EXIT_INPUT
    paths, videos = not_videos(paths, err)
    if videos:
        status = EXIT_INPUT
    if not paths:
        return status
    targets = annotate_targets(args.annotate, paths) if args.annotate else {}
    with Analyzer.from_config(cfg, photos=True) as analyzer:
        labels = analyzer.classifier.labels
        for path in paths:
            try:
                frame = read_image(path, cfg.images.max_pixels)
                faces = analyzer.analyze(frame)
            except EdgeFerError as e:
                print(f"edge-fer: {e}", file=err)
                status = max(status, EXIT_INPUT)
                continue
            except MemoryError:
                print(f"edge-fer: {shown(path)}: not enough memory to analyze it", file=err)
                status = max(status, EXIT_INPUT)
                continue
            h, w = frame.shape[:2]
            doc = {"image": str(path), "width": w, "height": h, "faces": [f.to_dict() for f in faces]}
            if path in targets:
                try:
                    save_image(targets[path], annotate(frame, faces))
                    doc["annotated"] = str(targets[path])
                except (WriteError, MemoryError) as e:
                    problem = str(e) if isinstance(e, WriteError) else f"{shown(targets[path])}: not enough memory"
                    print(f"edge-fer: {problem}; the annotated copy was not saved", file=err)
                    status = max(status, EXIT_RUNTIME)
            del frame  # a large photo's pixels are not kept while the next one is decoded
            published.append((str(path), (w, h), faces))
            if args.json:
                print(json.dumps(doc), file=out)
            else:
                table = format_table(shown(path), w, h, faces, labels)
                print(table + (f"\n  annotated copy: {shown(doc['annotated'])}" if "annotated" in doc else ""),
                      file=out)
            out.flush()
    if args.publish and published:
        status = max(status, publish_images(cfg, published, labels, err))
    return status


def publish_images(cfg: Config, results: list[tuple[str, tuple[int, int], list[Face]]], labels: tuple[str, ...],
                   err: TextIO, connect_timeout: float = 5.0) -> int:
    """Send one-shot results (each image's name, size and faces) to the events topic, with the model's `labels`;
    a broker that cannot be reached is an error."""
    from edge_fer.messaging.events import EventFactory
    from edge_fer.messaging.mqtt import MqttPublisher

    factory = EventFactory(cfg.mqtt.device_id, labels)
    with MqttPublisher(cfg.mqtt, cfg.mqtt.device_id, announce=False) as pub:
        if not pub.connected.wait(connect_timeout):
            print(f"edge-fer: MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} not reachable; results not published",
                  file=err)
            return EXIT_RUNTIME
        for image, size, faces in results:
            for i, face in enumerate(faces):
                pub.publish_event(factory.image_event(image, face, i, size))
    return EXIT_OK
