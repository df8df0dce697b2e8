"""This worker's part of a job whose requests come from keyed shards spread over its workers.

Each SDK worker process runs its own controller, and nothing tells it how many
others share the service (Flink's parallelism, worker pools and restarts
decide that at run time). But the scoring step is keyed: shard `s` of
`num_shards` is processed by one worker at a time. So the job-wide cap is
split over the shards, and a worker serving `a` of them may have
`floor(a x job_max_in_flight / num_shards)` requests in flight: with
`num_shards <= job_max_in_flight` that is at least one, and the workers' caps
sum to at most `job_max_in_flight` whatever their number. An advertised quota
is split the same way (`fraction`). A shard counts as served
for `ttl_s` after its last batch, so a shard that moved to another worker
stops counting here; within that window the two may both count it.
"""
from __future__ import annotations

import threading

from transforms.control.clock import SYSTEM_CLOCK, Clock


class JobShare:
    def __init__(self, num_shards: int, job_max_in_flight: int, ttl_s: float = 60.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if num_shards < 1 or job_max_in_flight < num_shards:
            raise ValueError("the job's in-flight cap must allow at least one request per shard "
                             f"(got {job_max_in_flight} for {num_shards} shards)")
        self.num_shards = num_shards
        self.job_max_in_flight = job_max_in_flight
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}

    def saw(self, shard: int) -> None:
        with self._lock:
            self._seen[shard] = self._clock.now()

    def active(self) -> int:
        """Shards this worker served within the last `ttl_s` (at least 1)."""
        with self._lock:
            horizon = self._clock.now() - self._ttl_s
            self._seen = {s: t for s, t in self._seen.items() if t >= horizon}
            return max(1, len(self._seen))

    def in_flight_cap(self) -> int:
        return self.active() * self.job_max_in_flight // self.num_shards

    def fraction(self) -> float:
        return self.active() / self.num_shards
