"""What `edge-fer report` makes of stored events: per-device timelines and totals, as text, CSV, PNG or HTML."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from PIL import Image, ImageDraw, ImageFont

from edge_fer.errors import UsageError
from edge_fer.messaging.events import utc_iso
from edge_fer.vision.images import write_file
from edge_fer.recorder.store import EMOTIONS as MODEL_EMOTIONS
from edge_fer.types import UNSURE

# Face time of tracks none of whose faces could be judged is its own column, never spread over the others.
EMOTIONS = (*MODEL_EMOTIONS, UNSURE)

# Colours a reader can tell apart, with the usual associations (happy warm, sad blue, neutral gray).
COLOURS = {"angry": (214, 39, 40), "disgust": (107, 142, 35), "fear": (148, 103, 189), "happy": (255, 179, 0),
           "sad": (31, 119, 180), "surprise": (23, 190, 207), "neutral": (160, 160, 160),
           UNSURE: (90, 90, 90)}
TICK_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 43200)
REPORT_COLUMNS = ("device", "run_id", "type", "track_id", "emotion", "ts", "frame_ts")
# Times no event really has, left out: no edge-fer ran before 2020 (a clock never set reads 1970, or 2000 from an
# RTC whose battery died), and none records the future (a day allows for a clock that drifts or is an hour off).
EARLIEST = 1577836800.0  # 2020-01-01T00:00Z
AHEAD = 86400.0
# A second is the finest step: finer ones say nothing about faces, and far enough below it float times stop advancing
# from bucket to bucket. 52 weeks is the widest: wider ones end past the years a calendar (and a picture) can show.
MIN_BUCKET, MAX_BUCKET = 1.0, 52 * 604800.0
MAX_BUCKETS = 200_000  # devices x steps a report builds at most: 138 days of minutes, a 20 MB CSV
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a text cell starting so runs as a formula in a spreadsheet


@dataclass
class Timeline:
    """One device: face-seconds of each emotion per time bucket, from the start/change/end of its tracks."""

    device: str
    start: float  # start of the first bucket, seconds since the epoch
    bucket: float  # seconds per bucket
    seconds: list[list[float]] = field(default_factory=list)  # per bucket, face-seconds per emotion
    tracks: int = 0
    events: int = 0
    photos: int = 0  # one-shot image events: counted, not part of the timeline
    left_out: int = 0  # events at impossible times (before EARLIEST, or over AHEAD from now)

    def faces(self, i: int) -> float:
        """Average number of faces in view during bucket i."""
        return sum(self.seconds[i]) / self.bucket

    def shares(self, i: int) -> list[float]:
        """Share of each emotion among the faces in bucket i (all zero when none)."""
        total = sum(self.seconds[i])
        return [s / total if total else 0.0 for s in self.seconds[i]]

    def totals(self) -> list[float]:
        """Face-seconds per emotion over the whole timeline."""
        return [sum(b[k] for b in self.seconds) for k in range(len(EMOTIONS))]

    def add(self, t0: float, t1: float, emotion: int) -> None:
        """Count [t0, t1) of one face showing `emotion`, split across buckets."""
        t0 = max(t0, self.start)  # a frame time a few ms before the device's first one
        while t0 < t1:
            i = int((t0 - self.start) // self.bucket)
            while i >= len(self.seconds):
                self.seconds.append([0.0] * len(EMOTIONS))
            edge = min(t1, self.start + (i + 1) * self.bucket)
            self.seconds[i][emotion] += edge - t0
            t0 = edge


def _check_size(devices: int, lo: float, hi: float, bucket: float) -> None:
    """Refuse, before building it, a grid from `lo` to `hi` over `devices` of more than MAX_BUCKETS buckets."""
    if lo > hi:
        return
    n = devices * (math.floor((hi - lo) / bucket) + 1)
    if n > MAX_BUCKETS:
        raise UsageError(f"the events from {utc_iso(lo)[:16]} to {utc_iso(hi)[:16]} at one bucket per "
                         f"{step_name(bucket)} make {n:,} buckets over {devices} device{'s' * (devices != 1)}, "
                         f"more than the {MAX_BUCKETS:,} a report builds: narrow it with --since or --device, "
                         "or use a larger --bucket")


def build(rows: Iterable[tuple[Any, ...]], bucket: float, progress: Callable[[int], None] | None = None,
          ) -> list[Timeline]:
    """Timelines from rows of REPORT_COLUMNS ordered by device then time, all on one time grid.

    A face counts with the emotion of its latest start or change until its next change or end; a track
    that never ended (the daemon was killed) stops counting at its last event. Events at impossible times
    are left out and counted. Memory grows with the buckets, not the rows, and the buckets are bounded:
    UsageError for a --bucket out of range, or a grid of more than MAX_BUCKETS.
    """
    if not MIN_BUCKET <= bucket <= MAX_BUCKET:
        raise UsageError(f"--bucket {step_name(bucket)}: a timeline step from 1s to 52w")
    latest = time.time() + AHEAD
    lo, hi = math.inf, -math.inf  # the grid so far: from the earliest device's first bucket to the latest time
    index = {e: i for i, e in enumerate(EMOTIONS)}
    timelines: dict[str, Timeline] = {}
    open_: dict[tuple[str, int], tuple[float, int]] = {}  # the current device's (run, track): since, emotion
    for n, (device, run_id, kind, track, emotion, ts, frame_ts) in enumerate(rows, 1):
        if progress and n % 1000 == 0:
            progress(n)
        tl = timelines.get(device)
        if tl is None:
            tl = timelines[device] = Timeline(device, math.nan, bucket)
            open_.clear()
        t = ts if kind == "end" or frame_ts is None else frame_ts
        if not EARLIEST <= t <= latest:  # a clock not yet set or set ahead, or a forged event
            tl.left_out += 1
            continue
        tl.events += 1
        if kind == "image":
            tl.photos += 1
            continue
        if math.isnan(tl.start):
            tl.start = math.floor(t / bucket) * bucket
            lo = min(lo, tl.start)
        hi = max(hi, t)
        _check_size(len(timelines), lo, hi, bucket)  # before add() grows the device's buckets
        key = (run_id, track)
        if key in open_:
            since, label = open_.pop(key)
            tl.add(since, t, index[emotion] if kind == "end" else label)
        if kind == "start":
            tl.tracks += 1
        if kind != "end":
            open_[key] = (t, index[emotion])
    _check_size(len(timelines), lo, hi, bucket)  # devices with photos alone get a row per bucket too
    known = [tl for tl in timelines.values() if not math.isnan(tl.start)]
    start = min((tl.start for tl in known), default=0.0)
    buckets = max((round((tl.start - start) / bucket) + len(tl.seconds) for tl in known), default=0)
    for tl in timelines.values():  # one grid for all devices
        lead = 0 if math.isnan(tl.start) else round((tl.start - start) / bucket)
        tl.seconds = [[0.0] * len(EMOTIONS) for _ in range(lead)] + tl.seconds
        tl.seconds += [[0.0] * len(EMOTIONS) for _ in range(buckets - len(tl.seconds))]
        tl.start = start
    return list(timelines.values())


def summary(timelines: list[Timeline]) -> str:
    """Totals per device and emotion as a text table."""
    if not timelines:
        return "no events"
    head = f"{'device':<16} {'events':>7} {'tracks':>7} {'face-min':>9}  " + " ".join(f"{e[:8]:>8}" for e in EMOTIONS)
    lines = [f"from {utc_iso(timelines[0].start)} for {len(timelines[0].seconds) * timelines[0].bucket / 60:.0f} "
             f"min; share of face time per emotion", head]
    for tl in timelines:
        totals = tl.totals()
        whole = sum(totals)
        shares = " ".join(f"{(v / whole if whole else 0):>8.1%}" for v in totals)
        photos = f"  (+{tl.photos} photo results)" if tl.photos else ""
        left = f"  ({tl.left_out} event{'s' * (tl.left_out != 1)} left out)" if tl.left_out else ""
        lines.append(f"{tl.device[:16]:<16} {tl.events:>7} {tl.tracks:>7} {whole / 60:>9.1f}  {shares}{photos}{left}")
    if any(tl.left_out for tl in timelines):
        lines.append("left out: events dated before 2020 or more than a day ahead of this computer's clock "
                     "(a device clock not yet set, or set ahead)")
    return "\n".join(lines)


def _text_cell(text: str) -> str:
    """A CSV text cell that a spreadsheet shows as text: a leading ' where it would start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv(timelines: list[Timeline], out: TextIO) -> None:
    """One row per device and bucket: its start, average faces in view, face-seconds, share of each emotion."""
    w = csv.writer(out)  # CRLF, as RFC 4180 has it: a CR in a cell is then quoted, so no name can start a row
    w.writerow(["device", "bucket_start", "faces", "face_seconds", *EMOTIONS])
    for tl in timelines:
        device = _text_cell(tl.device)  # the one text a device chooses; times and numbers start with a digit
        for i, secs in enumerate(tl.seconds):
            w.writerow([device, utc_iso(tl.start + i * tl.bucket), f"{tl.faces(i):.3f}", f"{sum(secs):.2f}",
                        *(f"{s:.4f}" for s in tl.shares(i))])


def step_name(seconds: float) -> str:
    """'minute', '5 minutes', '30 seconds': one bucket in words."""
    n, unit = (seconds / 60, "minute") if seconds % 60 == 0 else (seconds, "second")
    return unit if n == 1 else f"{n:g} {unit}s"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: the bitmap font, one size
        return ImageFont.load_default()


def _merge_factor(bucket: float, n: int, bars: float) -> int:
    """How many buckets make one bar so that n buckets fit in `bars`: a round step (minutes, hours, days)."""
    for minutes in TICK_MINUTES:
        factor = minutes * 60 / bucket
        if factor >= 1 and factor == int(factor) and n / factor <= bars:
            return int(factor)
    return max(1, math.ceil(n / bars))


def _merged(tl: Timeline, factor: int) -> list[list[float]]:
    """Buckets summed `factor` at a time, so a long timeline fits the picture."""
    return [[sum(b[k] for b in tl.seconds[i:i + factor]) for k in range(len(EMOTIONS))]
            for i in range(0, len(tl.seconds), factor)]


def draw_png(timelines: list[Timeline], title: str, width: int = 1200) -> Image.Image:
    """Per device: stacked bars of each emotion's share per bucket, a line of faces in view, and the totals."""
    f_title, f_text, f_small = _font(22), _font(15), _font(12)
    left, right, panel_h, gap = 70, 70, 190, 70
    plot_w = width - left - right
    n = max(len(tl.seconds) for tl in timelines)
    factor = _merge_factor(timelines[0].bucket, n, plot_w / 2)  # at least 2 px a bar
    bucket = timelines[0].bucket * factor
    top = 90
    height = top + len(timelines) * (panel_h + gap) + 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 18), title, fill="black", font=f_title)
    x = left
    for e in EMOTIONS:  # legend
        d.rectangle([x, 56, x + 14, 70], fill=COLOURS[e])
        d.text((x + 20, 55), e, fill="black", font=f_text)
        x += 30 + int(d.textlength(e, font=f_text))
    d.line([x + 10, 63, x + 34, 63], fill="black", width=2)
    d.text((x + 40, 55), "faces in view (right axis)", fill="black", font=f_text)
    for p, tl in enumerate(timelines):
        y0 = top + p * (panel_h + gap) + 30
        y1 = y0 + panel_h
        buckets = _merged(tl, factor)
        faces = [sum(b) / bucket for b in buckets]
        peak = max(1, math.ceil(max(faces, default=0)))
        totals = tl.totals()
        whole = sum(totals)
        main = max(range(len(EMOTIONS)), key=lambda k: totals[k]) if whole else None
        mostly = f", mostly {EMOTIONS[main]} ({totals[main] / whole:.0%})" if main is not None else ", no faces"
        head = (f"{tl.device}: {tl.tracks} face{'' if tl.tracks == 1 else 's'} tracked, "
                f"{whole / 60:.1f} face-minutes{mostly}")
        d.text((left, y0 - 26), head, fill="black", font=f_text)
        d.rectangle([left, y0, left + plot_w, y1], outline=(120, 120, 120))
        for frac in (0.25, 0.5, 0.75):
            yy = y1 - frac * panel_h
            d.line([left, yy, left + plot_w, yy], fill=(225, 225, 225))
        for frac, label in ((0, "0%"), (0.5, "50%"), (1, "100%")):
            d.text((left - 8, y1 - frac * panel_h), label, fill="black", font=f_small, anchor="rm")
        bar_w = plot_w / max(1, len(buckets))  # no buckets: photos alone, or every event left out
        points = []
        for i, secs in enumerate(buckets):
            bx0, bx1 = left + i * bar_w, left + (i + 1) * bar_w
            total = sum(secs)
            yy = y1
            for k, e in enumerate(EMOTIONS):
                if total and secs[k]:
                    h = secs[k] / total * panel_h
                    d.rectangle([bx0, yy - h, max(bx0, bx1 - 1), yy], fill=COLOURS[e])
                    yy -= h
            points.append(((bx0 + bx1) / 2, y1 - faces[i] / peak * panel_h))
        if len(points) > 1:
            d.line(points, fill="black", width=2)
        elif points:
            d.ellipse([points[0][0] - 3, points[0][1] - 3, points[0][0] + 3, points[0][1] + 3], fill="black")
        for v in range(peak + 1):  # right axis: faces
            if peak <= 5 or v % math.ceil(peak / 5) == 0:
                d.text((left + plot_w + 8, y1 - v / peak * panel_h), str(v), fill="black", font=f_small, anchor="lm")
        d.text((left + plot_w + 8, y0 - 14), "faces", fill="black", font=f_small, anchor="lm")
        end = tl.start + len(buckets) * bucket
        step = next((s for s in TICK_MINUTES if (end - tl.start) / (s * 60) <= 10), TICK_MINUTES[-1]) * 60
        tick = math.ceil(tl.start / step) * step
        while buckets and tick <= end:  # at round times: every 1, 2, 5, 10, 15, 30 minutes, hours or days
            tx = left + (tick - tl.start) / (end - tl.start) * plot_w
            d.line([tx, y1, tx, y1 + 5], fill="black")
            stamp = utc_iso(tick)
            label = stamp[11:16] if step < 86400 and stamp[11:16] != "00:00" else stamp[5:10]
            d.text((tx, y1 + 7), label, fill="black", font=f_small, anchor="mt")
            tick += step
    d.text((left, height - 28), f"UTC, from {utc_iso(timelines[0].start)[:16].replace('T', ' ')}; each bar is "
           f"{step_name(bucket)}: the share of face time per emotion; the line is the average number of faces in view.",
           fill=(60, 60, 60), font=f_small)
    return img


def png_bytes(timelines: list[Timeline], title: str) -> bytes:
    """The picture as PNG."""
    buf = io.BytesIO()
    draw_png(timelines, title).save(buf, "PNG")
    return buf.getvalue()


def html_page(timelines: list[Timeline], title: str) -> str:
    """A self-contained page: the picture, the totals, and the timeline table."""
    esc = html.escape
    picture = base64.b64encode(png_bytes(timelines, title)).decode()
    heads = "".join(f"<th>{e}</th>" for e in EMOTIONS)
    totals = []
    for tl in timelines:
        t = tl.totals()
        whole = sum(t)
        cells = "".join(f"<td>{(v / whole if whole else 0):.1%}</td>" for v in t)
        totals.append(f"<tr><td>{esc(tl.device)}</td><td>{tl.events}</td><td>{tl.tracks}</td>"
                      f"<td>{whole / 60:.1f}</td>{cells}</tr>")
    rows = []
    for tl in timelines:
        for i in range(len(tl.seconds)):
            if sum(tl.seconds[i]):
                cells = "".join(f"<td>{s:.0%}</td>" for s in tl.shares(i))
                rows.append(f"<tr><td>{esc(tl.device)}</td><td>{utc_iso(tl.start + i * tl.bucket)[:16]}</td>"
                            f"<td>{tl.faces(i):.2f}</td>{cells}</tr>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{esc(title)}</h1>\n"
            f"<img alt=\"emotion timeline per device\" src=\"data:image/png;base64,{picture}\">\n"
            f"<h2>Totals: share of face time per emotion</h2>\n<table><tr><th>device</th><th>events</th>"
            f"<th>faces tracked</th><th>face-minutes</th>{heads}</tr>\n" + "\n".join(totals) + "</table>\n"
            f"<h2>Each {step_name(timelines[0].bucket)} with faces (UTC)</h2>\n<table><tr><th>device</th>"
            f"<th>from</th><th>faces in view</th>{heads}</tr>\n" + "\n".join(rows) + "</table>\n"
            "<p>No images are stored: only labels and scores.</p></body></html>\n")


def save(target: Path, timelines: list[Timeline], title: str) -> None:
    """Write the report as the target's suffix says (.csv, .png, else HTML), whole or not at all (WriteError)."""
    suffix = target.suffix.lower()
    if suffix == ".csv":  # encoded as it is written: the rows are never held twice
        buf = io.BytesIO()
        text = io.TextIOWrapper(buf, encoding="utf-8", newline="")
        write_csv(timelines, text)
        text.detach()  # flushes into buf and leaves it open
        data: bytes | memoryview = buf.getbuffer()
    elif suffix == ".png":
        data = png_bytes(timelines, title)
    else:
        data = html_page(timelines, title).encode()
    write_file(target, data)
