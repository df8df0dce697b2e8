"""Once a second: what the service saw, where Kafka stands, and the client process.

One `Sample` per tick holds cumulative values only (counters, offsets, RSS,
the client's latest TELEMETRY line); rates and windows are derived afterwards
by `testbed.bench.metrics`, so the raw JSON can be re-analysed.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import requests
from confluent_kafka import Consumer, TopicPartition

LOG = logging.getLogger(__name__)
TICK_S = 1.0


@dataclass
class Sample:
    t: float                                   # seconds since the run's t0
    wall: float
    service: dict[str, Any] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int | None] = field(default_factory=dict)
    oldest_uncommitted_age_s: float | None = None
    rss_bytes: int | None = None
    client: dict[str, Any] = field(default_factory=dict)   # the client's latest TELEMETRY line (no latencies)
    latencies_ms: list[float] = field(default_factory=list)  # request latencies reported since the last sample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KafkaProbe:
    """End offsets, the group's committed offsets and the age of the first uncommitted record.

    The committed offsets are read with a consumer configured with the
    pipeline's group id that never subscribes or commits (an OffsetFetch
    does not join the group).
    """

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic = topic
        base = {"bootstrap.servers": bootstrap, "enable.auto.commit": False, "log_level": 3}
        self._offsets = Consumer({**base, "group.id": group})
        self._reader = Consumer({**base, "group.id": f"bench-probe-{uuid.uuid4().hex[:8]}",
                                 "fetch.wait.max.ms": 50})
        md = self._offsets.list_topics(topic, timeout=10).topics[topic]
        self.partitions = sorted(md.partitions)

    def end_offsets(self) -> dict[int, int]:
        return {p: self._offsets.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5, cached=False)[1]
                for p in self.partitions}

    def committed(self) -> dict[int, int | None]:
        tps = self._offsets.committed([TopicPartition(self.topic, p) for p in self.partitions], timeout=5)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}

    def oldest_uncommitted_age_s(self, committed: dict[int, int | None], ends: dict[int, int],
                                 now_ms: float, timeout_s: float = 0.5) -> float | None:
        """Age of the oldest record at or after the committed offsets (None when nothing is pending)."""
        wanted = {p: (c if c is not None else 0) for p, c in committed.items() if (c or 0) < ends.get(p, 0)}
        if not wanted:
            return None
        self._reader.assign([TopicPartition(self.topic, p, o) for p, o in wanted.items()])
        oldest: int | None = None
        seen: set = set()
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            for msg in self._reader.consume(num_messages=len(wanted), timeout=0.1):
                if msg.error() is None and msg.partition() not in seen:
                    seen.add(msg.partition())
                    ts = msg.timestamp()[1]
                    oldest = ts if oldest is None else min(oldest, ts)
        return None if oldest is None else max(0.0, (now_ms - oldest) / 1000)

    def close(self) -> None:
        self._offsets.close()
        self._reader.close()


class TelemetryTail:
    """Reads the client's JSON lines as they are appended (tolerates a partial last line)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pos = 0
        self._partial = ""
        self.latest: dict[str, Any] = {}

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._pos)
                text = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return []
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    LOG.warning("bad telemetry line in %s", self.path)
        if out:
            self.latest = out[-1]
        return out


def process_rss(pid: int | None) -> int | None:
    """RSS of a process and its children (the FnApiRunner runs in-process; be safe anyway)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        rss = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                pass
        return rss
    except psutil.Error:
        return None


class Sampler(threading.Thread):
    """Polls every `TICK_S` until stopped; samples are appended to `self.samples`."""

    def __init__(self, service_url: str, kafka: KafkaProbe | None, telemetry_path: str | None,
                 client_pid: Callable[[], int | None], t0: float, tick_s: float = TICK_S) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self._url = service_url.rstrip("/")
        self._kafka = kafka
        self._tail = TelemetryTail(telemetry_path) if telemetry_path else None
        self._pid = client_pid
        self.t0 = t0
        self._tick = tick_s
        self._stop_evt = threading.Event()
        self._http = requests.Session()
        self.samples: list[Sample] = []
        self.errors = 0

    def sample_once(self) -> Sample:
        wall = time.time()
        s = Sample(t=round(time.monotonic() - self.t0, 3), wall=wall)
        try:
            s.service = self._http.get(self._url + "/stats", timeout=2).json()
        except (requests.RequestException, ValueError):
            self.errors += 1
        if self._kafka is not None:
            try:
                s.end_offsets = self._kafka.end_offsets()
                s.committed = self._kafka.committed()
                s.oldest_uncommitted_age_s = self._kafka.oldest_uncommitted_age_s(s.committed, s.end_offsets,
                                                                                  wall * 1000)
            except Exception:  # noqa: BLE001 - a missed Kafka reading is a gap, not a failed run
                self.errors += 1
        s.rss_bytes = process_rss(self._pid())
        if self._tail is not None:
            for line in self._tail.read_new():
                s.latencies_ms.extend(line.get("latencies_ms", []))
            s.client = {k: v for k, v in self._tail.latest.items() if k != "latencies_ms"}
        return s

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_evt.is_set():
            self.samples.append(self.sample_once())
            next_at += self._tick
            self._stop_evt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Sample]:
        self._stop_evt.set()
        self.join(timeout=10)
        if not self.samples or time.monotonic() - self.t0 - self.samples[-1].t >= 0.5 * self._tick:
            self.samples.append(self.sample_once())   # a closing sample, unless one was just taken
        self._http.close()
        return self.samples
