"""Drawing results onto frames: a box and label per face and a bar chart of its scores."""

from __future__ import annotations

import cv2
import numpy as np

from edge_fer.vision.analyze import Face
from edge_fer.types import UNSURE

# BGR colour per emotion, so a label reads the same in every view.
COLORS = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (0, 140, 255), "neutral": (170, 170, 170), UNSURE: (110, 110, 110),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_of(emotion: str) -> tuple[int, int, int]:
    """The colour used for an emotion."""
    return COLORS.get(emotion, (255, 255, 255))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    thick = max(1, round(scale * 2))
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def draw_bars(img: np.ndarray, face: Face, x: int, y: int, width: int, row: int) -> None:
    """A horizontal bar per emotion at (x, y), `row` pixels per bar."""
    scale = row / 30 * 0.9
    # Names and values sit left of the bars, so the bars never run under the text.
    label_w = cv2.getTextSize("surp 0.00", FONT, scale, max(1, round(scale * 2)))[0][0] + 6
    for i, (name, p) in enumerate(face.scores.items()):
        top = y + i * row
        cv2.rectangle(img, (x, top), (x + width, top + row - 2), (30, 30, 30), -1)
        bar = int((width - label_w) * p)
        cv2.rectangle(img, (x + label_w, top + 2), (x + label_w + bar, top + row - 4), color_of(name), -1)
        _text(img, f"{name[:4]} {p:.2f}", (x + 2, top + row - 5), scale, (240, 240, 240))


def annotate(frame: np.ndarray, faces: list[Face], labels: dict[int, str] | None = None,
             bars: bool = True) -> np.ndarray:
    """A copy of the frame with each face's box, emotion and confidence, and score bars unless bars=False.

    `labels` prefixes a face's caption (e.g. its track id). Score panels go where they cover no face, no
    caption and no other panel, nearest their face first (with a line to it when not beside it); panels
    that fit nowhere go into a strip added on the right, and their faces are tagged to match."""
    out = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    captions = [_caption(face, f"{labels[i]} " if labels and i in labels else "") for i, face in enumerate(faces)]
    placed, homeless = _layout(faces, [c[3] for c in captions], w, h) if bars else ([], [])
    tags = {i: (labels or {}).get(i, f"face {i + 1}") for i in homeless}
    for i, face in enumerate(faces):
        x, y, bw, bh = face.box
        color = color_of(face.emotion)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color, max(2, round(min(h, w) / 300)))
        text, org, scale, _rect = captions[i] if i not in tags else _caption(face, f"{tags[i]} ")
        _text(out, text, org, scale, color)
    for i, (px, py, pw, ph), row in placed:
        x, y, bw, bh = faces[i].box
        if not _hits((px - 8, py - 8, pw + 16, ph + 16), faces[i].box):
            # A panel away from its face is tied to it by a line between their nearest corners.
            a = (px if px > x else px + pw, py if py > y else py + ph)
            b = (min(max(a[0], x), x + bw), min(max(a[1], y), y + bh))
            cv2.line(out, a, b, color_of(faces[i].emotion), 1, cv2.LINE_AA)
        draw_bars(out, faces[i], px, py, pw, row)
    if not homeless:
        return out
    # No free room in the picture: a strip to its right holds the remaining panels, each under its face's tag.
    row = max(12, min(30, h // (len(homeless) * 9)))
    strip_w = 260
    canvas = np.full((h, w + strip_w, 3), 24, np.uint8)
    canvas[:, :w] = out
    for k, i in enumerate(homeless[: h // (row * 9)]):
        top = k * row * 9
        _text(canvas, tags[i], (w + 6, top + row - 4), row / 30 * 0.9, color_of(faces[i].emotion))
        draw_bars(canvas, faces[i], w + 4, top + row, strip_w - 8, row)
    return canvas


Rect = tuple[int, int, int, int]


def _caption(face: Face, prefix: str) -> tuple[str, tuple[int, int], float, Rect]:
    """A face's caption text, its origin, its scale, and the rectangle it covers."""
    x, y, bw, _bh = face.box
    text = f"{prefix}{face.caption}"
    scale = max(0.4, min(1.5, bw / 160))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, max(1, round(scale * 2)) + 2)
    org = (x, max(14, y - 6))
    return text, org, scale, (org[0], org[1] - th - 2, tw + 2, th + base + 4)


def _hits(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _layout(faces: list[Face], captions: list[Rect], w: int, h: int) -> tuple[list[tuple[int, Rect, int]], list[int]]:
    """Where each face's score panel goes (face index, rect, row height), and the faces whose panel fits nowhere."""
    taken: list[Rect] = [f.box for f in faces] + captions
    placed: list[tuple[int, Rect, int]] = []
    homeless: list[int] = []
    for i, face in enumerate(faces):
        x, y, bw, bh = face.box
        row = max(12, min(30, bh // 8))
        pw, ph = max(150, min(260, int(bw * 1.3))), row * len(face.scores)
        # Beside the face first (right, left, below, above), then the free spot nearest to it.
        near = [(x + bw + 6, y), (x - pw - 6, y), (x, y + bh + 6), (x, y - ph - 6)]
        step = max(row, min(w, h) // 40)
        grid = sorted(((px, py) for py in range(0, h - ph + 1, step) for px in range(0, w - pw + 1, step)),
                      key=lambda p: (p[0] + pw / 2 - x - bw / 2) ** 2 + (p[1] + ph / 2 - y - bh / 2) ** 2)
        spot = next((r for r in ((px, py, pw, ph) for px, py in near + grid)
                     if r[0] >= 0 and r[1] >= 0 and r[0] + pw <= w and r[1] + ph <= h
                     and not any(_hits(r, t) for t in taken)), None)
        if spot is None:
            homeless.append(i)
        else:
            taken.append(spot)
            placed.append((i, spot, row))
    return placed, homeless
