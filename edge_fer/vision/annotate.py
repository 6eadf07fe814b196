"""Drawing results onto frames: a numbered box and a label per face, and a panel of its scores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath

import cv2
import numpy as np

from edge_fer.types import UNSURE, Face

# BGR colour per emotion, so a label reads the same in every view.
COLORS = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (0, 140, 255), "neutral": (170, 170, 170), UNSURE: (110, 110, 110),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Below 0.5 the font's letters are under 12 px tall and blur into each other: labels and panels never go smaller.
MIN_SCALE, MAX_SCALE = 0.5, 1.5
PAD = 3  # pixels between a label's text and the edge of its background
STRIP_BG = 24  # the gray of the strip added beside a frame too crowded for its panels
PANEL_BG = (30, 30, 30)
MIN_ROW = math.ceil(MIN_SCALE * 30 / 0.9)  # a panel row's height at which its text is MIN_SCALE
STRIP_W = 260

Rect = tuple[int, int, int, int]


def color_of(emotion: str) -> tuple[int, int, int]:
    """The colour used for an emotion."""
    return COLORS.get(emotion, (255, 255, 255))


def luminance(bgr: tuple[int, int, int]) -> float:
    """A colour's relative luminance (WCAG 2), 0 for black to 1 for white."""
    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    b, g, r = bgr
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """The WCAG contrast ratio of two colours, from 1 (the same) to 21 (black on white)."""
    la, lb = sorted((luminance(a), luminance(b)))
    return (lb + 0.05) / (la + 0.05)


def ink_on(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with a background of this colour."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast(bgr, black) >= contrast(bgr, white) else white


def _thickness(scale: float) -> int:
    return max(1, round(scale * 2))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    """Text with a dark outline, for dark panels."""
    thick = _thickness(scale)
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def label_size(text: str, scale: float) -> tuple[int, int]:
    """Width and height of a label's filled background."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, _thickness(scale))
    return tw + 2 * PAD, th + base + 2 * PAD


def draw_label(img: np.ndarray, text: str, rect: Rect, scale: float, color: tuple[int, int, int]) -> None:
    """Text on a background filled with `color`, readable on any picture."""
    x, y, w, h = rect
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, -1)
    _tw, base = cv2.getTextSize(text, FONT, scale, _thickness(scale))
    cv2.putText(img, text, (x + PAD, y + h - PAD - base), FONT, scale, ink_on(color), _thickness(scale), cv2.LINE_AA)


@dataclass(frozen=True)
class Label:
    """Where a face's label goes; `full` is False where only the face's name (its number) fitted."""

    face: int
    text: str
    rect: Rect
    scale: float
    full: bool


@dataclass(frozen=True)
class Panel:
    """Where a face's score panel goes: its rectangle and row height."""

    face: int
    rect: Rect
    row: int


def _hits(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(r: Rect, w: int, h: int) -> bool:
    return r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= w and r[1] + r[3] <= h


def caption_scale(face: Face) -> float:
    """A label's text scale: with the face's width, never under MIN_SCALE."""
    return max(MIN_SCALE, min(MAX_SCALE, face.box[2] / 160))


def _label_spot(box: Rect, text: str, scale: float, blocked: list[Rect], w: int, h: int) -> Rect | None:
    """The first free place for a label at a box: above it, below, right, left, then inside its top."""
    x, y, bw, bh = box
    lw, lh = label_size(text, scale)
    lx, sy = min(max(0, x), max(0, w - lw)), min(max(0, y), max(0, h - lh))
    spots = [(lx, y - lh), (lx, y + bh), (x + bw, sy), (x - lw, sy)] + ([(lx, y)] if bh >= 3 * lh else [])
    return next((r for r in ((px, py, lw, lh) for px, py in spots)
                 if _inside(r, w, h) and not any(_hits(r, t) for t in blocked)), None)


def place_labels(faces: list[Face], names: list[str], w: int, h: int) -> list[Label]:
    """Each face's label, at its box and on no other face or label.

    Every face first gets its name (its number), so a long caption never leaves a neighbour without one; then
    each name grows into the whole caption where that fits, tried smaller down to MIN_SCALE. A face left with
    its name alone has the rest in its panel, the window's score list or the legend. A name that fits nowhere
    goes inside the top of its box."""
    boxes = [f.box for f in faces]
    tags: list[Label] = []
    for i, face in enumerate(faces):
        scale = caption_scale(face)
        blocked = boxes[:i] + boxes[i + 1:] + [t.rect for t in tags]
        spot = _label_spot(face.box, names[i], scale, blocked, w, h)
        x, y = face.box[:2]
        tags.append(Label(i, names[i], spot or (max(0, x), max(0, y), *label_size(names[i], scale)), scale, False))
    labels: list[Label] = []
    for i, face in enumerate(faces):
        blocked = boxes[:i] + boxes[i + 1:] + [lab.rect for lab in labels] + [t.rect for t in tags[i + 1:]]
        scale = caption_scale(face)
        smaller = [scale * 0.8 ** k for k in range(1, 6) if scale * 0.8 ** k > MIN_SCALE] + [MIN_SCALE]
        text = f"{names[i]} {face.caption}"
        chosen = tags[i]
        for sc in dict.fromkeys([scale, *smaller]):
            spot = _label_spot(face.box, text, sc, blocked, w, h)
            if spot is not None:
                chosen = Label(i, text, spot, sc, True)
                break
        labels.append(chosen)
    return labels


def panel_rows(face: Face) -> int:
    """Rows of a face's panel: its title and one per score."""
    return 1 + len(face.scores)


def place_panels(faces: list[Face], labels: list[Rect], w: int, h: int) -> tuple[list[Panel], list[int]]:
    """Where each face's score panel goes, and the faces whose panel fits nowhere in the picture.

    A panel covers no face, no label and no other panel: beside its face if it can, else nearest to it."""
    taken: list[Rect] = [f.box for f in faces] + labels
    placed: list[Panel] = []
    homeless: list[int] = []
    for i, face in enumerate(faces):
        x, y, bw, bh = face.box
        row = max(MIN_ROW, min(30, bh // 8))
        pw, ph = max(150, min(STRIP_W, int(bw * 1.3))), row * panel_rows(face)
        # Beside the face first (right, left, below, above), then the free spot nearest to it.
        near = [(x + bw + 6, y), (x - pw - 6, y), (x, y + bh + 6), (x, y - ph - 6)]
        step = max(row, min(w, h) // 40)
        grid = sorted(((px, py) for py in range(0, h - ph + 1, step) for px in range(0, w - pw + 1, step)),
                      key=lambda p: (p[0] + pw / 2 - x - bw / 2) ** 2 + (p[1] + ph / 2 - y - bh / 2) ** 2)
        spot = next((r for r in ((px, py, pw, ph) for px, py in near + grid)
                     if _inside(r, w, h) and not any(_hits(r, t) for t in taken)), None)
        if spot is None:
            homeless.append(i)
        else:
            taken.append(spot)
            placed.append(Panel(i, spot, row))
    return placed, homeless


def draw_bars(img: np.ndarray, face: Face, x: int, y: int, width: int, row: int) -> None:
    """A horizontal bar per emotion at (x, y), `row` pixels per bar."""
    scale = max(MIN_SCALE, row / 30 * 0.9)
    # Names and values sit left of the bars, so the bars never run under the text.
    label_w = cv2.getTextSize("surp 0.00", FONT, scale, _thickness(scale))[0][0] + 6
    for i, (name, p) in enumerate(face.scores.items()):
        top = y + i * row
        cv2.rectangle(img, (x, top), (x + width, top + row - 2), PANEL_BG, -1)
        bar = int((width - label_w) * p)
        cv2.rectangle(img, (x + label_w, top + 2), (x + label_w + bar, top + row - 4), color_of(name), -1)
        _text(img, f"{name[:4]} {p:.2f}", (x + 2, top + row - 5), scale, (240, 240, 240))


def draw_panel(img: np.ndarray, face: Face, name: str, rect: Rect, row: int) -> None:
    """A face's panel: its name and caption on the first row, then its score bars."""
    x, y, w, _h = rect
    cv2.rectangle(img, (x, y), (x + w, y + row - 2), PANEL_BG, -1)
    _text(img, f"{name} {face.caption}", (x + 2, y + row - 5), max(MIN_SCALE, row / 30 * 0.9), color_of(face.emotion))
    draw_bars(img, face, x, y + row, w, row)


def legend_line(face: Face) -> str:
    """One face in the legend, after its name: its caption and its next highest scores."""
    ranked = sorted(face.scores.items(), key=lambda kv: -kv[1])
    if face.unsure or not ranked or ranked[0][0] != face.emotion:  # not judged: its three highest say most
        return f"{face.caption}: " + ", ".join(f"{k} {v:.0%}" for k, v in ranked[:3])
    return f"{face.caption}, then " + ", ".join(f"{k} {v:.0%}" for k, v in ranked[1:3])


@dataclass(frozen=True)
class Plan:
    """Where everything goes on the output, which is the frame with, when needed, a strip on its right."""

    width: int
    height: int
    labels: list[Label]  # on the frame, one per face
    panels: list[Panel]  # on the frame or in the strip
    legend: list[Label]  # in the strip, one line per face whose panel fits nowhere at a legible size


def _strip_plan(faces: list[Face], names: list[str], homeless: list[int], w: int, h: int,
                ) -> tuple[int, int, list[Panel], list[Label]]:
    """The canvas size and the strip's panels (one column) or, when they are too many, its legend lines."""
    block = MIN_ROW * (max(panel_rows(faces[i]) for i in homeless) + 1)
    if len(homeless) * block <= max(h, block):
        panels = [Panel(i, (w + 4, k * block, STRIP_W - 8, MIN_ROW * panel_rows(faces[i])), MIN_ROW)
                  for k, i in enumerate(homeless)]
        return w + STRIP_W, max(h, block), panels, []
    # Too many for panels at a legible size: a line per face, in as many columns as the height needs.
    texts = [f"{names[i]} {legend_line(faces[i])}" for i in homeless]
    sizes = [label_size(t, MIN_SCALE) for t in texts]
    line_h = max(lh for _, lh in sizes) + 2
    per_col = max(1, h // line_h)
    col_w = max(lw for lw, _ in sizes) + 8
    legend = [Label(i, text, (w + (k // per_col) * col_w + 4, (k % per_col) * line_h, lw, lh), MIN_SCALE, True)
              for k, (i, text, (lw, lh)) in enumerate(zip(homeless, texts, sizes))]
    return w + math.ceil(len(homeless) / per_col) * col_w, max(h, line_h), [], legend


def plan(faces: list[Face], names: list[str], w: int, h: int, bars: bool = True) -> Plan:
    """The layout of a w x h frame's labels, score panels (if `bars`) and strip."""
    labels = place_labels(faces, names, w, h)
    if not bars:
        return Plan(w, h, labels, [], [])
    panels, homeless = place_panels(faces, [lab.rect for lab in labels], w, h)
    if not homeless:
        return Plan(w, h, labels, panels, [])
    width, height, strip_panels, legend = _strip_plan(faces, names, homeless, w, h)
    return Plan(width, height, labels, panels + strip_panels, legend)


def _draw_legend_line(img: np.ndarray, face: Face, name: str, line: Label) -> None:
    """The face's name as on its box (its colour, filled), so the eye goes from the line to the face; then the rest."""
    x, y, _lw, lh = line.rect
    name_w = label_size(name, line.scale)[0]
    draw_label(img, name, (x, y, name_w, lh), line.scale, color_of(face.emotion))
    base = cv2.getTextSize(line.text, FONT, line.scale, _thickness(line.scale))[1]
    cv2.putText(img, line.text[len(name):], (x + name_w, y + lh - PAD - base), FONT, line.scale, (235, 235, 235),
                _thickness(line.scale), cv2.LINE_AA)


def annotate(frame: np.ndarray, faces: list[Face], labels: dict[int, str] | None = None,
             bars: bool = True) -> np.ndarray:
    """A copy of the frame with each face's box and label, and score panels unless bars=False.

    `labels` names a face (its track id, say); a face without one is named by its number, 1 first, as the
    text and JSON outputs count them. Labels carry a filled background and go where they cover no face and no
    other label; where the caption fits nowhere, the label is the name alone. Score panels go where they cover
    no face, no label and no other panel, nearest their face first (with a line to it when not beside it);
    panels that fit nowhere go into a strip added on the right, or a legend line each when they are many."""
    image = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    names = [(labels or {}).get(i, str(i + 1)) for i in range(len(faces))]
    layout = plan(faces, names, w, h, bars)
    if (layout.width, layout.height) == (w, h):
        out = image.copy()
    else:
        out = np.full((layout.height, layout.width, 3), STRIP_BG, np.uint8)
        out[:h, :w] = image
    thick = max(2, round(min(h, w) / 300))
    for face, label in zip(faces, layout.labels):
        x, y, bw, bh = face.box
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color_of(face.emotion), thick)
        draw_label(out, label.text, label.rect, label.scale, color_of(face.emotion))
    for panel in layout.panels:
        i, (px, py, pw, ph) = panel.face, panel.rect
        x, y, bw, bh = faces[i].box
        if px < w and not _hits((px - 8, py - 8, pw + 16, ph + 16), faces[i].box):
            # A panel away from its face is tied to it by a line between their nearest corners.
            a = (px if px > x else px + pw, py if py > y else py + ph)
            b = (min(max(a[0], x), x + bw), min(max(a[1], y), y + bh))
            cv2.line(out, a, b, color_of(faces[i].emotion), 1, cv2.LINE_AA)
        draw_panel(out, faces[i], names[i], panel.rect, panel.row)
    for line in layout.legend:
        _draw_legend_line(out, faces[line.face], names[line.face], line)
    return out


# Formats an annotated copy keeps: each holds colour and every OpenCV writes it (JPEG at OpenCV's quality 95).
# GIF (256 colours, not written by older OpenCV) and PGM/PPM (gray, or uncompressed) become PNG.
KEPT_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def copy_suffix(name: str) -> str:
    """The suffix of an annotated copy of the file `name`: its own (a JPEG stays a JPEG), else .png."""
    suffix = PurePath(name).suffix
    return suffix if suffix.lower() in KEPT_SUFFIXES else ".png"
