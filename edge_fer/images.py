"""Reading image files into upright 8-bit BGR arrays, with a pixel limit and clear errors."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_fer.errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}


def expand_paths(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given plus the images inside given folders; and one error line per path that yields none."""
    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{p}: no images in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors


def _to_bgr(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit BGR: 16-bit scaled down, alpha composited on white, palettes expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1e-9)
        gray = ((arr - arr.min()) * (255.0 / span)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def read_image(path: str | Path, max_pixels: int) -> np.ndarray:
    """Decode an image file into an upright BGR uint8 array, or raise ImageError with one line."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow's warnings (decompression bomb, odd TIFF tags) would break the one-line-per-image output;
            # the pixel limit below and the errors raised say what matters.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(f"{path}: {w}x{h} is over the limit of {max_pixels:,} pixels "
                                     "(images.max_pixels)")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_bgr(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        reason = "empty file" if size == 0 else "not an image format that can be read"
        raise ImageError(f"{path}: {reason}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too large to decode safely") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated and corrupt data this way.
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
