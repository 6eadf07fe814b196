"""The edge-fer command: one-shot image analysis, config checks, and the daemon."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

import yaml

from edge_fer import __version__
from edge_fer.analyze import Analyzer, Face
from edge_fer.capture import quiet_native_logs
from edge_fer.config import Config, as_dict, load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError, WriteError, shown
from edge_fer.images import IMAGE_SUFFIXES, expand_paths, read_image, save_image

log = logging.getLogger(__name__)

EXIT_PIPE = 128 + signal.SIGPIPE  # stdout closed by its reader, as a shell reports SIGPIPE


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as an EdgeFerError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see edge-fer --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="edge-fer", description="Facial emotion recognition on the edge: photos, cameras, MQTT.")
    p.add_argument("--image", nargs="+", metavar="PATH", help="analyze these images (folders expand) and exit")
    p.add_argument("--json", action="store_true", help="with --image: one JSON object per image")
    p.add_argument("--annotate", metavar="OUT", help="with --image: write annotated copies (a folder, or a file for one image)")
    p.add_argument("--model", metavar="PATH", help="a .tflite model with its .json sidecar (default: the shipped one)")
    p.add_argument("--config", metavar="FILE", help="config file (default ./config.yaml, then /etc/edge-fer/config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--check-config", action="store_true", help="validate the config, print it, and exit")
    p.add_argument("--source", metavar="SRC", help="daemon: camera index, /dev/videoN, video file, stream URL or picamera2")
    p.add_argument("--display", action="store_true", help="daemon: show the live window (needs a display)")
    p.add_argument("--gui", action="store_true", help="open the window with no source running (open photos, start the camera)")
    p.add_argument("--publish", action="store_true", help="with --image: also send the results to the MQTT events topic")
    p.add_argument("--version", action="version", version=f"edge-fer {__version__}")
    return p


def format_table(name: str, width: int, height: int, faces: list[Face], labels: tuple[str, ...]) -> str:
    """A readable block of one image's faces."""
    count = f"{len(faces)} face" + ("" if len(faces) == 1 else "s")
    lines = [f"{name} ({width}x{height}): {count}"]
    if faces:
        lines.append("   #  box (x, y, w, h)        emotion    conf  " + " ".join(f"{lab[:8]:>8}" for lab in labels))
        for i, f in enumerate(faces, 1):
            box = ", ".join(f"{v:>4}" for v in f.box)
            scores = " ".join(f"{f.scores[lab]:>8.3f}" for lab in labels)
            lines.append(f"  {i:>2}  {box:<22}  {f.emotion:<9} {f.confidence:>5.2f}  {scores}")
    return "\n".join(lines)


def _file_key(path: Path) -> tuple:
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
    from edge_fer.annotate import annotate

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
    from edge_fer.events import EventFactory
    from edge_fer.mqtt import MqttPublisher

    factory = EventFactory(cfg.device_id)
    with MqttPublisher(cfg.mqtt, cfg.device_id, announce=False) as pub:
        if not pub.connected.wait(connect_timeout):
            print(f"edge-fer: MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} not reachable; results not published",
                  file=err)
            return EXIT_RUNTIME
        for doc in docs:
            for i, face in enumerate(doc["faces"]):
                pub.publish_event(factory.image_event(doc["image"], face, i, (doc["width"], doc["height"])))
    return EXIT_OK


def run_service(args: argparse.Namespace, overrides: list[str], cfg: Config) -> int:
    """The daemon, headless or with its window, or the window alone (--gui)."""
    from edge_fer.overlay import display_available
    from edge_fer.service import Service

    service = Service(cfg, args.config, overrides)
    if args.gui or args.display:
        return service.run_window(camera=args.display)
    if cfg.display.enabled:
        if display_available():
            return service.run_window(camera=True)
        log.info("display.enabled but no display here: running headless")
    return service.run_headless()


def _silence_stdout(out: TextIO) -> None:
    """Point a closed stdout at /dev/null so Python's final flush does not print a traceback."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status (see README) and never raises for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        quiet_native_logs()
        args = build_parser().parse_args(argv)
        # Paths and URLs are quoted so YAML takes them as strings; a bare number is a camera index.
        overrides = list(args.set) + ([f"classifier.model={json.dumps(args.model)}"] if args.model else [])
        if args.source:
            overrides.append(f"camera.source={args.source if args.source.isdigit() else json.dumps(args.source)}")
        cfg = load(args.config, overrides)
        _setup_logging(cfg.logging.level)
        if args.check_config:
            print(f"{cfg.source_file}: OK", file=err)
            print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="", file=out)
            return EXIT_OK
        if args.image:
            return run_images(cfg, args, out, err)
        if args.json or args.annotate or args.publish:
            raise UsageError("--json, --annotate and --publish go with --image")
        return run_service(args, overrides, cfg)
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly with the status a shell gives a tool killed by SIGPIPE.
        _silence_stdout(out)
        return EXIT_PIPE
    except MemoryError:
        print("edge-fer: out of memory", file=err)
        return EXIT_RUNTIME
    except SystemExit as e:  # --help and --version end argparse this way; main still returns
        return int(e.code or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
