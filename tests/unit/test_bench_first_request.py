"""When the benchmark starts its clock: at the job's first request, not at the launcher's start-up probe."""
from __future__ import annotations

from testbed.bench.orchestrate import _wait_first_request


class FakeClient:
    pid = 4242

    def poll(self) -> None:
        return None


class FakeService:
    """Answers `stats()` from a script of User-Agents seen so far, one entry per call."""

    def __init__(self, *seen: tuple[str, ...]) -> None:
        self._seen, self.calls = list(seen), 0

    def stats(self) -> dict:
        agents = self._seen[min(self.calls, len(self._seen) - 1)]
        self.calls += 1
        return {"attempted_requests": len(agents), "unique_by_client": {agent: 1 for agent in agents}}


def test_on_flink_the_clock_starts_at_a_workers_request_not_the_launchers_probe() -> None:
    probe, worker = "throttled-enrichment pid/4242", "throttled-enrichment pid/777"
    service = FakeService((), (probe,), (probe,), (probe, worker))
    assert _wait_first_request(service, FakeClient(), workers=4) is not None
    assert service.calls == 4


def test_on_one_process_the_first_request_starts_it() -> None:
    service = FakeService((), ("throttled-enrichment pid/4242",))
    assert _wait_first_request(service, FakeClient(), workers=1) is not None
    assert service.calls == 2
