"""The edge-fer command: one-shot image analysis, config checks, and the daemon."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

import cv2
import yaml

from edge_fer import __version__
from edge_fer.analyze import Analyzer, Face
from edge_fer.config import Config, as_dict, load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, EdgeFerError, UsageError
from edge_fer.images import IMAGE_SUFFIXES, expand_paths, read_image

log = logging.getLogger(__name__)


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
    status = EXIT_OK
    for line in errors:
        print(f"edge-fer: {line}", file=err)
        status = EXIT_INPUT
    if not paths:
        return status
    with Analyzer.from_config(cfg) as analyzer:
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
            if args.json:
                doc = {"image": str(path), "width": w, "height": h, "faces": [f.to_dict() for f in faces]}
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
    return status


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status (see README) and never raises for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
        overrides = list(args.set) + ([f"classifier.model={args.model}"] if args.model else [])
        cfg = load(args.config, overrides)
        _setup_logging(cfg.logging.level)
        if args.check_config:
            print(f"{cfg.source_file}: OK", file=err)
            print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="", file=out)
            return EXIT_OK
        if args.image:
            return run_images(cfg, args, out, err)
        raise UsageError("nothing to do: give --image PATH (or see edge-fer --help)")
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
