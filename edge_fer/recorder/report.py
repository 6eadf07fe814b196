"""What `edge-fer report` makes of stored events: per-device timelines and totals, as text, CSV, PNG or HTML."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import enum
import html
import io
import math
import time
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from PIL import Image, ImageDraw, ImageFont

from edge_fer.errors import UsageError
from edge_fer.messaging.events import utc_iso
from edge_fer.recorder.store import EMOTIONS as MODEL_EMOTIONS
from edge_fer.types import UNSURE
from edge_fer.vision.images import write_file

# Face time of tracks none of whose faces could be judged is its own column, never spread over the others. A model
# with other labels adds its own columns (in the order they first appear) before it.
EMOTIONS = (*MODEL_EMOTIONS, UNSURE)

# Colours a reader can tell apart, with the usual associations (happy warm, sad blue, neutral gray).
COLOURS = {"angry": (214, 39, 40), "disgust": (107, 142, 35), "fear": (148, 103, 189), "happy": (255, 179, 0),
           "sad": (31, 119, 180), "surprise": (23, 190, 207), "neutral": (160, 160, 160),
           UNSURE: (90, 90, 90)}
# For the labels of other models, in turn.
MORE_COLOURS = ((140, 86, 75), (227, 119, 194), (188, 189, 34), (255, 127, 14), (44, 160, 44), (127, 127, 127),
                (0, 0, 128), (128, 0, 0))
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
# The picture's layout in pixels: margins, each device's plot height and the gap between plots, the legend's height.
PNG_LEFT, PNG_RIGHT, PNG_PANEL_H, PNG_GAP, PNG_TOP = 70, 70, 190, 70, 90
PALE = 0.45  # how much of a part-recorded bar's colour is kept (the rest is white)


class Coverage(enum.Enum):
    """How much of a bucket lies between a device's first and last event: the time its faces were followed."""

    WHOLE = "whole"
    PART = "part"  # the bucket holds the device's first or last event: the faces line leaves it out
    NONE = "none"  # before the device's first event or after its last one


def parse_tz(text: str) -> dt.tzinfo | None:
    """`--tz`: an IANA zone name (Europe/Berlin), UTC, or local (this computer's zone, returned as None)."""
    if text.strip().lower() == "local":
        return None
    if text.strip().upper() in ("UTC", "Z"):
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(text.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {text!r}: expected a time zone name such as Europe/Berlin or America/New_York, "
                         "UTC, or local") from None


def local_time(t: float, tz: dt.tzinfo | None) -> dt.datetime:
    """The time `t` in zone `tz`, or in this computer's zone when tz is None."""
    utc = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return utc.astimezone(tz) if tz is not None else utc.astimezone()


def zone_name(start: float, end: float, tz: dt.tzinfo | None) -> str:
    """The zone's name over a span ('CET', 'CET/CEST' across a change), with its UTC offset at the start."""
    a, b = local_time(start, tz), local_time(end, tz)
    names = a.tzname() or "", b.tzname() or ""
    offset = a.strftime("%z")
    label = names[0] if names[0] == names[1] else "/".join(names)
    return label if offset == "+0000" and label == "UTC" else f"{label}, UTC{offset[:3]}:{offset[3:]}"


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
    first: float = math.nan  # the device's first and last timeline event: when its faces were followed
    last: float = math.nan
    emotions: tuple[str, ...] = EMOTIONS  # the columns of `seconds`: the same for every timeline of a report

    def faces(self, i: int) -> float:
        """Average number of faces in view during bucket i."""
        return sum(self.seconds[i]) / self.bucket

    def shares(self, i: int) -> list[float]:
        """Share of each emotion among the faces in bucket i (all zero when none)."""
        total = sum(self.seconds[i])
        return [s / total if total else 0.0 for s in self.seconds[i]]

    def recorded(self, i: int, count: int = 1) -> float:
        """Seconds of buckets i to i + count - 1 between the device's first and last event."""
        lo, hi = self.start + i * self.bucket, self.start + (i + count) * self.bucket
        return max(0.0, min(hi, self.last) - max(lo, self.first)) if not math.isnan(self.first) else 0.0

    def coverage(self, i: int, count: int = 1) -> Coverage:
        """Whether buckets i to i + count - 1 lie wholly, partly or not at all within the device's events."""
        seconds = self.recorded(i, count)
        # A millisecond short is whole: frame times carry milliseconds, bucket edges are float sums.
        return Coverage.WHOLE if seconds >= count * self.bucket - 1e-3 else Coverage.PART if seconds else Coverage.NONE

    def totals(self) -> list[float]:
        """Face-seconds per emotion over the whole timeline."""
        return [sum(b[k] for b in self.seconds) for k in range(len(self.emotions))]

    def add(self, t0: float, t1: float, emotion: int) -> None:
        """Count [t0, t1) of one face showing `emotion`, split across buckets."""
        t0 = max(t0, self.start)  # a frame time a few ms before the device's first one
        while t0 < t1:
            i = int((t0 - self.start) // self.bucket)
            while i >= len(self.seconds):
                self.seconds.append([0.0] * len(self.emotions))
            row = self.seconds[i]
            row.extend([0.0] * (emotion + 1 - len(row)))  # a label first seen after this bucket was made
            edge = min(t1, self.start + (i + 1) * self.bucket)
            row[emotion] += edge - t0
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
    index = {e: i for i, e in enumerate(EMOTIONS)}  # grows with the labels of other models
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
            tl.first = tl.last = t
            lo = min(lo, tl.start)
        hi = max(hi, t)
        tl.first, tl.last = min(tl.first, t), max(tl.last, t)
        _check_size(len(timelines), lo, hi, bucket)  # before add() grows the device's buckets
        key = (run_id, track)
        if key in open_:
            since, label = open_.pop(key)
            tl.add(since, t, index.setdefault(emotion, len(index)) if kind == "end" else label)
        if kind == "start":
            tl.tracks += 1
        if kind != "end":
            open_[key] = (t, index.setdefault(emotion, len(index)))
    _check_size(len(timelines), lo, hi, bucket)  # devices with photos alone get a row per bucket too
    known = [tl for tl in timelines.values() if not math.isnan(tl.start)]
    start = min((tl.start for tl in known), default=0.0)
    buckets = max((round((tl.start - start) / bucket) + len(tl.seconds) for tl in known), default=0)
    # One set of columns for all devices, unsure last: FER-2013's labels, then any other model's.
    emotions = tuple(e for e in index if e != UNSURE) + (UNSURE,)
    order = [index[e] for e in emotions]
    for tl in timelines.values():  # one grid for all devices
        lead = 0 if math.isnan(tl.start) else round((tl.start - start) / bucket)
        padded = [row + [0.0] * (len(index) - len(row)) for row in tl.seconds]
        tl.seconds = [[0.0] * len(emotions) for _ in range(lead)] + [[row[k] for k in order] for row in padded]
        tl.seconds += [[0.0] * len(emotions) for _ in range(buckets - len(tl.seconds))]
        tl.start = start
        tl.emotions = emotions
    return list(timelines.values())


def colour(emotion: str, emotions: tuple[str, ...]) -> tuple[int, int, int]:
    """The colour an emotion is drawn in: its own for FER-2013's labels, the next free one for another model's."""
    if emotion in COLOURS:
        return COLOURS[emotion]
    others = [e for e in emotions if e not in COLOURS]
    return MORE_COLOURS[others.index(emotion) % len(MORE_COLOURS)]


def summary(timelines: list[Timeline], tz: dt.tzinfo | None = None) -> str:
    """Totals per device and emotion as a text table; its start also in zone `tz` (None: this computer's)."""
    if not timelines:
        return "no events"
    head = (f"{'device':<16} {'events':>7} {'tracks':>7} {'face-min':>9}  "
            + " ".join(f"{e[:8]:>8}" for e in timelines[0].emotions))
    start = timelines[0].start
    here = local_time(start, tz)
    lines = [f"from {utc_iso(start)} ({here:%Y-%m-%d %H:%M:%S} {here.tzname()}) for "
             f"{len(timelines[0].seconds) * timelines[0].bucket / 60:.0f} min; share of face time per emotion", head]
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
    w.writerow(["device", "bucket_start", "faces", "face_seconds",
                *map(_text_cell, timelines[0].emotions if timelines else EMOTIONS)])
    for tl in timelines:
        device = _text_cell(tl.device)  # the one text a device chooses; times and numbers start with a digit
        for i, secs in enumerate(tl.seconds):
            w.writerow([device, utc_iso(tl.start + i * tl.bucket), f"{tl.faces(i):.3f}", f"{sum(secs):.2f}",
                        *(f"{s:.4f}" for s in tl.shares(i))])


def step_name(seconds: float) -> str:
    """'minute', '5 minutes', '30 seconds': one bucket in words, as in 'one bucket per minute'."""
    n, unit = (seconds / 60, "minute") if seconds % 60 == 0 else (seconds, "second")
    return unit if n == 1 else f"{n:g} {unit}s"


def step_amount(seconds: float) -> str:
    """'one minute', '5 minutes': one bucket in words, as in 'each bar is one minute'."""
    name = step_name(seconds)
    return f"one {name}" if name in ("minute", "second") else name


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
    return [[sum(b[k] for b in tl.seconds[i:i + factor]) for k in range(len(tl.emotions))]
            for i in range(0, len(tl.seconds), factor)]


def bar_factor(timelines: list[Timeline], width: int = 1200) -> int:
    """How many buckets one bar of the picture sums."""
    n = max(len(tl.seconds) for tl in timelines)
    return _merge_factor(timelines[0].bucket, n, (width - PNG_LEFT - PNG_RIGHT) / 2)  # at least 2 px a bar


def faces_line(tl: Timeline, factor: int) -> list[float | None]:
    """Average faces in view per bar of `factor` buckets; None for a bar not wholly between the device's first
    and last event (an average over time it may not have been watching would draw a rise or fall that never was)."""
    span = tl.bucket * factor
    return [sum(sum(b) for b in tl.seconds[i:i + factor]) / span
            if tl.coverage(i, min(factor, len(tl.seconds) - i)) is Coverage.WHOLE else None
            for i in range(0, len(tl.seconds), factor)]


def _pale(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(round(c * PALE + 255 * (1 - PALE)) for c in rgb)  # type: ignore[return-value]


def draw_png(timelines: list[Timeline], title: str, width: int = 1200, tz: dt.tzinfo | None = None) -> Image.Image:
    """Per device: stacked bars of each emotion's share per bucket, a line of faces in view, and the totals;
    times in zone `tz` (None: this computer's)."""
    f_title, f_text, f_small = _font(22), _font(15), _font(12)
    left, right, panel_h, gap = PNG_LEFT, PNG_RIGHT, PNG_PANEL_H, PNG_GAP
    plot_w = width - left - right
    factor = bar_factor(timelines, width)
    bucket = timelines[0].bucket * factor
    top = PNG_TOP
    height = top + len(timelines) * (panel_h + gap) + 56
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 18), title, fill="black", font=f_title)
    x = left
    emotions = timelines[0].emotions
    for e in emotions:  # legend
        d.rectangle([x, 56, x + 14, 70], fill=colour(e, emotions))
        d.text((x + 20, 55), e, fill="black", font=f_text)
        x += 30 + int(d.textlength(e, font=f_text))
    d.line([x + 10, 63, x + 34, 63], fill="black", width=2)
    d.text((x + 40, 55), "faces in view (right axis)", fill="black", font=f_text)
    for p, tl in enumerate(timelines):
        y0 = top + p * (panel_h + gap) + 30
        y1 = y0 + panel_h
        buckets = _merged(tl, factor)
        faces = faces_line(tl, factor)
        peak = max(1, math.ceil(max((f for f in faces if f is not None), default=0)))
        totals = tl.totals()
        whole = sum(totals)
        main = max(range(len(emotions)), key=lambda k: totals[k]) if whole else None
        mostly = f", mostly {emotions[main]} ({totals[main] / whole:.0%})" if main is not None else ", no faces"
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
        runs: list[list[tuple[float, float]]] = [[]]  # the line, broken where a bar is left out of it
        for i, secs in enumerate(buckets):
            bx0, bx1 = left + i * bar_w, left + (i + 1) * bar_w
            total = sum(secs)
            whole = faces[i] is not None
            yy = y1
            for k, e in enumerate(emotions):
                if total and secs[k]:
                    h = secs[k] / total * panel_h
                    rgb = colour(e, emotions)
                    d.rectangle([bx0, yy - h, max(bx0, bx1 - 1), yy], fill=rgb if whole else _pale(rgb))
                    yy -= h
            face_count = faces[i]
            if face_count is None:
                runs.append([])
            else:
                runs[-1].append(((bx0 + bx1) / 2, y1 - face_count / peak * panel_h))
        for points in runs:
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
        # Round times on the zone's clock: its offset at the start (a change within the span shifts later ticks).
        offset = (local_time(tl.start, tz).utcoffset() or dt.timedelta()).total_seconds()
        tick = math.ceil((tl.start + offset) / step) * step - offset
        while buckets and tick <= end:  # at round times: every 1, 2, 5, 10, 15, 30 minutes, hours or days
            tx = left + (tick - tl.start) / (end - tl.start) * plot_w
            d.line([tx, y1, tx, y1 + 5], fill="black")
            when = local_time(tick, tz)
            label = f"{when:%H:%M}" if step < 86400 and f"{when:%H:%M}" != "00:00" else f"{when:%m-%d}"
            d.text((tx, y1 + 7), label, fill="black", font=f_small, anchor="mt")
            tick += step
    first = timelines[0].start
    zone = zone_name(first, first + len(timelines[0].seconds) * timelines[0].bucket, tz)
    d.text((left, height - 44), f"Times in {zone}, from {local_time(first, tz):%Y-%m-%d %H:%M}. Each bar is "
           f"{step_amount(bucket)}: the share of face time per emotion; the line is the average number of faces "
           "in view.", fill=(60, 60, 60), font=f_small)
    d.text((left, height - 26), "Pale bars hold a device's first or last event, so only part of their time was "
           "followed: the line leaves them out.", fill=(60, 60, 60), font=f_small)
    return img


def png_bytes(timelines: list[Timeline], title: str, tz: dt.tzinfo | None = None) -> bytes:
    """The picture as PNG."""
    buf = io.BytesIO()
    draw_png(timelines, title, tz=tz).save(buf, "PNG")
    return buf.getvalue()


def html_page(timelines: list[Timeline], title: str, tz: dt.tzinfo | None = None) -> str:
    """A self-contained page: the picture, the totals, and the timeline table, in zone `tz` (None: this computer's)."""
    esc = html.escape
    picture = base64.b64encode(png_bytes(timelines, title, tz)).decode()
    heads = "".join(f"<th>{esc(e)}</th>" for e in timelines[0].emotions)
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
                when = tl.start + i * tl.bucket
                # A bucket only partly followed: its average counts time the device may not have been watching.
                part = tl.coverage(i) is not Coverage.WHOLE
                faces = f"{tl.faces(i):.2f} (part)" if part else f"{tl.faces(i):.2f}"
                rows.append(f"<tr><td>{esc(tl.device)}</td><td>{local_time(when, tz):%Y-%m-%d %H:%M}</td>"
                            f"<td>{utc_iso(when)[11:16]}</td><td>{faces}</td>{cells}</tr>")
    first = timelines[0].start
    zone = esc(zone_name(first, first + len(timelines[0].seconds) * timelines[0].bucket, tz))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{esc(title)}</h1>\n"
            f"<img alt=\"emotion timeline per device\" src=\"data:image/png;base64,{picture}\">\n"
            f"<h2>Totals: share of face time per emotion</h2>\n<table><tr><th>device</th><th>events</th>"
            f"<th>faces tracked</th><th>face-minutes</th>{heads}</tr>\n" + "\n".join(totals) + "</table>\n"
            f"<h2>Buckets of {step_amount(timelines[0].bucket)} with faces</h2>\n<p>Times in {zone}. "
            "(part): the bucket holds the device's first or last event, so only part of it was followed and its "
            "average of faces in view is lower than what was seen.</p>\n<table><tr><th>device</th>"
            f"<th>from ({zone})</th><th>UTC</th><th>faces in view</th>{heads}</tr>\n" + "\n".join(rows) + "</table>\n"
            "<p>No images are stored: only labels and scores.</p></body></html>\n")


def save(target: Path, timelines: list[Timeline], title: str, tz: dt.tzinfo | None = None) -> None:
    """Write the report as the target's suffix says (.csv, .png, else HTML), whole or not at all (WriteError).

    The picture and the page show times in zone `tz` (None: this computer's); the CSV keeps UTC."""
    suffix = target.suffix.lower()
    if suffix == ".csv":  # encoded as it is written: the rows are never held twice
        buf = io.BytesIO()
        text = io.TextIOWrapper(buf, encoding="utf-8", newline="")
        write_csv(timelines, text)
        text.detach()  # flushes into buf and leaves it open
        data: bytes | memoryview = buf.getbuffer()
    elif suffix == ".png":
        data = png_bytes(timelines, title, tz)
    else:
        data = html_page(timelines, title, tz).encode()
    write_file(target, data)
