"""Keeps the benchmark harness from rotting: its sampler against a scripted client with an
exact attempt pattern, then one tiny scenario end to end (real broker, service, pipeline)."""
from __future__ import annotations

import json
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.testing.util import assert_that

from testbed.bench import metrics as m
from testbed.bench.analysis import run_figures
from testbed.bench.clients import make_client
from testbed.bench.orchestrate import execute_run
from testbed.bench.report import write_report
from testbed.bench.sampler import Sampler
from testbed.bench.scenarios import Fault, Run
from transforms.contract.loader import DEFAULT_CONTRACT, load_contract
from transforms.enrichment.outcomes import Enriched
from transforms.events import DeadLetter, ParsedEvent
from transforms.kafka.records import SourcePosition

pytestmark = pytest.mark.integration


def _event(txn_id: str) -> dict:
    return {"txn_id": txn_id, "account_id": "a", "card_id": "c", "merchant": "m", "amount": 1.0,
            "currency": "EUR", "event_time": "2026-01-01T00:00:00.000Z"}


def test_sampler_and_metrics_match_a_scripted_client(scoring_service_factory, tmp_path) -> None:
    # A bucket of 10 tokens that never refills: exactly the first 10 requests are accepted.
    service = scoring_service_factory(rate=0.001, burst=10)
    sampler = Sampler(service.url, kafka=None, telemetry_path=None, client_pid=lambda: None, t0=0.0)
    before = sampler.sample_once().to_dict()
    http = requests.Session()
    statuses = []
    run_id = uuid.uuid4().hex[:6]
    for i in range(10):                                   # 10 events, 2 per request: all accepted
        statuses.append(http.post(service.url + "/score", timeout=10,
                                  json=[_event(f"{run_id}-{i}-a"), _event(f"{run_id}-{i}-b")]).status_code)
    for i in range(30):                                   # 30 retries of accepted events: all 429
        statuses.append(http.post(service.url + "/score", json=[_event(f"{run_id}-{i % 10}-a")],
                                  timeout=10).status_code)
    after = sampler.sample_once().to_dict()
    assert statuses == [200] * 10 + [429] * 30
    after["t"] = before["t"] + 2.0                        # fix the window length for an exact rate
    w = m.window([before, after], before["t"], after["t"])
    assert w.unique_events == 20
    assert w.attempts_rps == 40 / 2.0
    assert w.goodput_eps == 20 / 2.0
    assert w.share_429 == 30 / 40
    assert w.amplification == (20 + 30) / 20           # event-attempts per event scored


@pytest.mark.timeout(180)
def test_tiny_scenario_end_to_end(bootstrap_servers, tmp_path) -> None:
    run = Run("smoke", "ours", batch_size=5, duration_s=10.0, warmup_s=3.0, prefill=3_000, intake_eps=100.0,
              service={"rate": 100}, faults=(Fault("capacity", 5.0, 3.0, 0.5),))
    record = execute_run(run, bootstrap_servers, tmp_path)
    assert record.get("error") is None, record.get("error")
    samples = record["samples"]
    assert len(samples) >= 8
    assert samples[-1]["service"]["unique_txns"] > 0
    assert samples[-1]["client"]["client"] == "ours"
    assert sum(samples[-1]["end_offsets"].values()) >= 3_000
    assert any(s["latencies_ms"] for s in samples)
    assert any(s["service"]["capacity_rps"] == 50 for s in samples)   # the fault was scheduled
    figures = run_figures(record).figures
    assert 0 < figures["goodput (events/s)"] <= 100 * 5 * 1.2
    results = {"quick": True, "started": "smoke", "machine": {"cpus": 2}, "wall_s": 1.0,
               "calibration": {"client_p99_ms": 30.0},
               "scenarios": [{"name": "S1", "title": "smoke", "notes": "", "runs": [record]}]}
    json.dumps(results)                                   # the raw results are JSON as they are
    report = write_report(results, tmp_path)
    assert "| goodput (events/s) |" in report
    assert (tmp_path / "S1.png").stat().st_size > 10_000


@pytest.mark.parametrize("client", ["naive", "pool", "beam"])
def test_baselines_keep_the_scoring_contract(client, scoring_service) -> None:
    """Lists of ParsedEvent | DeadLetter in (the job's shape), Enriched | Failed | DeadLetter out, earlier dead
    letters passed through."""
    contract = load_contract(DEFAULT_CONTRACT).with_url(scoring_service.url + "/score")
    run_id = uuid.uuid4().hex[:6]
    items = []
    for i in range(7):
        raw = json.dumps(_event(f"{run_id}-{i}")).encode()
        items.append(ParsedEvent(contract.schema.parse(raw), raw, SourcePosition("t", 0, i, i), 1_000 + i))
    items.append(DeadLetter(reason="bad", detail="", stage="parse", payload=b"x", source=SourcePosition("t", 0, 7, 7)))

    def check(outputs):
        enriched = sorted(o.element.event.id for o in outputs if isinstance(o, Enriched))
        letters = [o for o in outputs if isinstance(o, DeadLetter)]
        assert enriched == sorted(f"{run_id}-{i}" for i in range(7))
        assert [d.reason for d in letters] == ["bad"]

    with beam.Pipeline(runner="apache_beam.runners.portability.fn_api_runner.FnApiRunner") as p:
        out = p | beam.Create([items[:4], items[4:]]) | make_client(client, contract, batch_size=3)
        assert_that(out, check)


def test_overhead_and_delivery_drains_account_for_every_output(bootstrap_servers, scoring_service) -> None:
    from testbed.bench.delivery import drains
    from testbed.bench.overhead import Bench

    bench = Bench(bootstrap_servers, scoring_service.url, batch_size=50)
    run = bench.enrich(2_000)
    assert run["outputs"] == 2_000
    # The --stages drains between the two ends: the parse step only, an instant runtime, the runtime minus HTTP.
    assert bench.pass_through(2_000, parse=True)["outputs"] == 2_000
    assert bench.enrich(2_000, job="testbed.bench.instant_scoring")["outputs"] == 2_000
    assert bench.enrich(2_000, job="testbed.bench.instant_scoring", extra=["--stand_in=no_http"])["outputs"] == 2_000
    assert run["steady_events_per_s"] > 0 and run["cpu_s"] > 0 and run["first_output_s"] > 0
    assert run["peak_rss_mb"] > 50 and run["peak_threads"] > 1
    by_delivery = drains(bootstrap_servers, scoring_service.url, events=300)
    assert set(by_delivery) == {"batch1_at_least_once", "batch1_exactly_once",
                                "batch100_at_least_once", "batch100_exactly_once"}
    assert all(r["outputs"] == 300 for r in by_delivery.values())
