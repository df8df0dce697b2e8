"""The fleet quota's coordinator on Redis: one atomic script per renewal, water-filling on the server.

Each renewal runs `RENEW` (one round trip, atomic on the server): it records the worker's
demand with an expiry taken from the *server's* clock (`TIME`), so skew between the
workers' machines does not matter; drops the workers whose expiry passed; and grants the
worker its max-min fair share of the quota within what the others' grants leave free
(`control.lease.renewed_grant`). It returns this worker's grant and the number of workers.
The keys expire on their own when the whole fleet is gone.
"""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from transforms.control.lease import Grant

#: KEYS: demands hash, grants hash, expiry sorted set. ARGV: worker, demand rps, quota rps, ttl ms.
#: The arithmetic is `control.lease.renewed_grant`'s.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local worker, quota, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[3], now + ttl, worker)
redis.call('HSET', KEYS[1], worker, ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('HDEL', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local flat = redis.call('HGETALL', KEYS[1])
local demands = {}
for i = 1, #flat, 2 do demands[#demands + 1] = {flat[i], tonumber(flat[i + 1])} end
table.sort(demands, function(a, b) return a[2] < b[2] or (a[2] == b[2] and a[1] < b[1]) end)
local left, n, fair = quota, #demands, 0
for i, d in ipairs(demands) do
  local share = math.min(d[2], left / (n - i + 1))
  if d[1] == worker then fair = share end
  left = left - share
end
local free = quota
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if held[i] ~= worker then free = free - tonumber(held[i + 1]) end
end
local grant = math.max(0, math.min(fair, free))
redis.call('HSET', KEYS[2], worker, tostring(grant))
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, 10 * ttl) end
return {tostring(grant), n}
"""


class CoordinatorUnavailable(RuntimeError):
    """The coordinator did not answer a renewal in time (the lease decays; the job goes on)."""


@dataclass(frozen=True)
class QuotaCoordinatorConfig:
    """Where the fleet's quota lives; picklable, it travels inside the enrichment DoFn."""
    url: str                      # redis://host:port[/db]
    name: str                     # the quota's name: jobs that share one name share the quota
    timeout_s: float = 0.5        # per renewal: a slow coordinator must not hold the renewals back


class RedisCoordinator:
    def __init__(self, config: QuotaCoordinatorConfig, worker_id: str | None = None) -> None:
        # Loaded here, not with the module: a job without a fleet quota does not pay for it at start-up.
        import redis

        self._errors = redis.RedisError
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._client = redis.Redis.from_url(config.url, socket_timeout=config.timeout_s,
                                            socket_connect_timeout=config.timeout_s)
        self._renew = self._client.register_script(RENEW)
        self._keys = [f"quota:{config.name}:{part}" for part in ("demand", "grant", "expiry")]

    def renew(self, demand_rps: float, quota_rps: float, ttl_s: float) -> Grant:
        try:
            rps, workers = self._renew(keys=self._keys, args=[self.worker_id, f"{demand_rps:.6f}",
                                                              f"{quota_rps:.6f}", int(ttl_s * 1000)])
        except self._errors as e:
            raise CoordinatorUnavailable(f"quota coordinator {self.config.url}: {e}") from None
        return Grant(float(rps), int(workers))

    def leave(self) -> None:
        """Gives the share back at once (a clean stop); a crashed worker's expires after the ttl."""
        try:
            self._client.hdel(self._keys[0], self.worker_id)
            self._client.hdel(self._keys[1], self.worker_id)
            self._client.zrem(self._keys[2], self.worker_id)
        except self._errors:
            pass
        finally:
            self._client.close()
