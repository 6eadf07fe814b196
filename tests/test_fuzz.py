"""Fuzzing the one-shot mode with broken image files, and config files with wrong keys and values."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_fer.cli.main import main
from edge_fer.config import Config, key_name, load
from edge_fer.errors import EXIT_INPUT, EXIT_OK, ConfigError
from tests.conftest import ASTRONAUT

FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF", "tif": "TIFF"}


def _seeds() -> dict[str, bytes]:
    """Small valid files of each format, from the example photo."""
    img = Image.open(ASTRONAUT).convert("RGB").resize((96, 96))
    out = {}
    for ext, fmt in FORMATS.items():
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[ext] = buf.getvalue()
    return out


SEEDS = _seeds()


@st.composite
def broken_files(draw: st.DrawFn) -> tuple[str, bytes]:
    ext = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[ext])
    how = draw(st.sampled_from(["truncate", "flip", "splice", "random", "header-only"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 20))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=200))
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=3000)))
    else:
        data = data[: min(len(data), 64)]
    return ext, bytes(data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=broken_files())
def test_broken_images_never_crash_and_exit_as_documented(tmp_path: Path, case: tuple[str, bytes]) -> None:
    ext, data = case
    path = tmp_path / f"fuzz.{ext}"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--image", str(path), "--json"], out=out, err=err)
    assert code in (EXIT_OK, EXIT_INPUT)
    assert "Traceback" not in err.getvalue()
    if code == EXIT_OK:
        assert err.getvalue() == ""
        doc = json.loads(out.getvalue())
        assert doc["image"] == str(path) and isinstance(doc["faces"], list)
    else:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"edge-fer: {path}: ")


_defaults = dataclasses.asdict(Config())
_defaults.pop("source_file")
SECTIONS = sorted(_defaults)
values = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                   st.text(max_size=20), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@st.composite
def config_docs(draw: st.DrawFn) -> tuple[dict, str, str]:
    section = draw(st.one_of(st.sampled_from(SECTIONS), st.text(min_size=1, max_size=12)))
    keys = sorted(_defaults.get(section, {})) or ["x"]
    key = draw(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=12)))
    return {section: {key: draw(values)}}, section, key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=config_docs())
def test_every_config_error_names_the_key(tmp_path: Path, case: tuple[dict, str, str]) -> None:
    doc, section, key = case
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load(path)
    except ConfigError as e:
        text = str(e)
        assert text.startswith(f"{path}: ") and "\n" not in text
        if section in SECTIONS:
            assert key_name(section, key) in text
        else:
            assert repr(section) in text
    else:
        assert getattr(getattr(cfg, section), key) is not None
