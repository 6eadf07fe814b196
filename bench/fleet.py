"""A fleet of simulated devices through one real mosquitto, with a broker crash in the middle.

    taskset -c 0 python bench/fleet.py --devices 500 --seconds 60 --restart-broker-at 30 --json fleet.json

Each device is the project's own MqttPublisher (its paho client, its bounded queue, its reconnects)
fed by a synthetic event stream instead of a camera: faces come and go at --events-per-minute
(start, change, end, each also refreshing the retained state, which is refreshed every
--state-interval seconds as well), numbered by the project's EventFactory. One real subscriber
with a durable session checks what arrives: every event a device accepted into its queue must
arrive, each (device, run_id, seq) counted once, in order per device. At --restart-broker-at the
broker is killed (SIGKILL, as a crash) and started again after --down-seconds; it saves its
sessions every second, as a broker meant to survive a crash is configured to. The devices are
spread over processes of --per-process each (paho's select() takes no file descriptor above 1023).
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_fer.config import MqttConfig  # noqa: E402
from edge_fer.messaging.contract import State  # noqa: E402
from edge_fer.messaging.events import EventFactory  # noqa: E402
from edge_fer.messaging.mqtt import MqttPublisher  # noqa: E402
from edge_fer.types import TrackEvent, TrackState  # noqa: E402
from tests.broker import Broker, Subscriber, until  # noqa: E402

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PREFIX = "edge_fer"


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory of a process in KiB."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish_bytes(topic: str, payload: bytes, v5: bool) -> int:
    """Bytes of one QoS 1 PUBLISH and its PUBACK on the wire (MQTT framing, without TCP/IP headers)."""
    # MQTT 5 adds a property length byte, and on events a Message Expiry Interval (5 bytes).
    props = (6 if topic.endswith("/events") else 1) if v5 else 0
    remaining = 2 + len(topic.encode()) + 2 + props + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining + 4


@dataclass
class SimDevice:
    """One simulated camera: its publisher, its event numbering, the face it sees, what it accepted."""

    name: str
    publisher: MqttPublisher
    events: EventFactory
    face: str | None = None
    track: int = 0
    accepted: list[tuple[int, float]] = field(default_factory=list)  # (seq, wall time) its publisher took
    refused: int = 0

    def next_event(self, rng: random.Random) -> TrackEvent:
        """A face arrives, changes its emotion, or leaves."""
        scores = {k: round(rng.random() / 7, 4) for k in LABELS}
        if self.face is None:
            self.track += 1
            self.face = rng.choice(LABELS)
            kind = "start"
        elif rng.random() < 0.5:
            self.face = rng.choice([x for x in LABELS if x != self.face])
            kind = "change"
        else:
            kind = "end"
        e = TrackEvent(kind, self.track, self.face, 0.5 + rng.random() / 2, scores, (200, 120, 140, 140),
                       duration=rng.uniform(1, 20) if kind == "end" else 0.0)
        if kind == "end":
            self.face = None
        return e

    def state(self) -> State:
        """A state document like the daemon's."""
        tracks = [TrackState(self.track, self.face, 0.8, (200, 120, 140, 140))] if self.face else []
        return self.events.state(camera="ok", tracks=tracks, fps=15.0, frames=0, dropped_frames=0,
                                 dropped_events=self.publisher.dropped, uptime=0.0)


@dataclass(frozen=True)
class Plan:
    """What every shard of the fleet does."""

    port: int
    seconds: float
    events_per_minute: float
    state_interval: float
    queue_size: int
    protocol: str
    seed: int


def shard(plan: Plan, first: int, count: int, results: mp.Queue, go: mp.Event, finish: mp.Event) -> None:
    """One process of the fleet: `count` devices driven from one thread by a heap of due times."""
    logging.getLogger("edge_fer.messaging.mqtt").setLevel(logging.ERROR)
    rng = random.Random(plan.seed * 100003 + first)
    rss0, threads0 = rss_kib(), threading.active_count()
    fleet: list[SimDevice] = []
    for i in range(first, first + count):
        name = f"dev{i:05d}"
        cfg = MqttConfig(host="127.0.0.1", port=plan.port, device_id=name, queue_size=plan.queue_size,
                         protocol=plan.protocol, state_interval_seconds=plan.state_interval)
        fleet.append(SimDevice(name, MqttPublisher(cfg, name, labels=LABELS).start(), EventFactory(name)))
    connected = until(lambda: all(d.publisher.connected.is_set() for d in fleet), 60 + count / 10)
    results.put(("ready", first, connected, rss_kib() - rss0, threading.active_count() - threads0,
                 fleet[0].publisher.protocol))
    go.wait()
    t0 = time.monotonic()
    cpu0 = cpu_seconds()
    heap: list[tuple[float, int, str]] = []
    for i in range(count):
        heapq.heappush(heap, (t0 + rng.expovariate(plan.events_per_minute / 60), i, "event"))
        heapq.heappush(heap, (t0 + rng.uniform(0, plan.state_interval), i, "state"))
    while heap and heap[0][0] < t0 + plan.seconds:
        due, i, what = heapq.heappop(heap)
        time.sleep(max(0.0, due - time.monotonic()))
        d = fleet[i]
        if what == "event":
            doc = d.events.event(d.next_event(rng), (640, 480), time.time())
            if d.publisher.publish_event(doc):
                d.accepted.append((doc.seq, time.time()))
            else:
                d.refused += 1
            d.publisher.publish_state(d.state())
            heapq.heappush(heap, (due + rng.expovariate(plan.events_per_minute / 60), i, "event"))
        else:
            d.publisher.publish_state(d.state())
            heapq.heappush(heap, (due + plan.state_interval, i, "state"))
    until(lambda: all(d.publisher.pending() == 0 for d in fleet), 60)
    results.put(("done", first, [(d.name, d.events.run_id, d.accepted) for d in fleet],
                 sum(d.refused for d in fleet), sum(d.publisher.pending() for d in fleet), cpu_seconds() - cpu0))
    finish.wait()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda d: d.publisher.stop(timeout=5), fleet))


def run(devices: int, seconds: float, restart_at: float | None, down_seconds: float, events_per_minute: float,
        state_interval: float, queue_size: int, protocol: str, seed: int, per_process: int, log=print) -> dict:
    """Run the fleet; returns the figures."""
    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    broker = Broker(work, persistent=True)
    # Sessions (the checker's subscription and what is queued for it) are saved every second, so a crash
    # loses at most what the broker acknowledged in its last second and had not yet passed on.
    broker.conf.write_text(broker.conf.read_text() + "autosave_interval 1\nmax_queued_messages 1000000\n")
    broker.start()
    checker = Subscriber(broker.port, f"{PREFIX}/#", client_id="fleet-checker", durable=True)
    plan = Plan(broker.port, seconds, events_per_minute, state_interval, queue_size, protocol, seed)
    # paho waits with select(), which takes no file descriptor above 1023, and each client holds three:
    # the devices are spread over processes of `per_process` each.
    ctx = mp.get_context("spawn")
    results, go, finish = ctx.Queue(), ctx.Event(), ctx.Event()
    starts = list(range(0, devices, per_process))
    procs = [ctx.Process(target=shard, args=(plan, first, min(per_process, devices - first), results, go, finish))
             for first in starts]
    try:
        for proc in procs:
            proc.start()
        return _run(broker, checker, plan, devices, restart_at, down_seconds, procs, results, go, finish, log)
    finally:
        finish.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        checker.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _run(broker: Broker, checker: Subscriber, plan: Plan, devices: int, restart_at: float | None,
         down_seconds: float, procs: list, results: mp.Queue, go: mp.Event, finish: mp.Event, log) -> dict:
    ready = [results.get(timeout=120 + devices / 10) for _ in procs]
    if not all(r[2] for r in ready):
        raise SystemExit("not every device connected within the time allowed")
    rss_per_device = sum(r[3] for r in ready) / devices
    threads_per_device = sum(r[4] for r in ready) / devices
    log(f"{devices} devices connected in {len(procs)} processes: {rss_per_device:.0f} KiB and "
        f"{threads_per_device:.1f} threads each")
    go.set()
    t0 = time.monotonic()
    cpu_parent0 = cpu_seconds()
    cpu_broker = 0.0
    cpu_broker0 = cpu_seconds(broker.proc.pid)
    restart_window: tuple[float, float] | None = None
    if restart_at is not None:
        time.sleep(max(0.0, t0 + restart_at - time.monotonic()))
        cpu_broker = cpu_seconds(broker.proc.pid) - cpu_broker0
        broker.proc.kill()  # as a crash would
        broker.proc.wait(60)  # with thousands of connections on a busy core, dying takes a while
        down = time.time()
        log(f"broker killed at {time.monotonic() - t0:.1f} s")
        time.sleep(down_seconds)
        broker.start()
        cpu_broker0 = cpu_seconds(broker.proc.pid)
        restart_window = (down, time.time())
        log(f"broker up again at {time.monotonic() - t0:.1f} s")
    done = [results.get(timeout=plan.seconds + 180) for _ in procs]
    elapsed = time.monotonic() - t0
    cpu_broker += cpu_seconds(broker.proc.pid) - cpu_broker0
    broker_rss = rss_kib(broker.proc.pid)
    sent_at = {(name, run_id, seq): t for r in done for name, run_id, seqs in r[2] for seq, t in seqs}
    expected = set(sent_at)
    log(f"generated for {plan.seconds:.0f} s; waiting for {len(expected)} events to arrive")

    arrived: set[tuple[str, str, int]] = set()
    read = [0]

    def all_arrived() -> bool:
        with checker._lock:
            new = checker.messages[read[0]:]
        read[0] += len(new)
        arrived.update((e["device"], e["run_id"], e["seq"])
                       for e in (m.json() for m in new if m.topic.endswith("/events")))
        return expected <= arrived

    until(all_arrived, 60)
    cpu_parent = cpu_seconds() - cpu_parent0
    finish.set()
    for proc in procs:
        proc.join(60)
    # What arrived: first arrivals in order per device, repeats counted once as duplicates.
    seen: set[tuple[str, str, int]] = set()
    last: dict[tuple[str, str], int] = {}
    duplicates = out_of_order = 0
    latencies, latencies_steady = [], []
    wire = 0
    protocol = ready[0][5]
    v5 = protocol == "5"
    for m in checker.messages:
        wire += publish_bytes(m.topic, m.payload, v5)
        if not m.topic.endswith("/events"):
            continue
        e = m.json()
        key = (e["device"], e["run_id"], e["seq"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if e["seq"] < last.get(key[:2], 0):
            out_of_order += 1
        last[key[:2]] = max(last.get(key[:2], 0), e["seq"])
        sent = dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
        latency = (m.received - sent) * 1000
        latencies.append(latency)
        if restart_window is None or not restart_window[0] - 1 <= sent <= restart_window[1] + 10:
            latencies_steady.append(latency)

    def p(values: list[float], q: float) -> float | None:
        return round(statistics.quantiles(values, n=1000)[int(q * 10) - 1], 1) if len(values) > 1 else None

    events_sent = len(expected)
    # A crash loses what the broker had acknowledged but neither passed on nor saved: sent just before it.
    lost_when = sorted(sent_at[k] - restart_window[0] for k in expected - seen) if restart_window else []
    onlines = Counter(m.topic for m in checker.messages if m.topic.endswith("/availability") and m.payload == b"online")
    return {
        "date": dt.date.today().isoformat(),
        "devices": devices, "processes": len(procs), "seconds": round(elapsed, 1), "protocol": protocol,
        "events_per_device_per_minute": plan.events_per_minute, "state_interval_seconds": plan.state_interval,
        "broker_restart_at": restart_at, "broker_down_seconds": down_seconds if restart_at is not None else 0,
        "queue_size": plan.queue_size,
        "events_sent": events_sent, "events_refused_queue_full": sum(r[3] for r in done),
        "events_still_queued_at_end": sum(r[4] for r in done),
        "events_received": len(seen & expected), "lost": len(expected - seen), "duplicates": duplicates,
        "out_of_order": out_of_order,
        "lost_sent_seconds_before_crash": [round(-lost_when[-1], 2), round(-lost_when[0], 2)] if lost_when else None,
        "p50_latency_ms": p(latencies, 50), "p99_latency_ms": p(latencies, 99),
        "p99_latency_ms_outside_restart": p(latencies_steady, 99),
        "bytes_per_device_per_minute": round(wire / devices / (elapsed / 60)),
        "messages_received": len(checker.messages),
        "devices_reconnected": sum(n >= 2 for n in onlines.values()),
        "bench_rss_kib_per_device": round(rss_per_device, 1),
        "bench_threads_per_device": round(threads_per_device, 2),
        "bench_cpu_seconds": round(sum(r[5] for r in done) + cpu_parent, 2),
        "broker_cpu_seconds": round(cpu_broker, 2),
        "broker_rss_kib": broker_rss,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0, help="how long the devices generate events")
    p.add_argument("--restart-broker-at", type=float, default=None, help="kill the broker this many seconds in")
    p.add_argument("--down-seconds", type=float, default=2.0, help="how long the broker stays down")
    p.add_argument("--events-per-minute", type=float, default=6.0, help="per device")
    p.add_argument("--state-interval", type=float, default=5.0, help="seconds between state refreshes")
    p.add_argument("--queue-size", type=int, default=1000, help="each device's event queue bound")
    p.add_argument("--protocol", default="auto", choices=("auto", "5", "3.1.1"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-process", type=int, default=300, help="devices in each simulating process")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    # Hundreds of devices each say "lost" and "unreachable" once per broker crash; takeovers still show.
    logging.getLogger("edge_fer.messaging.mqtt").setLevel(logging.ERROR)
    figures = run(args.devices, args.seconds, args.restart_broker_at, args.down_seconds, args.events_per_minute,
                  args.state_interval, args.queue_size, args.protocol, args.seed, args.per_process,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if figures["lost"] == 0 and figures["out_of_order"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
