"""`edge-fer report`: timelines, totals, CSV, PNG and HTML from a database of known events."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import math
import re
import time
import zoneinfo
from pathlib import Path

import pytest
from PIL import Image

from edge_fer.cli.main import main
from edge_fer.errors import EXIT_INPUT, EXIT_OK, UsageError
from edge_fer.recorder import report
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
    # As the picture's footer and the page's heading say it: "each bar is one minute", not "is minute".
    assert [report.step_amount(s) for s in (1, 60, 600, 3600, 30)] == [
        "one second", "one minute", "10 minutes", "60 minutes", "30 seconds"]


def steady_face() -> list[dict]:
    """One face in view from 09:00:30 to 09:03:30: the device's first and last minute are only half followed."""
    return [event(1, ts=DAY + "09:00:30Z"), event(2, kind="end", ts=DAY + "09:03:30Z")]


def test_the_faces_line_leaves_out_minutes_only_partly_followed(tmp_path: Path, db: str) -> None:
    fill(db, steady_face())
    target = tmp_path / "report.png"
    code, _, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    (tl,) = report.build([("cam1", "r", "start", 1, "happy", report_time("09:00:30"), None),
                          ("cam1", "r", "end", 1, "happy", report_time("09:03:30"), None)], 60)
    # One face the whole time: the line is 1 where the minute was followed from end to end, and absent (no
    # rise from 0.5, no fall to 0.5) where it was not.
    assert report.faces_line(tl, 1) == [None, 1.0, 1.0, None]
    assert [tl.coverage(i) for i in range(4)] == [report.Coverage.PART, report.Coverage.WHOLE,
                                                  report.Coverage.WHOLE, report.Coverage.PART]
    img = Image.open(target).convert("RGB")
    plot_w = img.width - report.PNG_LEFT - report.PNG_RIGHT
    y0 = report.PNG_TOP + 30
    y1 = y0 + report.PNG_PANEL_H

    def black_rows(bar: int) -> list[int]:
        x0 = report.PNG_LEFT + bar * plot_w // 4
        return sorted({y for y in range(y0 - 3, y1 - 1) for x in range(x0 + 3, x0 + plot_w // 4 - 3)
                       if img.getpixel((x, y)) == (0, 0, 0)})

    assert black_rows(0) == [] and black_rows(3) == []  # the line leaves the half minutes out
    assert black_rows(1) and max(black_rows(1)) <= y0 + 5  # and runs along the top (1 face of at most 1)
    # The half minutes' bars are drawn pale, the whole ones in the emotion's own colour.
    middle = (y0 + y1) // 2
    assert img.getpixel((report.PNG_LEFT + plot_w // 8, middle)) == report._pale(COLOURS["happy"])
    assert img.getpixel((report.PNG_LEFT + 3 * plot_w // 8, middle)) == COLOURS["happy"]


def report_time(hms: str) -> float:
    return dt.datetime.fromisoformat(f"{DAY}{hms}+00:00").timestamp()


def test_html_marks_partial_minutes_and_shows_the_time_zone(tmp_path: Path) -> None:
    timelines = report.build([("cam1", "r", "start", 1, "happy", report_time("09:00:30"), None),
                              ("cam1", "r", "end", 1, "happy", report_time("09:03:30"), None)], 60)
    target = tmp_path / "report.html"
    report.save(target, timelines, "t", tz=zoneinfo.ZoneInfo("Europe/Berlin"))
    page = target.read_text()
    assert "<h2>Buckets of one minute with faces</h2>" in page and "Times in CET, UTC+01:00." in page
    rows = re.findall(r"<tr><td>cam1</td><td>(\d{4}-[^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", page)
    assert rows == [("2026-11-27 10:00", "09:00", "0.50 (part)"), ("2026-11-27 10:01", "09:01", "1.00"),
                    ("2026-11-27 10:02", "09:02", "1.00"), ("2026-11-27 10:03", "09:03", "0.50 (part)")]


def test_the_text_gives_the_start_in_the_zone_asked_for() -> None:
    timelines = report.build([("cam1", "r", "start", 1, "happy", report_time("09:00:00"), None)], 60)
    assert report.summary(timelines, zoneinfo.ZoneInfo("America/New_York")).startswith(
        f"from {DAY}09:00:00.000Z (2026-11-27 04:00:00 EST) for 0 min")
    assert report.summary(timelines, dt.timezone.utc).startswith(f"from {DAY}09:00:00.000Z (2026-11-27 09:00:00 UTC)")


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch):
    """This computer's zone as India's, for one test."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_without_a_zone_the_report_uses_this_computers(db: str, kolkata, tmp_path: Path) -> None:
    fill(db, scenario())
    code, out, err = run("report", "--db", db, "--out", str(tmp_path / "r.html"))
    assert code == EXIT_OK, err
    assert out.splitlines()[0].startswith(f"from {DAY}09:00:00.000Z (2026-11-27 14:30:00 IST) for 3 min")
    assert "Times in IST, UTC+05:30." in (tmp_path / "r.html").read_text()


def test_tz_names_are_checked() -> None:
    assert report.parse_tz("Europe/Berlin") == zoneinfo.ZoneInfo("Europe/Berlin")
    assert report.parse_tz("UTC") is dt.timezone.utc and report.parse_tz("local") is None
    with pytest.raises(UsageError, match=r"^--tz 'Mars/Olympus': expected a time zone name such as Europe/Berlin"):
        report.parse_tz("Mars/Olympus")
    with pytest.raises(UsageError):
        report.parse_tz("../../etc/passwd")


def test_the_command_takes_tz(db: str, tmp_path: Path) -> None:
    fill(db, scenario())
    code, out, err = run("report", "--db", db, "--tz", "America/New_York")
    assert code == EXIT_OK, err
    assert out.splitlines()[0].startswith(f"from {DAY}09:00:00.000Z (2026-11-27 04:00:00 EST) for 3 min")
    code, out, err = run("report", "--db", db, "--tz", "Mars/Olympus")
    assert code == 2 and err.count("\n") == 1 and "--tz 'Mars/Olympus'" in err and out == ""


def test_a_model_with_other_labels_gets_its_own_columns(db: str, tmp_path: Path) -> None:
    # What the recorder now stores from a model whose sidecar names other labels: the report counts them too.
    labels = ["joy", "calm", "<b>"]

    def other(seq: int, kind: str, emotion: str, ts: str) -> dict:
        return {**event(seq, kind=kind, ts=DAY + ts), "emotion": emotion, "labels": labels,
                "scores": {e: (0.8 if e == emotion else 0.1) for e in labels}}

    fill(db, [event(1, ts=DAY + "09:00:00Z"), event(2, kind="end", ts=DAY + "09:00:30Z"),
              other(3, "start", "joy", "09:01:00Z"), other(4, "change", "<b>", "09:01:20Z"),
              other(5, "end", "<b>", "09:01:30Z")])
    code, out, err = run("report", "--db", db, "--tz", "UTC", "--out", str(tmp_path / "r.csv"))
    assert code == EXIT_OK, err
    rows = list(csv.DictReader((tmp_path / "r.csv").open(newline="")))
    assert list(rows[0])[4:] == [*report.EMOTIONS[:-1], "joy", "<b>", "unsure"]
    assert sum(float(r["joy"]) * float(r["face_seconds"]) for r in rows) == pytest.approx(20, abs=0.01)
    assert sum(float(r["happy"]) * float(r["face_seconds"]) for r in rows) == pytest.approx(30, abs=0.01)
    assert run("report", "--db", db, "--out", str(tmp_path / "r.png"))[0] == EXIT_OK
    assert run("report", "--db", db, "--out", str(tmp_path / "r.html"))[0] == EXIT_OK
    page = (tmp_path / "r.html").read_text()
    assert "<th>joy</th>" in page and "<th>&lt;b&gt;</th>" in page and "<th><b></th>" not in page
