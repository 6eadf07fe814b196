"""The sd_notify datagrams as systemd receives them, on a real unix socket."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from edge_fer.live.sdnotify import Notifier


def test_reloading_is_one_datagram_with_the_monotonic_time_in_microseconds(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify.sock"))
        notifier = Notifier(str(tmp_path / "notify.sock"))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.close()
        key, usec = sock.recv(4096).decode().splitlines()
    assert key == "RELOADING=1" and usec.startswith("MONOTONIC_USEC=")
    assert before <= int(usec.split("=", 1)[1]) <= after


def test_an_abstract_socket_is_reached_and_no_socket_is_a_no_op() -> None:
    name = f"edge-fer-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier("@" + name)
        assert notifier.ready("up") and notifier.stopping()
        notifier.close()
        assert [sock.recv(4096).decode() for _ in range(2)] == ["READY=1\nSTATUS=up", "STOPPING=1"]
    silent = Notifier("")
    assert not silent.enabled and not silent.reloading() and not silent.ready()
