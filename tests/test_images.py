"""Image reading: unusual but valid files work, bad ones give one clear error."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_fer.errors import ImageError, WriteError
from edge_fer.vision.images import expand_paths, read_image, write_file
from tests.conftest import ASTRONAUT

LIMIT = 50_000_000


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.open(ASTRONAUT).convert("RGB")


def _variants(src: Image.Image, d: Path) -> dict[str, Path]:
    """The astronaut saved in many modes and formats."""
    out = {}
    gray16 = (np.asarray(src.convert("L"), dtype=np.uint16) * 257)
    out["png16"] = d / "gray16.png"
    Image.fromarray(gray16).save(out["png16"])
    out["rgba"] = d / "rgba.png"
    rgba = src.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(out["rgba"])
    out["palette"] = d / "palette.png"
    src.convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    out["gray"] = d / "gray.png"
    src.convert("L").save(out["gray"])
    out["cmyk"] = d / "cmyk.jpg"
    src.convert("CMYK").save(out["cmyk"], quality=95)
    out["progressive"] = d / "progressive.jpg"
    src.save(out["progressive"], quality=90, progressive=True)
    out["webp"] = d / "img.webp"
    src.save(out["webp"], quality=90)
    out["bmp"] = d / "img.bmp"
    src.save(out["bmp"])
    return out


@pytest.mark.parametrize("kind", ["png16", "rgba", "palette", "gray", "cmyk", "progressive", "webp", "bmp"])
def test_unusual_formats_decode_to_the_same_picture(astronaut: Image.Image, tmp_path: Path, kind: str) -> None:
    path = _variants(astronaut, tmp_path)[kind]
    bgr = read_image(path, LIMIT)
    assert bgr.dtype == np.uint8 and bgr.shape == (512, 512, 3)
    # Every variant shows the same scene: its gray levels track the original's closely.
    ref = np.asarray(astronaut.convert("L"), dtype=np.float64)
    gray = bgr.astype(np.float64) @ [0.114, 0.587, 0.299]
    assert np.corrcoef(ref.ravel(), gray.ravel())[0, 1] > 0.95


def test_exif_orientation_turns_phone_photos_upright(astronaut: Image.Image, tmp_path: Path) -> None:
    # A camera held sideways stores the pixels rotated and says so in the EXIF orientation tag.
    stored = astronaut.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    bgr = read_image(path, LIMIT)
    assert bgr.shape == (512, 512, 3)
    ref = np.asarray(astronaut.convert("L"), dtype=np.float64)
    gray = bgr.astype(np.float64) @ [0.114, 0.587, 0.299]
    assert np.corrcoef(ref.ravel(), gray.ravel())[0, 1] > 0.95


def _truncated_jpeg(d: Path, astronaut: Image.Image) -> Path:
    full = d / "full.jpg"
    astronaut.save(full, quality=90)
    cut = d / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not an image format"),
    ("truncated", "corrupt or truncated"),
    ("folder", "cannot read (a folder, not a regular file)"),
    ("device", "cannot read (a character device, not a regular file)"),  # endless, not empty
])
def test_bad_files_raise_one_line(astronaut: Image.Image, tmp_path: Path, case: str, message: str) -> None:
    path = {
        "missing": lambda: tmp_path / "nope.jpg",
        "empty": lambda: (tmp_path / "empty.jpg", (tmp_path / "empty.jpg").write_bytes(b""))[0],
        "text": lambda: (tmp_path / "notes.jpg", (tmp_path / "notes.jpg").write_text("hello\n"))[0],
        "truncated": lambda: _truncated_jpeg(tmp_path, astronaut),
        "folder": lambda: tmp_path,
        "device": lambda: Path("/dev/zero"),
    }[case]()
    with pytest.raises(ImageError) as e:
        read_image(path, LIMIT)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(ImageError, match="4000x3000 is over the limit of 1,000,000 pixels"):
        read_image(path, 1_000_000)


def test_folders_expand_and_empty_ones_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (10, 10)).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    files, errors = expand_paths([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c.jpg")])
    assert files == [tmp_path / "a" / "x.png"]
    assert errors == [f"{tmp_path / 'b'}: no images in this folder", f"{tmp_path / 'c.jpg'}: no such file or folder"]


@contextlib.contextmanager
def unprivileged():
    """Run the block as user nobody when we are root (root reads everything), else as we are."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def public_dir():
    """A folder user nobody may enter (pytest's own tmp folders are root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="edge-fer-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_unreadable_files_and_folders_say_so(public_dir: Path) -> None:
    photo = public_dir / "secret.png"
    Image.new("L", (10, 10)).save(photo)
    photo.chmod(0o600)
    closed = public_dir / "closed"
    closed.mkdir(mode=0o700)
    Image.new("L", (10, 10)).save(closed / "in.png")
    tree = public_dir / "tree"
    (tree / "open").mkdir(parents=True)
    (tree / "shut").mkdir(mode=0o700)
    Image.new("L", (10, 10)).save(tree / "open" / "a.png")
    Image.new("L", (10, 10)).save(tree / "shut" / "b.png")
    for p in (photo, closed, tree, tree / "open", tree / "open" / "a.png"):
        os.chown(p, 0, 0)
    with unprivileged():
        with pytest.raises(ImageError) as e:
            read_image(photo, LIMIT)
        files, errors = expand_paths([str(closed), str(tree)])
    assert str(e.value) == f"{photo}: cannot read (permission denied)"
    assert files == [tree / "open" / "a.png"]
    assert errors == [f"{closed}: cannot read this folder (Permission denied)",
                      f"{tree / 'shut'}: cannot read this folder (Permission denied)"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_pillow_does(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    pixels = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), np.uint8)  # not square
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[..., ::-1]
    assert np.array_equal(read_image(path, LIMIT), expected)


def test_a_write_leaves_no_temporary_file_and_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(WriteError, match="taken.png: cannot write"):
        write_file(tmp_path / "taken.png", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]
    before = os.umask(0o027)
    try:
        write_file(tmp_path / "new.json", b"{}")
    finally:
        os.umask(before)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "taken.png"]
