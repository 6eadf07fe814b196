"""Reading image files into upright 8-bit BGR arrays within a memory budget, and writing images safely."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from PIL import Image, UnidentifiedImageError

from edge_fer.config import open_regular
from edge_fer.errors import ImageError, WriteError, shown

if TYPE_CHECKING:  # numpy and OpenCV load on first decode or encode: `edge-fer report` writes with write_file
    import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}
# Rows converted at a time: the decoded picture and the BGR result are the only full-size arrays alive,
# so a 49 MP photo needs about 2 x 147 MB, not the five or six full-size copies a whole-image conversion makes.
BAND_ROWS = 256
_EXIF_ORIENTATION = 0x0112


def _walk_errors(root: Path, errors: list[str]) -> list[Path]:
    """The image files under a folder, sorted; each folder that cannot be read adds an error line."""
    found: list[Path] = []

    def failed(e: OSError) -> None:
        errors.append(f"{shown(e.filename or root)}: cannot read this folder ({e.strerror or e})")

    for folder, dirs, files in os.walk(root, onerror=failed):
        dirs.sort()
        found.extend(Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES
                     and os.path.isfile(os.path.join(folder, f)))
    return sorted(found)


def expand_paths(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given plus the images inside given folders; and one error line per path that yields none."""
    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
            exists = is_dir or p.exists()
        except OSError as e:  # e.g. a parent folder that may not be entered
            errors.append(f"{shown(p)}: cannot read ({e.strerror or e})")
            continue
        if is_dir:
            before = len(errors)
            found = _walk_errors(p, errors)
            if not found and len(errors) == before:
                errors.append(f"{shown(p)}: no images in this folder")
            files.extend(found)
        elif exists:
            files.append(p)
        else:
            errors.append(f"{shown(p)}: no such file or folder")
    return files, errors


def _band_to_rgb(band: Image.Image, gray_top: float | None, span: tuple[float, float] | None) -> np.ndarray:
    """One band of rows in any Pillow mode as 8-bit RGB: 16-bit scaled down, alpha on white, palettes expanded."""
    import numpy as np

    if gray_top is not None or span is not None:
        arr = np.asarray(band, dtype=np.float32)
        if span is not None:
            lo, width = span
            arr = (arr - lo) * (255.0 / width)
        elif gray_top is not None:
            arr = arr * (255.0 / gray_top)
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if band.mode in ("RGBA", "LA", "PA") or (band.mode == "P" and "transparency" in band.info):
        rgba = band.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        band = Image.alpha_composite(background, rgba)
    return np.asarray(band.convert("RGB"))


def _to_bgr(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit BGR, converted a band of rows at a time into one preallocated array."""
    import numpy as np

    w, h = img.size
    gray_top: float | None = None
    span: tuple[float, float] | None = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        top = cast("tuple[float, float]", img.getextrema())[1]  # one band: (min, max)
        gray_top = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0
    elif img.mode == "F":
        lo, hi = cast("tuple[float, float]", img.getextrema())
        span = (lo, max(hi - lo, 1e-9))
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, BAND_ROWS):
        band = img.crop((0, y, w, min(h, y + BAND_ROWS)))
        out[y:y + band.height] = _band_to_rgb(band, gray_top, span)[..., ::-1]
    return out


def _upright(bgr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored sideways upright, as their EXIF orientation says (1 is already upright)."""
    import cv2
    import numpy as np

    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.transpose(1, 0, 2), 6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
             7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)}
    if orientation not in turns:
        return bgr
    return np.ascontiguousarray(turns[orientation](bgr))


def _decode(f: BinaryIO, path: Path, max_pixels: int) -> np.ndarray:
    with Image.open(f) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(f"{shown(path)}: {w}x{h} is over the limit of {max_pixels:,} pixels "
                             "(images.max_pixels)")
        try:
            img.load()
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            bgr = _to_bgr(img)
        except MemoryError:
            raise ImageError(f"{shown(path)}: {w}x{h} needs more memory than is free to decode "
                             f"(about {w * h * 7 // 2**20} MB; lower images.max_pixels)") from None
    # The decoded picture is freed by now, so turning the result upright costs one more copy at most.
    return _upright(bgr, orientation)


def read_image(path: str | Path, max_pixels: int) -> np.ndarray:
    """Decode an image file into an upright BGR uint8 array, or raise ImageError with one line."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow's warnings (decompression bomb, odd TIFF tags) would break the one-line-per-image output;
            # the pixel limit and the errors raised say what matters.
            warnings.simplefilter("ignore")
            with open_regular(path) as f:  # not a FIFO, which would wait for a writer, nor an endless device
                return _decode(f, path, max_pixels)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{shown(path)}: no such file") from None
    except PermissionError:
        raise ImageError(f"{shown(path)}: cannot read (permission denied)") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        reason = "empty file" if size == 0 else "not an image format that can be read"
        raise ImageError(f"{shown(path)}: {reason}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{shown(path)}: too large to decode safely") from None
    except OSError as e:
        if e.errno is not None:  # the system refused the read (I/O error, ...), the data may be fine
            raise ImageError(f"{shown(path)}: cannot read ({e.strerror})") from None
        raise ImageError(f"{shown(path)}: corrupt or truncated image ({e})") from None
    except (SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated and corrupt data this way.
        raise ImageError(f"{shown(path)}: corrupt or truncated image ({e})") from None


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Write a file whole or not at all: a full or read-only disk raises WriteError and leaves no partial file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # a name no one can plant a link at in advance
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL makes a new file or fails, never following a link; 0o666 less the umask, where mkstemp gives 0o600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        created = True
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a link at `path` is replaced itself, not what it points to
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise WriteError(f"{shown(path)}: cannot write ({e.strerror or e})") from None


def save_image(path: Path, image: np.ndarray) -> None:
    """Encode an image by its file suffix (PNG when it has none) and write it with write_file."""
    import cv2

    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
    try:
        ok, buf = cv2.imencode(suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise WriteError(f"{shown(path)}: cannot write ({suffix} images cannot be encoded here)")
    write_file(path, buf.data)
