"""One-shot photos: each image's faces as a table or JSON, annotated copies, and publishing the results."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TextIO

from edge_fer.vision.analyze import Analyzer, Face
from edge_fer.config import Config
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError, WriteError, shown
from edge_fer.vision.images import IMAGE_SUFFIXES, expand_paths, read_image, save_image


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

    OUT is the file itself for one image with an image suffix, else a folder of `<stem>.annotated.png`;
    a name already taken (two inputs called x.png, or an input in OUT) becomes `<stem>.2.annotated.png`, ..."""
    target = Path(out)
    inputs = {_file_key(p) for p in paths}
    if len(paths) == 1 and target.suffix.lower() in IMAGE_SUFFIXES:
        if _file_key(target) in inputs:
            raise UsageError(f"--annotate {shown(target)} is the input image; it is never overwritten")
        return {paths[0]: target}
    taken = set(inputs)
    targets: dict[Path, Path] = {}
    for path in paths:
        n = 1
        while True:
            candidate = target / (f"{path.stem}.annotated.png" if n == 1 else f"{path.stem}.{n}.annotated.png")
            if _file_key(candidate) not in taken:
                break
            n += 1
        taken.add(_file_key(candidate))
        targets[path] = candidate
    return targets


def run_images(cfg: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Analyze each image; a bad one is reported and the rest are still answered."""
    from edge_fer.vision.annotate import annotate

    paths, errors = expand_paths(args.image)
    published: list[dict] = []
    status = EXIT_OK
    for line in errors:
        print(f"edge-fer: {line}", file=err)
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
            published.append(doc)
            if args.json:
                print(json.dumps(doc), file=out)
            else:
                table = format_table(shown(path), w, h, faces, labels)
                print(table + (f"\n  annotated copy: {shown(doc['annotated'])}" if "annotated" in doc else ""),
                      file=out)
            out.flush()
    if args.publish and published:
        status = max(status, publish_images(cfg, published, err))
    return status


def publish_images(cfg: Config, docs: list[dict], err: TextIO, connect_timeout: float = 5.0) -> int:
    """Send one-shot results to the events topic; a broker that cannot be reached is an error."""
    from edge_fer.messaging.events import EventFactory
    from edge_fer.messaging.mqtt import MqttPublisher

    factory = EventFactory(cfg.mqtt.device_id)
    with MqttPublisher(cfg.mqtt, cfg.mqtt.device_id, announce=False) as pub:
        if not pub.connected.wait(connect_timeout):
            print(f"edge-fer: MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} not reachable; results not published",
                  file=err)
            return EXIT_RUNTIME
        for doc in docs:
            for i, face in enumerate(doc["faces"]):
                pub.publish_event(factory.image_event(doc["image"], face, i, (doc["width"], doc["height"])))
    return EXIT_OK
