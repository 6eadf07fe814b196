"""`edge-fer report` against hostile data: impossible times, huge spans, formula device names, planted links."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from edge_fer.errors import EXIT_OK, EXIT_USAGE, WriteError
from edge_fer.messaging.events import utc_iso
from edge_fer.recorder import report
from edge_fer.recorder.store import parse_time
from tests.conftest import ROOT
from tests.test_record import event
from tests.test_report import DAY, fill, run, scenario


def retime(db: str, device: str, seq: int, when: str) -> None:
    """Give one stored event a time the recorder may refuse today, but that an older database can hold."""
    t = parse_time(when)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE events SET ts = ?, frame_ts = ? WHERE device = ? AND seq = ?", (t, t, device, seq))


def test_events_at_impossible_times_are_left_out_and_counted(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    fill(db, scenario() + [event(10, track=9, ts=DAY + "09:00:10Z"), event(1, device="cam3"),
                           event(10, device="cam2", track=9, ts=DAY + "09:02:10Z")])
    retime(db, "cam1", 10, "9999-12-31T23:59:00Z")  # a forged event
    retime(db, "cam3", 1, "1970-01-01T00:00:05Z")  # a Raspberry Pi before NTP
    retime(db, "cam2", 10, utc_iso(time.time() + 2 * 86400))  # a clock set two days ahead
    target = tmp_path / "report.csv"
    code, out, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    rows = list(csv.DictReader(target.open()))
    assert [(r["device"], r["bucket_start"][11:16]) for r in rows] == [
        (d, m) for d in ("cam1", "cam2", "cam3") for m in ("09:00", "09:01", "09:02")]
    assert (rows[0]["faces"], rows[0]["happy"]) == ("1.250", "0.4000")  # as without the three
    lines = out.splitlines()
    assert lines[0].startswith(f"from {DAY}09:00:00") and " for 3 min" in lines[0]
    assert all("(1 event left out)" in next(line for line in lines if line.startswith(d))
               for d in ("cam1", "cam2", "cam3"))
    assert lines[-2].startswith("left out: events dated before 2020 or more than a day ahead")
    # Nothing left to draw is still a picture, not a traceback.
    only = str(tmp_path / "only.db")
    fill(only, [event(1)])
    retime(only, "cam1", 1, "9999-12-31T23:59:00Z")
    code, out, err = run("report", "--db", only, "--out", str(tmp_path / "r.png"))
    assert code == EXIT_OK and err == "" and Image.open(tmp_path / "r.png").width == 1200


def test_a_span_too_long_for_its_buckets_is_refused_in_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    fill(db, scenario() + [event(10, track=9, ts=DAY + "09:00:10Z")])
    retime(db, "cam1", 10, "2025-11-27T09:00:00Z")  # a clock a year behind: 525,601 one-minute buckets and more
    target = tmp_path / "report.csv"
    code, out, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_USAGE and out == "" and not target.exists()
    assert err.startswith("edge-fer: the events from 2025-11-27T09:00 to 2026-11-27T09:0")
    assert "more than the 200,000 a report builds: narrow it with --since or --device" in err
    assert err.count("\n") == 1
    code, out, err = run("report", "--db", db, "--since", DAY + "00:00", "--out", str(target))
    assert code == EXIT_OK and len(target.read_text().splitlines()) == 1 + 6, err
    code, out, err = run("report", "--db", db, "--bucket", "1h")
    assert code == EXIT_OK and " for 525660 min" in out.splitlines()[0], err


@pytest.mark.parametrize("bucket, shown", [("0.0001s", "0.0001 seconds"), ("0.5", "0.5 seconds"),
                                           ("53w", "534240 minutes")])
def test_a_bucket_out_of_range_is_refused_before_anything_is_read(tmp_path: Path, bucket: str, shown: str) -> None:
    db = str(tmp_path / "e.db")
    fill(db, scenario())
    code, out, err = run("report", "--db", db, "--bucket", bucket)
    assert (code, out, err) == (EXIT_USAGE, "", f"edge-fer: --bucket {shown}: a timeline step from 1s to 52w\n")


def test_csv_cells_that_a_spreadsheet_would_run_start_with_a_quote(tmp_path: Path) -> None:
    names = ["=cmd|' -C calc'!A0", "+SUM(1)", "-2+3", "@SUM(A1)", "\tx", "\rx", "cam-1", "5"]
    db = str(tmp_path / "e.db")
    fill(db, [event(1, device=name, ts=DAY + "09:00:00Z") for name in names]
         + [event(2, device=name, kind="end", ts=DAY + "09:00:30Z") for name in names])
    target = tmp_path / "report.csv"
    code, _, err = run("report", "--db", db, "--out", str(target))
    assert code == EXIT_OK, err
    rows = list(csv.reader(target.open(newline="")))
    assert rows[0][:2] == ["device", "bucket_start"]
    assert sorted(r[0] for r in rows[1:]) == sorted(["'=cmd|' -C calc'!A0", "'+SUM(1)", "'-2+3", "'@SUM(A1)",
                                                     "'\tx", "'\rx", "cam-1", "5"])
    for r in rows[1:]:  # numbers stay numbers
        assert r[1].startswith(DAY) and [float(v) for v in r[2:]] == [0.5, 30.0, 0, 0, 0, 1, 0, 0, 0, 0]


def _plant(link: Path, victim: Path) -> None:
    victim.write_text("root's own file\n")
    link.symlink_to(victim)


def test_report_save_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    timelines = report.build([("cam1", "r", "start", 1, "happy", 1.8e9, 1.8e9),
                              ("cam1", "r", "end", 1, "happy", 1.8e9 + 30, None)], 60)
    outside = tmp_path / "outside"
    outside.mkdir()
    for suffix in (".csv", ".png", ".html"):
        target = tmp_path / f"report{suffix}"
        victim = outside / f"victim{suffix}"
        _plant(tmp_path / f".{target.name}.partial", victim)  # the old fixed temporary name
        report.save(target, timelines, "t")
        assert victim.read_bytes() == b"root's own file\n" and not target.is_symlink()
        assert target.read_bytes().startswith({".csv": b"device,", ".png": b"\x89PNG", ".html": b"<!DOCTYPE"}[suffix])
    (tmp_path / "taken.csv").mkdir()
    before = sorted(tmp_path.iterdir())
    with pytest.raises(WriteError, match="taken.csv: cannot write"):
        report.save(tmp_path / "taken.csv", timelines, "t")
    assert sorted(tmp_path.iterdir()) == before  # no temporary file left behind


def test_report_out_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    fill(db, scenario())
    victim = tmp_path / "victim"
    _plant(tmp_path / ".report.csv.partial", victim)
    code, out, err = run("report", "--db", db, "--out", str(tmp_path / "report.csv"))
    assert code == EXIT_OK, err
    assert victim.read_bytes() == b"root's own file\n" and not (tmp_path / "report.csv").is_symlink()


def test_report_loads_without_the_vision_stack() -> None:
    code = ("import json, sys; import edge_fer.recorder.report; "
            "print(json.dumps(sorted({'cv2', 'numpy'} & set(sys.modules))))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
