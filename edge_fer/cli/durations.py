"""Durations and times as `record` and `report` take them on the command line."""

from __future__ import annotations

import contextlib
import re
import time

from edge_fer.errors import UsageError
from edge_fer.recorder.store import parse_time

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str) -> float:
    """'90s', '15m', '12h', '30d', '2w' (a bare number is seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"{what} {text!r}: expected a duration such as 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_since(text: str) -> float:
    """An ISO 8601 time (UTC unless it says otherwise), or a duration meaning that long ago."""
    with contextlib.suppress(ValueError):
        return parse_time(text)
    try:
        return time.time() - parse_duration(text, "--since")
    except UsageError:
        raise UsageError(f"--since {text!r}: expected an ISO 8601 time (2026-11-27T09:00) "
                         f"or a duration ago (90m, 12h, 7d)") from None
