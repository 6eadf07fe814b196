"""What tests/data ships: each file listed with its licence, each face read as its name says; unlisted skips fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.conftest import ALLOWED_SKIPS, FACES, ROOT, TEST_DATA, overlap, paste_faces


def test_every_file_in_tests_data_is_listed_with_its_licence() -> None:
    readme = (TEST_DATA / "README.md").read_text()
    shipped = [p.relative_to(TEST_DATA) for p in TEST_DATA.rglob("*")
               if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts]
    # A face is listed by its name in the faces table, the rest by their path.
    unlisted = [str(p) for p in shipped if f"`{p}`" not in readme and f"`{p.name}`" not in readme]
    assert unlisted == [], f"add these to tests/data/README.md with their licence: {unlisted}"
    assert len(list(FACES.glob("*.png"))) >= 2


@pytest.fixture(scope="module")
def analyzer():
    from edge_fer import Analyzer

    return Analyzer()


@pytest.mark.parametrize("path", sorted(FACES.glob("*.png")), ids=lambda p: p.name)
def test_each_shipped_face_is_found_where_pasted_and_read_as_its_name_says(path: Path, analyzer) -> None:
    face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert face is not None, f"{path} is not an image"
    frame, (truth,) = paste_faces([face], size=180)
    (found,) = analyzer.analyze(frame)
    assert (found.emotion, found.unsure) == (path.name.split("-", 1)[0], None)
    assert found.confidence > 0.6 and overlap(found.box, truth) > 0.5


def test_the_haar_backend_finds_a_happy_and_a_surprised_shipped_face(clear_faces_haar) -> None:
    assert clear_faces_haar["happy"] and clear_faces_haar["surprise"]


def _pytest(test_file: Path, allowed: str) -> subprocess.CompletedProcess:
    env = {**os.environ, ALLOWED_SKIPS: allowed}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(test_file.parent), str(test_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_whose_reason_is_not_listed_fails_the_run_and_is_named(tmp_path: Path) -> None:
    test_file = tmp_path / "test_moon.py"
    test_file.write_text("import pytest\n\n\ndef test_a():\n    pytest.skip('the moon is not up')\n\n\n"
                         "def test_b():\n    pass\n")
    listed = _pytest(test_file, "FER-2013 is not at\nthe moon is not up\n")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "1  the moon is not up" in listed.stdout and "1 passed, 1 skipped" in listed.stdout
    unlisted = _pytest(test_file, "FER-2013 is not at\n")
    assert unlisted.returncode == 1, unlisted.stdout + unlisted.stderr
    assert "test_moon.py::test_a: the moon is not up" in unlisted.stdout
    assert "1 passed, 1 skipped" in unlisted.stdout  # the tests themselves passed: only the skip fails the run
