"""The recorder's systemd unit: it verifies, stays hardened, and runs the command README documents."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from edge_fer.cli import record
from edge_fer.cli.main import parse
from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "edge-fer-record.service"


def test_the_recorder_unit_verifies_and_its_exposure_stays_low() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    res = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    problems = [line for line in res.stderr.splitlines() if "edge-fer-record.service" in line
                and "is not executable" not in line and "No such file" not in line]
    assert problems == [], res.stderr
    res = subprocess.run([analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for edge-fer-record.service: ([\d.]+)", res.stdout)
    assert match and float(match.group(1)) <= 2.5, res.stdout[-2000:]


def test_the_recorder_unit_runs_a_command_the_recorder_accepts() -> None:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/opt/edge-fer/bin/edge-fer" and argv[1] == "record"
    runner, args = parse(argv[1:])
    assert runner is record.run
    assert args.db.startswith("/var/lib/edge-fer-record/") and args.config == "/etc/edge-fer/config.yaml"
