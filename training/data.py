"""Read FER-2013 (challenge CSV, its tarball, or the Kaggle image folders) into cached arrays."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

log = logging.getLogger(__name__)

# FER-2013's own label codes, which are also the model's output order.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = ("Training", "PublicTest", "PrivateTest")
SIZE = 48
CSV_NAME = "fer2013.csv"
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
# Kaggle's folder names differ from ours in one place.
KAGGLE_CLASS = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
DEFAULT_CACHE = Path(os.environ.get("EDGE_FER_CACHE", Path.home() / ".cache" / "edge-fer"))


@dataclass
class Split:
    """Images (N, 48, 48) uint8, labels (N,) int64 and FER-2013 row numbers (N,) of one split."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, n: int) -> Split:
        """The first n images of the split."""
        return Split(self.x[:n], self.y[:n], self.rows[:n])


def _open_csv(source: Path) -> Iterator[TextIO]:
    """Yield a text stream of fer2013.csv from a .csv file, a tarball or a folder holding either."""
    if source.is_dir():
        hits = sorted(source.rglob(CSV_NAME))
        if not hits:
            raise FileNotFoundError(f"{source}: no {CSV_NAME} inside")
        source = hits[0]
    if source.suffix == ".csv":
        with open(source, newline="") as f:
            yield f
        return
    with tarfile.open(source, "r:*") as tar:
        member = next((m for m in tar if m.isfile() and m.name.endswith(CSV_NAME)), None)
        if member is None:
            raise FileNotFoundError(f"{source}: no {CSV_NAME} in the archive")
        raw = tar.extractfile(member)
        assert raw is not None
        yield io.TextIOWrapper(raw, newline="")


def read_csv(source: Path) -> dict[str, Split]:
    """Parse the challenge CSV; bad rows are logged with their row number and skipped."""
    xs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    ys: dict[str, list[int]] = {s: [] for s in SPLITS}
    rows: dict[str, list[int]] = {s: [] for s in SPLITS}
    for stream in _open_csv(source):
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise ValueError(f"{source}: header is {header}, expected emotion,pixels,Usage")
        for i, rec in enumerate(reader):
            try:
                label, pixels, usage = int(rec[0]), rec[1], rec[2].strip()
                if usage not in xs or not 0 <= label < len(LABELS):
                    raise ValueError(f"label {rec[0]!r} usage {usage!r}")
                img = np.array(pixels.split(), dtype=np.int32)
                if img.size != SIZE * SIZE or img.min() < 0 or img.max() > 255:
                    raise ValueError(f"{img.size} pixel values, need {SIZE * SIZE} in 0..255")
            except (ValueError, IndexError) as e:
                log.warning("row %d skipped: %s", i, e)
                continue
            xs[usage].append(img.astype(np.uint8).reshape(SIZE, SIZE))
            ys[usage].append(label)
            rows[usage].append(i)
    return {s: _stack(xs[s], ys[s], rows[s]) for s in SPLITS}


def read_folders(root: Path) -> dict[str, Split]:
    """Read the Kaggle layout <root>/{train,test}/<class>/<Split>_<id>.jpg; the prefix names the split."""
    import cv2  # only this reader needs image decoding

    xs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    ys: dict[str, list[int]] = {s: [] for s in SPLITS}
    rows: dict[str, list[int]] = {s: [] for s in SPLITS}
    for path in sorted(root.glob("*/*/*")):
        if path.suffix.lower() not in IMAGE_EXTS:
            continue
        label = KAGGLE_CLASS.get(path.parent.name.lower())
        split, _, num = path.stem.partition("_")
        if label is None or split not in xs:
            log.warning("%s skipped: class or split not recognised", path)
            continue
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            log.warning("%s skipped: unreadable image", path)
            continue
        if img.shape != (SIZE, SIZE):
            img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        xs[split].append(img)
        ys[split].append(label)
        rows[split].append(int(num) if num.isdigit() else -1)
    if not any(ys.values()):
        raise FileNotFoundError(f"{root}: no images in the <split>/<class>/<Usage>_<id> layout")
    return {s: _stack(xs[s], ys[s], rows[s]) for s in SPLITS}


def _stack(x: list[np.ndarray], y: list[int], rows: list[int]) -> Split:
    arr = np.stack(x) if x else np.zeros((0, SIZE, SIZE), np.uint8)
    return Split(arr, np.asarray(y, np.int64), np.asarray(rows, np.int64))


def _cache_key(source: Path) -> str:
    st = source.stat()
    return hashlib.sha1(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def load(source: str | Path, cache_dir: Path | None = DEFAULT_CACHE) -> dict[str, Split]:
    """Load every split, decoding once into an .npz cache keyed by the source's path, size and time."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    is_csv_source = source.is_file() or any(source.rglob(CSV_NAME))
    cache = cache_dir / f"fer2013-{_cache_key(source)}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as z:
            return {s: Split(z[f"{s}_x"], z[f"{s}_y"], z[f"{s}_rows"]) for s in SPLITS}
    splits = read_csv(source) if is_csv_source else read_folders(source)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # One temporary name per process: two runs started together must not rename each other's file.
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        arrays = {f"{s}_{k}": getattr(splits[s], k) for s in SPLITS for k in ("x", "y", "rows")}
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    return splits


# FER+ vote columns for our labels, in LABELS order; contempt, unknown and not-a-face are left out.
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def read_ferplus_votes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """FER+ votes (rows, 7) in LABELS order and the votes for everything else (contempt, unknown, not-a-face)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        try:
            cols = [header.index(name) for name in FERPLUS_COLUMNS]
            name_col = header.index("Image name")
        except ValueError:
            raise ValueError(f"{path}: header {header} lacks the FER+ vote columns") from None
        other = [i for i in range(len(header)) if i not in cols and i > name_col]
        rows = [(rec[name_col].strip(), [float(rec[c] or 0) for c in cols], sum(float(rec[c] or 0) for c in other))
                for rec in reader]
    votes = np.array([v for _, v, _ in rows], np.float64)
    # A row FER+ dropped (no image name) counts as having no vote for anything.
    dropped = np.array([not name for name, _, _ in rows])
    votes[dropped] = 0
    rest = np.where(dropped, 0.0, np.array([o for _, _, o in rows], np.float64))
    return votes, rest


def read_ferplus(path: Path) -> np.ndarray:
    """FER+ votes as a (rows, 7) distribution in LABELS order, one row per fer2013.csv row; NaN where no vote counts."""
    votes, _ = read_ferplus_votes(path)
    total = votes.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, votes / total, np.nan).astype(np.float32)


def ferplus_majority(path: Path) -> np.ndarray:
    """The FER+ majority label of each row in LABELS order; -1 where it is contempt, unknown, not-a-face or a tie."""
    votes, rest = read_ferplus_votes(path)
    best = votes.max(axis=1)
    top = votes.argmax(axis=1)
    tie = (votes == best[:, None]).sum(axis=1) > 1
    return np.where((best > 0) & ~tie & (best > rest), top, -1).astype(np.int64)


def counts_table(splits: dict[str, Split]) -> str:
    """Images per split and class, as a small text table."""
    lines = ["split        " + " ".join(f"{n[:8]:>8}" for n in LABELS) + "    total"]
    for name in SPLITS:
        c = Counter(splits[name].y.tolist())
        lines.append(f"{name:<12} " + " ".join(f"{c.get(i, 0):>8}" for i in range(len(LABELS)))
                     + f" {len(splits[name]):>8}")
    return "\n".join(lines)

