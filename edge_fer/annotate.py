"""Drawing results onto frames: a box and label per face and a bar chart of its scores."""

from __future__ import annotations

import cv2
import numpy as np

from edge_fer.analyze import Face

# BGR colour per emotion, so a label reads the same in every view.
COLORS = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (0, 140, 255), "neutral": (170, 170, 170),
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

    `labels` prefixes a face's caption (e.g. its track id)."""
    out = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    for i, face in enumerate(faces):
        x, y, bw, bh = face.box
        color = color_of(face.emotion)
        thick = max(2, round(min(h, w) / 300))
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color, thick)
        scale = max(0.4, min(1.5, bw / 160))
        prefix = f"{labels[i]} " if labels and i in labels else ""
        _text(out, f"{prefix}{face.emotion} {face.confidence:.0%}", (x, max(14, y - 6)), scale, color)
        if not bars:
            continue
        row = max(12, min(30, bh // 8))
        panel_w = max(150, min(260, int(bw * 1.3)))
        # The bars go right of the face, or left of it when the frame ends there.
        px = x + bw + 6 if x + bw + 6 + panel_w <= w else max(0, x - panel_w - 6)
        py = min(max(0, y), max(0, h - row * len(face.scores)))
        draw_bars(out, face, px, py, panel_w, row)
    return out
