"""`edge-fer report`: timelines, totals, CSV, PNG and HTML from a database of known events."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from pathlib import Path

from PIL import Image

from edge_fer.cli.main import main
from edge_fer.errors import EXIT_INPUT, EXIT_OK
from edge_fer.recorder.report import COLOURS
from edge_fer.recorder.store import event_row, open_store
from tests.postgres import db, postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.test_record import event

DAY = "2026-11-27T"


def fill(db: str, docs: list[dict]) -> None:
    """Store events as the recorder would."""
    with open_store(db) as store:
        store.write([event_row(d["device"], json.dumps(d).encode(), 0.0) for d in docs], [])


def scenario() -> list[dict]:
    """cam1: a face happy 30 s then sad 60 s, a second face neutral 15 s; cam2: surprise 20 s, never ended."""
    photo = {**event(4, device="cam2", kind="image", ts=DAY + "09:03:00Z"), "face_index": 0}
    del photo["track_id"]
    return [event(1, ts=DAY + "09:00:00Z"), event(2, kind="change", emotion="sad", ts=DAY + "09:00:30Z"),
            event(4, track=2, emotion="neutral", ts=DAY + "09:00:45Z"),
            event(5, kind="end", track=2, emotion="neutral", ts=DAY + "09:01:00Z"),
            event(3, kind="end", emotion="sad", ts=DAY + "09:01:30Z"),
            event(1, device="cam2", emotion="surprise", ts=DAY + "09:02:00Z"),
            event(2, device="cam2", kind="change", emotion="angry", ts=DAY + "09:02:20Z"), photo]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_face_time_not_judged_is_its_own_column(tmp_path: Path, db: str) -> None:
    # A track starts unsure (its face too small to judge), is judged happy after 10 s, and ends 20 s later.
    fill(db, [event(1, emotion="unsure", ts=DAY + "09:00:00Z"), event(2, kind="change", ts=DAY + "09:00:10Z"),
              event(3, kind="end", ts=DAY + "09:00:30Z")])
    target = tmp_path / "report.csv"
    code, out, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    (row,) = list(csv.DictReader(target.open()))
    assert (row["unsure"], row["happy"], row["face_seconds"]) == ("0.3333", "0.6667", "30.00")


def test_csv_timeline_and_totals(tmp_path: Path, db: str) -> None:
    fill(db, scenario())
    target = tmp_path / "report.csv"
    code, out, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    rows = list(csv.DictReader(target.open()))
    got = {(r["device"], r["bucket_start"][11:16]): r for r in rows}
    assert sorted(got) == [("cam1", "09:00"), ("cam1", "09:01"), ("cam1", "09:02"),
                           ("cam2", "09:00"), ("cam2", "09:01"), ("cam2", "09:02")]
    first = got[("cam1", "09:00")]  # happy 30 s + sad 30 s + neutral 15 s of face time
    assert (first["faces"], first["face_seconds"]) == ("1.250", "75.00")
    assert (first["happy"], first["sad"], first["neutral"], first["angry"]) == ("0.4000", "0.4000", "0.2000", "0.0000")
    assert (got[("cam1", "09:01")]["faces"], got[("cam1", "09:01")]["sad"]) == ("0.500", "1.0000")
    assert got[("cam1", "09:02")]["faces"] == "0.000"
    assert (got[("cam2", "09:02")]["face_seconds"], got[("cam2", "09:02")]["surprise"]) == ("20.00", "1.0000")
    cam1 = next(line for line in out.splitlines() if line.startswith("cam1"))
    # events, tracks, face-minutes, then angry..neutral and unsure shares of 105 face-seconds
    assert cam1.split() == ["cam1", "5", "2", "1.8", "0.0%", "0.0%", "0.0%", "28.6%", "57.1%", "0.0%", "14.3%",
                            "0.0%"]
    assert "(+1 photo results)" in next(line for line in out.splitlines() if line.startswith("cam2"))
    assert f"wrote {target}" in out


def test_device_and_since_filters(tmp_path: Path, db: str) -> None:
    fill(db, scenario())
    code, out, _ = run("report", "--db", db, "--device", "cam2")
    assert code == EXIT_OK and "cam2" in out and "cam1" not in out
    code, out, _ = run("report", "--db", db, "--since", DAY + "09:01:15")
    assert code == EXIT_OK
    assert out.splitlines()[0].startswith(f"from {DAY}09:01:00") and "cam1" in out  # cam1's last end only
    code, out, _ = run("report", "--db", db, "--device", "nobody")
    assert code == EXIT_OK and "no events" in out


def test_png_shows_each_emotion_in_its_colour(tmp_path: Path, db: str) -> None:
    fill(db, scenario())
    target = tmp_path / "report.png"
    code, _, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    img = Image.open(target).convert("RGB")
    assert img.width == 1200 and img.height > 400
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    for emotion in ("happy", "sad", "neutral", "surprise", "angry", "fear"):  # bars and the legend
        assert COLOURS[emotion] in colours, emotion
    # cam1's panel has bars of happy, sad and neutral; count happy pixels outside the legend row (y > 80).
    happy = sum(1 for y in range(90, img.height, 2) for x in range(0, img.width, 2)
                if img.getpixel((x, y)) == COLOURS["happy"])
    assert happy > 100


def test_html_is_self_contained_and_escapes_names(tmp_path: Path, db: str) -> None:
    fill(db, scenario() + [event(1, device="lab<1>", ts=DAY + "09:00:10Z")])
    target = tmp_path / "report.html"
    code, _, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    page = target.read_text()
    assert "lab&lt;1&gt;" in page and "lab<1>" not in page
    picture = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(picture))).width == 1200
    assert "<td>cam1</td><td>5</td><td>2</td><td>1.8</td>" in page


class Terminal(io.StringIO):
    """stderr as a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    fill(db, [event(i, track=i, ts=f"{DAY}09:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(1, 2501)])
    out, err = io.StringIO(), Terminal()
    assert main(["report", "--db", db, "--out", str(tmp_path / "r.csv")], out=out, err=err) == EXIT_OK
    assert "\r" in err.getvalue() and "100% 2500/2500" in err.getvalue() and " 40% 1000/2500" in err.getvalue()
    code, out, err = run("report", "--db", db, "--out", str(tmp_path / "r2.csv"))
    assert code == EXIT_OK and err == ""


def test_output_that_cannot_be_written_and_nothing_to_report(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    fill(db, scenario())
    (tmp_path / "file").write_text("x")
    code, out, err = run("report", "--db", db, "--out", str(tmp_path / "file" / "report.png"))
    assert code == EXIT_INPUT and "cannot write" in err and err.count("\n") == 1 and "wrote" not in out
    (tmp_path / "taken.png").mkdir()  # the picture is made, but cannot take that name
    code, out, err = run("report", "--db", db, "--out", str(tmp_path / "taken.png"))
    assert code == EXIT_INPUT and "cannot write" in err and "wrote" not in out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")] and (tmp_path / "taken.png").is_dir()
    empty = str(tmp_path / "empty.db")
    open_store(empty).close()
    code, _, err = run("report", "--db", empty, "--out", str(tmp_path / "r.png"))
    assert code == EXIT_INPUT and "no events to report" in err and not (tmp_path / "r.png").exists()


def test_long_spans_merge_into_round_steps(tmp_path: Path) -> None:
    from edge_fer.recorder.report import _merge_factor, step_name

    assert _merge_factor(60, 90, 565) == 1  # 90 one-minute bars fit
    assert _merge_factor(60, 3 * 1440, 565) == 10  # three days: ten-minute bars
    assert _merge_factor(300, 3 * 288, 565) == 2  # of five-minute buckets
    assert _merge_factor(60, 10**9, 565) == math.ceil(10**9 / 565)  # beyond monthly bars: whatever fits
    assert (step_name(60), step_name(600), step_name(30)) == ("minute", "10 minutes", "30 seconds")
