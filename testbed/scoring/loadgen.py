"""Closed-loop load generator for the scoring service's throughput figure.

``python -m testbed.scoring.loadgen --url URL --batch 100 --connections 128``:
N keep-alive workers POST /score back to back for a fixed time and print one
JSON line (requests/s, items/s, statuses, client-side latency). Run it as its
own process (ideally pinned to another core) so it does not steal the
server's event loop. With ``--server-pid`` it also reports the server's CPU
seconds, whose ratio to requests is the per-core ceiling even on a busy host.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp
import psutil


async def _worker(
    session: aiohttp.ClientSession, url: str, body: bytes, until: float, statuses: Counter[int], latencies: list[float]
) -> None:
    headers = {"Content-Type": "application/json"}
    while (start := time.monotonic()) < until:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            statuses[response.status] += 1
        latencies.append(time.monotonic() - start)


def _cpu_s(server: psutil.Process | None) -> float:
    if server is None:
        return 0.0
    times = server.cpu_times()
    return times.user + times.system


async def run(
    url: str, batch: int, connections: int, duration_s: float, warmup_s: float, server: psutil.Process | None
) -> dict[str, object]:
    """Drive ``url``/score for ``warmup_s`` (discarded), then ``duration_s`` (measured)."""
    body = json.dumps([{"txn_id": f"load-{i}", "amount": 12.5} for i in range(batch)]).encode()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        for phase_s in (warmup_s, duration_s):
            statuses: Counter[int] = Counter()
            latencies: list[float] = []
            began, cpu_began = time.monotonic(), _cpu_s(server)
            until = began + phase_s
            await asyncio.gather(*(
                _worker(session, url + "/score", body, until, statuses, latencies) for _ in range(connections)
            ))  # fmt: skip
            elapsed, server_cpu_s = time.monotonic() - began, _cpu_s(server) - cpu_began
    latencies.sort()
    ok = statuses[200]
    cpu = {}
    if server is not None:
        cpu = {
            "server_cpu_s": round(server_cpu_s, 2),
            "server_cpu_share": round(server_cpu_s / elapsed, 2),
            "requests_per_server_cpu_s": round(sum(statuses.values()) / server_cpu_s, 1),
        }
    return {
        "batch": batch,
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(ok / elapsed, 1),
        "items_per_s": round(ok * batch / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        **cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--batch", type=int, default=1, help="transactions per request")
    p.add_argument("--connections", type=int, default=128, help="concurrent keep-alive workers")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    p.add_argument("--server-pid", type=int, help="also report this process's CPU use")
    a = p.parse_args()
    server = None if a.server_pid is None else psutil.Process(a.server_pid)
    result = asyncio.run(run(a.url.rstrip("/"), a.batch, a.connections, a.duration, a.warmup, server))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
