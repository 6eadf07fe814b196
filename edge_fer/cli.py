"""The edge-fer command: one-shot image analysis, config checks, and the daemon."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

import cv2
import yaml

from edge_fer import __version__
from edge_fer.analyze import Analyzer, Face
from edge_fer.config import Config, as_dict, load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, EdgeFerError, UsageError
from edge_fer.images import IMAGE_SUFFIXES, expand_paths, read_image

log = logging.getLogger(__name__)

# Within systemd's TimeoutStopSec (10 s in the unit): a pipeline stuck longer is abandoned.
SHUTDOWN_GRACE_SECONDS = 6.0


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


def _annotate_target(out: str, image: Path, many: bool) -> Path:
    target = Path(out)
    if not many and target.suffix.lower() in IMAGE_SUFFIXES:
        return target
    return target / f"{image.stem}.annotated.png"


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
    with Analyzer.from_config(cfg, photos=True) as analyzer:
        labels = analyzer.classifier.labels
        for path in paths:
            try:
                frame = read_image(path, cfg.images.max_pixels)
            except EdgeFerError as e:
                print(f"edge-fer: {e}", file=err)
                status = EXIT_INPUT
                continue
            faces = analyzer.analyze(frame)
            h, w = frame.shape[:2]
            doc = {"image": str(path), "width": w, "height": h, "faces": [f.to_dict() for f in faces]}
            published.append(doc)
            if args.json:
                print(json.dumps(doc), file=out)
            else:
                print(format_table(str(path), w, h, faces, labels), file=out)
            if args.annotate:
                target = _annotate_target(args.annotate, path, len(paths) > 1)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), annotate(frame, faces)):
                    print(f"edge-fer: {target}: could not write the annotated image", file=err)
                    status = EXIT_INPUT
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


def run_daemon(args: argparse.Namespace, overrides: list[str], cfg: Config) -> int:
    """Run the daemon; SIGTERM/SIGINT stop it, SIGHUP reloads the config and restarts the pipeline."""
    stop = threading.Event()
    why = {"reason": ""}

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP and why["reason"] != "stop":
            why["reason"] = "reload"
        else:
            why["reason"] = "stop"
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return _daemon_loop(args, overrides, cfg, stop, why)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _daemon_loop(args: argparse.Namespace, overrides: list[str], cfg: Config, stop: threading.Event,
                 why: dict[str, str]) -> int:
    """Run pipelines until a stop that is not a reload."""
    from edge_fer.daemon import PipelineThread

    while True:
        # The pipeline runs on its own thread so a stuck one cannot keep the process from stopping.
        pipeline = PipelineThread(cfg, on_end=stop.set)
        pipeline.start()
        stop.wait()
        if not pipeline.stop(timeout=SHUTDOWN_GRACE_SECONDS):
            log.error("the pipeline did not stop within %.0f s; exiting without a clean shutdown",
                      SHUTDOWN_GRACE_SECONDS)
            return EXIT_RUNTIME
        if pipeline.error is not None:
            raise pipeline.error
        if why["reason"] != "reload":
            return EXIT_OK
        why["reason"] = ""
        stop.clear()
        try:
            cfg = load(args.config, overrides)
            logging.getLogger().setLevel(cfg.logging.level)
            log.info("configuration reloaded from %s", cfg.source_file)
        except EdgeFerError as e:
            log.error("reload failed, keeping the running configuration: %s", e)


def run_window(cfg: Config, camera: bool) -> int:
    """The Tk window, with the pipeline on its own thread (started now, or by the Camera button)."""
    from edge_fer.daemon import PipelineThread
    from edge_fer.overlay import Overlay, require_display

    require_display()
    try:
        import tkinter as tk
    except ImportError:
        raise EdgeFerError("the window needs tkinter: sudo apt install python3-tk") from None

    stop = threading.Event()  # signals, and the end of the daemon's video, close the window
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pipeline = PipelineThread(cfg, on_end=stop.set if camera else None)
    try:
        root = tk.Tk()
    except tk.TclError as e:
        raise EdgeFerError(f"cannot open the window: {e}") from None
    with Analyzer.from_config(cfg, photos=True) as analyzer:
        overlay = Overlay(root, cfg, analyzer, pipeline.start, pipeline.stop, lambda: pipeline.latest,
                          should_close=stop.is_set)
        if camera:
            overlay.toggle_camera()
        root.mainloop()
    pipeline.stop()
    return EXIT_OK


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status (see README) and never raises for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["record"], ["report"]):
        from edge_fer.record import main as record_main

        return record_main(argv, out, err)
    try:
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
        if args.gui or args.display:
            return run_window(cfg, camera=args.display)
        if cfg.display.enabled:
            from edge_fer.overlay import display_available

            if display_available():
                return run_window(cfg, camera=True)
            log.info("display.enabled but no display here: running headless")
        return run_daemon(args, overrides, cfg)
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # --help and --version end argparse this way; main still returns
        return int(e.code or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
