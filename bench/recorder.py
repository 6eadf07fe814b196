"""Messages per second `edge-fer record` stores into SQLite and PostgreSQL; does it keep up with 200 devices?

    python bench/recorder.py [--seconds 60] [--devices 200] [--backends sqlite,postgres]

Everything runs on core 0 (the script pins itself; its children inherit it): mosquitto, the recorder
subprocess, PostgreSQL, and this script's publisher. Per backend, two runs, each against a fresh database
and a fresh persistent broker (max_queued_messages raised, see README):

- backlog: --burst messages (events and states mixed as a fleet sends them) published while the
  recorder is stopped and queued by the broker in its session; then the recorder starts, and the
  rate is timed from its first stored row to its last (so the publisher does not share the core);
- fleet: --devices devices at the rate bench/daemon.py's video makes them (a face comes and goes every
  second: a start and an end event, and a state message with each, plus the periodic state), for
  --seconds; the backlog (published but not yet stored) is sampled every second.

The recorder acknowledges each message only after its transaction commits (SQLite synchronous=FULL,
PostgreSQL with fsync on), so these are durable rows per second. CPU time comes from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from daemon import proc_figures  # noqa: E402  (bench/daemon.py)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_fer.messaging.events import utc_iso  # noqa: E402
from edge_fer.recorder.store import EMOTIONS, is_postgres, open_store  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.postgres import Postgres  # noqa: E402

EVENTS_PER_DEVICE = 2.0  # per second: a face appears and leaves every second (bench/daemon.py's video)
STATES_PER_DEVICE = 2.2  # a state with each event, and the periodic one every 5 s


class Fleet:
    """Events and states of many devices, in the daemon's format, numbered per device."""

    def __init__(self, devices: int) -> None:
        self.devices = [f"dev{i:03d}" for i in range(devices)]
        self.seq = dict.fromkeys(self.devices, 0)
        self.sent = self.sent_events = 0

    def message(self, n: int) -> tuple[str, str]:
        """The n-th message: events and states in the fleet's ratio, devices in turn."""
        device = self.devices[n % len(self.devices)]
        now = utc_iso()
        self.sent += 1
        if (n // len(self.devices)) % 21 < 10:  # 10 events for every 11 states
            self.seq[device] += 1
            self.sent_events += 1
            kind = "start" if self.seq[device] % 2 else "end"
            doc = {"type": kind, "device": device, "run_id": "bench", "track_id": self.seq[device] // 2 + 1,
                   "emotion": "happy", "confidence": 0.81, "scores": {e: 0.03 for e in EMOTIONS} | {"happy": 0.81},
                   "box": [212, 96, 130, 130], "frame_size": [640, 480], "ts": now, "frame_ts": now,
                   "seq": self.seq[device]}
            return f"edge_fer/{device}/events", json.dumps(doc)
        doc = {"device": device, "run_id": "bench", "camera": "ok", "faces": 1, "dominant_emotion": "happy",
               "tracks": [], "fps": 15.0, "frames": n, "ts": now}
        return f"edge_fer/{device}/state", json.dumps(doc)


class Rows:
    """Counts the rows stored (events and states) over one connection."""

    def __init__(self, db: str) -> None:
        self.store = open_store(db, create=False)
        if is_postgres(db):
            self.store.conn.autocommit = True  # each count sees the latest commits, and holds no lock

    def __call__(self) -> int:
        cur = self.store.conn.cursor()
        cur.execute("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM states)")
        return cur.fetchone()[0]

    def close(self) -> None:
        self.store.close()


def start_recorder(db: str, port: int, log: Path) -> subprocess.Popen:
    """The recorder (on core 0 like every child of this script), waited for until it has subscribed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_fer", "record", "--db", db,
                             "--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={port}",
                             "--set", "logging.level=INFO", "--client-id", "bench-recorder"],
                            env=env, stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "subscribed to" not in log.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"recorder did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def publisher(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def drain(db: str, port: int, work: Path, devices: int, burst: int) -> dict[str, float]:
    """A backlog of `burst` messages queued in the broker while the recorder was away, then stored."""
    rec = start_recorder(db, port, work / "recorder-first.log")  # its session and subscriptions
    rec.terminate()
    rec.wait(30)
    client = publisher(port)
    fleet = Fleet(devices)
    infos = [client.publish(*fleet.message(n), qos=1) for n in range(burst)]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()
    rows = Rows(db)
    rec = start_recorder(db, port, work / "recorder.log")
    try:
        while rows() == 0:
            time.sleep(0.01)
        _, cpu0 = proc_figures(rec.pid)
        t0, n0 = time.monotonic(), rows()
        wait_for_rows(rows, burst)
        elapsed = time.monotonic() - t0
        _, cpu1 = proc_figures(rec.pid)
    finally:
        rec.terminate()
        rec.wait(30)
        rows.close()
    return {"messages_per_s": (burst - n0) / elapsed, "events_share": fleet.sent_events / fleet.sent,
            "cpu_ms_per_1000": (cpu1 - cpu0) / (burst - n0) * 1e6}


def wait_for_rows(rows, target: int) -> None:
    """Wait until `target` rows are stored; a recorder still short of it after 5 minutes has fallen behind."""
    deadline = time.monotonic() + 300
    while rows() < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"recorder fell behind: {rows()} of {target} after 5 min")
        time.sleep(0.02)


def live(db: str, port: int, work: Path, devices: int, seconds: float) -> dict[str, float]:
    """The fleet's rate for `seconds`, the backlog sampled every second."""
    rec = start_recorder(db, port, work / "recorder.log")
    client = publisher(port)
    rows = Rows(db)
    try:
        _, cpu0 = proc_figures(rec.pid)
        fleet = Fleet(devices)
        rate = devices * (EVENTS_PER_DEVICE + STATES_PER_DEVICE)
        t0 = time.monotonic()
        next_sample = t0 + 1
        backlog = []
        while time.monotonic() - t0 < seconds:
            while fleet.sent < int((time.monotonic() - t0) * rate):
                client.publish(*fleet.message(fleet.sent), qos=1)
            if time.monotonic() >= next_sample:
                backlog.append(fleet.sent - rows())
                next_sample += 1
            time.sleep(0.01)
        published = time.monotonic() - t0
        wait_for_rows(rows, fleet.sent)
        elapsed = time.monotonic() - t0
        _, cpu1 = proc_figures(rec.pid)
    finally:
        rec.terminate()
        rec.wait(30)
        client.disconnect()
        client.loop_stop()
        rows.close()
    return {"offered_per_s": fleet.sent / published, "backlog_max": max(backlog, default=0),
            "drain_s": elapsed - published, "cpu_share": (cpu1 - cpu0) / elapsed}


def run(db: str, tmp: Path, devices: int, burst: int, seconds: float, inflight: int) -> dict[str, dict[str, float]]:
    """One backend: the flat-out and the fleet runs."""
    figures = {}
    for mode in ("burst", "fleet"):
        work = tmp / mode
        work.mkdir()
        if db.startswith("postgresql"):
            with open_store(db) as store:  # empty it between runs
                store.conn.execute("TRUNCATE events, states")
                store.conn.commit()
        else:
            db = str(work / "events.db")
        broker = Broker(work, persistent=True)
        # mosquitto drops QoS 1 messages beyond max_queued_messages (1000) queued for a slow subscriber.
        broker.conf.write_text(broker.conf.read_text() + f"max_queued_messages 1000000\n"
                               f"max_inflight_messages {inflight}\n")
        broker.start()
        try:
            if mode == "burst":
                figures[mode] = drain(db, broker.port, work, devices, burst)
            else:
                figures[mode] = live(db, broker.port, work, devices, seconds)
        finally:
            broker.stop()
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the fleet run")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--burst", type=int, default=20000, help="messages in the flat-out run")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--inflight", type=int, default=20, help="mosquitto's max_inflight_messages (its default: 20)")
    args = p.parse_args()
    os.sched_setaffinity(0, {0})
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; max_inflight_messages {args.inflight}; "
          f"{args.devices} devices need "
          f"{args.devices * (EVENTS_PER_DEVICE + STATES_PER_DEVICE):.0f} messages/s "
          f"({args.devices * EVENTS_PER_DEVICE:.0f} events/s)")
    print("| backend | backlog drained: messages/s (events/s) | CPU ms per 1000 messages | "
          f"fleet of {args.devices}: messages/s offered | max backlog (messages) | drained after the last publish "
          "| recorder CPU, fleet |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            server = None
            if backend == "postgres":
                server = Postgres(durable=True)  # the tests run it with fsync off; this measures durable commits
                server.start()
                db = server.create_database("bench")
            else:
                db = "sqlite"
            try:
                figures = run(db, Path(tmp), args.devices, args.burst, args.seconds, args.inflight)
            finally:
                if server:
                    server.stop()
        b, f = figures["burst"], figures["fleet"]
        print(f"| {backend} | {b['messages_per_s']:.0f} ({b['messages_per_s'] * b['events_share']:.0f}) | "
              f"{b['cpu_ms_per_1000']:.0f} | "
              f"{f['offered_per_s']:.0f} | {f['backlog_max']:.0f} | {f['drain_s']:.2f} s | "
              f"{f['cpu_share']:.0%} of a core |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
