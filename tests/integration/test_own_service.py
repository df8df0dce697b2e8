"""Bring your own service: a service with another contract, driven by a contract file alone, and a
job that stops - instead of dead-lettering the stream - when that service says the job is wrong.

The service is tests/fixtures/geo_service.py (a real process): a wrapped request, results under
`data.matches` in reverse order with other names, an API key from a file, faults from the N-th
request on. Each test drains through `python -m pipelines.enrich_payments --contract=<file>`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from tests.fixtures.geo import encoded, geo_events, write_contract
from tests.fixtures.geo_service import geo_of
from tests.integration.reliability_support import FNAPI, JobProcess, Topics, make_topics, run_job, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 3


def produce(bootstrap: str, topics: Topics, events: list[dict]) -> dict[tuple[int, int], str]:
    """Event i to partition i % 3; returns (partition, offset) -> event_id."""
    producer = Producer({"bootstrap.servers": bootstrap})
    where: dict[tuple[int, int], str] = {}

    def delivered(err, msg) -> None:
        assert err is None, err
        where[(msg.partition(), msg.offset())] = json.loads(msg.value())["event_id"]

    for i, event in enumerate(events):
        producer.produce(topics.inp, encoded(event), partition=i % PARTITIONS, on_delivery=delivered)
    assert producer.flush(30) == 0
    return where


def args(bootstrap: str, topics: Topics, contract: Path, group: str, *extra: str) -> list[str]:
    return [FNAPI, f"--bootstrap_servers={bootstrap}", f"--input_topic={topics.inp}", f"--output_topic={topics.out}",
            f"--dlq_topic={topics.dlq}", f"--group_id={group}", f"--contract={contract}", "--progress_interval=0",
            "--batch_size=20", *extra]


def outputs(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(r.value) for r in consume_all(bootstrap, topic, timeout=60)]


def keys(path: Path, *values: str) -> Path:
    path.write_text("\n".join(values) + "\n")
    return path


def committed_are_written(bootstrap: str, group: str, topics: Topics, where: dict[tuple[int, int], str],
                          written: set[str]) -> int:
    """Every offset below a partition's committed offset has its output written; returns how many are committed."""
    committed = {p: o or 0 for p, o in committed_offsets(bootstrap, group, topics.inp).items()}
    for (partition, offset), event_id in where.items():
        if offset < committed.get(partition, 0):
            assert event_id in written, f"offset {offset} of partition {partition} committed without its output"
    return sum(committed.values())


FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--flink_version=1.19", "--environment_type=LOOPBACK",
         "--parallelism=1"]


@pytest.mark.parametrize("runner", ["fnapi", pytest.param("flink", marks=pytest.mark.flink)])
def test_a_service_with_another_contract_is_drained_by_a_contract_file_alone(
        runner, bootstrap_servers, geo_service, tmp_path, request) -> None:
    service = geo_service(keys_file=keys(tmp_path / "service-keys", "key-A"))
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "key-A"))
    topics = make_topics(bootstrap_servers, "geo", partitions=PARTITIONS)
    events = geo_events(1_500, run="own")
    bad = {"event_id": "bad-uid", "uid": 0, "ip": "10.0.0.1"}
    produce(bootstrap_servers, topics, [*events, bad])

    job_args = args(bootstrap_servers, topics, contract, "g-geo")
    if runner == "flink":
        jar = request.getfixturevalue("flink_job_server_jar")
        job_args = [*FLINK, f"--flink_job_server_jar={jar}", *job_args[1:]]
    job = run_job(job_args, tmp_path, "geo", timeout=300)

    results = {doc["event_id"]: doc for doc in outputs(bootstrap_servers, topics.out)}
    assert set(results) == {e["event_id"] for e in events}
    for event in events:
        doc = results[event["event_id"]]
        country, risk, asn = geo_of(event["event_id"], event["ip"])
        assert (doc["geo_country"], doc["geo_risk"], doc["geo_asn"]) == (country, risk, asn)
        assert doc["session"] == event["session"] and doc["ts"] == event["ts"]      # fields the schema does not name
        assert doc.get("channel") == event["channel"] and doc["geo_attempts"] >= 1
    [letter] = outputs(bootstrap_servers, topics.dlq)
    assert (letter["reason"], letter["stage"]) == ("invalid_event", "parse") and "'uid'" in letter["detail"]
    assert job.summary()["counters"]["enrich/events_scored"] == len(events)
    assert committed_offsets(bootstrap_servers, "g-geo", topics.inp) == end_offsets(bootstrap_servers, topics.inp)
    assert all(n == 1 for n in service.stats()["refs"].values())                # one call per event (and the probe)


def test_a_refused_key_at_start_exits_2_with_nothing_read_or_committed(bootstrap_servers, geo_service, tmp_path) -> None:
    service = geo_service(keys_file=keys(tmp_path / "service-keys", "key-A"))
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "key-WRONG"))
    topics = make_topics(bootstrap_servers, "geo401", partitions=PARTITIONS)
    produce(bootstrap_servers, topics, geo_events(300, run="401"))

    job = JobProcess(args(bootstrap_servers, topics, contract, "g-geo401"), tmp_path, "geo401")
    assert job.wait(timeout=30) == 2
    lines = [line for line in job.stderr().splitlines() if line.strip()]
    assert len(lines) == 1 and "refused the start-up probe: http_401" in lines[0], lines
    assert "key-WRONG" not in job.stderr()
    assert outputs(bootstrap_servers, topics.out) == [] and outputs(bootstrap_servers, topics.dlq) == []
    assert all(o is None for o in committed_offsets(bootstrap_servers, "g-geo401", topics.inp).values())
    assert service.stats()["requests"] == 1                                      # the probe, nothing else


def test_a_key_revoked_mid_run_stops_the_job_without_dead_letters_or_commits_past_the_outputs(
        bootstrap_servers, geo_service, tmp_path) -> None:
    service = geo_service(keys_file=keys(tmp_path / "service-keys", "key-A"), fault_status=401, fault_from=30)
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "key-A"))
    topics = make_topics(bootstrap_servers, "georevoke", partitions=PARTITIONS)
    where = produce(bootstrap_servers, topics, geo_events(6_000, run="revoke"))

    job = JobProcess(args(bootstrap_servers, topics, contract, "g-revoke"), tmp_path, "revoke")
    assert job.wait(timeout=120) == 3
    lines = [line for line in job.stderr().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: enrichment stopped: http_401"), lines
    assert outputs(bootstrap_servers, topics.dlq) == []                         # nothing dead-lettered
    written = {doc["event_id"] for doc in outputs(bootstrap_servers, topics.out)}
    assert 0 < len(written) < 6_000
    committed_are_written(bootstrap_servers, "g-revoke", topics, where, written)
    assert service.stats()["statuses"]["401"] >= 1


def test_500s_for_8_seconds_lose_nothing_and_dead_letter_nothing(bootstrap_servers, geo_service, tmp_path) -> None:
    service = geo_service(fault_status=500, fault_from=5, fault_for=8, latency_ms=5)
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "any"))
    topics = make_topics(bootstrap_servers, "geo500", partitions=PARTITIONS)
    events = geo_events(2_000, run="500")
    produce(bootstrap_servers, topics, events)

    job = run_job(args(bootstrap_servers, topics, contract, "g-500"), tmp_path, "geo500", timeout=240)

    assert service.stats()["statuses"]["500"] > 0                               # the fault really hit the job
    assert {doc["event_id"] for doc in outputs(bootstrap_servers, topics.out)} == {e["event_id"] for e in events}
    assert outputs(bootstrap_servers, topics.dlq) == []
    assert job.summary()["counters"].get("enrich/score_dead_letters", 0) == 0
    assert committed_offsets(bootstrap_servers, "g-500", topics.inp) == end_offsets(bootstrap_servers, topics.inp)


def test_a_service_that_trickles_its_answer_cannot_hang_the_job(bootstrap_servers, geo_service, tmp_path) -> None:
    """One byte every 2 s: an answer of ~1,500 bytes would take an hour. Each attempt is cut at the
    request timeout and the batch at its deadline, dead-lettered with the reason `deadline`."""
    service = geo_service(trickle=True, fault_from=9)
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "any"))
    topics = make_topics(bootstrap_servers, "geotrickle", partitions=PARTITIONS)
    events = geo_events(200, run="trickle")
    produce(bootstrap_servers, topics, events)

    started = time.monotonic()
    job = run_job(args(bootstrap_servers, topics, contract, "g-trickle", "--batch_deadline=20", "--request_timeout=8"),
                  tmp_path, "trickle", timeout=300)
    took = time.monotonic() - started

    letters = outputs(bootstrap_servers, topics.dlq)
    written = {doc["event_id"] for doc in outputs(bootstrap_servers, topics.out)}
    assert letters and all(d["reason"] == "deadline" and d["stage"] == "enrich" for d in letters)
    assert written | {d["id"] for d in letters} == {e["event_id"] for e in events}      # each event once
    assert not written & {d["id"] for d in letters}
    latency = job.summary()["distributions"]["enrich/request_latency_ms"]
    assert latency["max"] <= 8_000 + 1_000                                      # no attempt outlived its bound
    print(f"trickle: {len(letters)} dead letters, {len(written)} written, drained in {took:.0f} s")


def test_a_rotated_key_file_is_used_without_a_restart(bootstrap_servers, geo_service, tmp_path) -> None:
    service_keys = keys(tmp_path / "service-keys", "key-A")
    service = geo_service(keys_file=service_keys, latency_ms=20)
    job_key = keys(tmp_path / "key", "key-A")
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, job_key)
    topics = make_topics(bootstrap_servers, "georotate", partitions=PARTITIONS)
    events = geo_events(6_000, run="rotate")
    produce(bootstrap_servers, topics, events)

    job = JobProcess(args(bootstrap_servers, topics, contract, "g-rotate", "--max_in_flight=8"), tmp_path, "rotate")
    wait_for(lambda: service.stats()["requests"] >= 20, timeout=120, what="the job to be enriching")
    # Rotation as a Secret does it: the new key is written for the job, then the old one is revoked
    # at once (no overlap): requests already on their way with key-A are refused.
    keys(job_key, "key-B")
    keys(service_keys, "key-B")
    assert job.wait(timeout=240) == 0, job.stderr_tail()

    seen = service.stats()["keys_seen"]
    assert seen.get("key-B", 0) > 0 and seen.get("key-A", 0) > 0
    assert outputs(bootstrap_servers, topics.dlq) == []
    assert {doc["event_id"] for doc in outputs(bootstrap_servers, topics.out)} == {e["event_id"] for e in events}
    assert committed_offsets(bootstrap_servers, "g-rotate", topics.inp) == end_offsets(bootstrap_servers, topics.inp)


def test_the_breaker_stops_a_job_whose_service_rejects_everything(bootstrap_servers, geo_service, tmp_path) -> None:
    service = geo_service(fault_status=422, fault_from=2)        # the probe passes, then every batch is refused
    contract = write_contract(tmp_path / "geo.yaml", service.risk_url, keys(tmp_path / "key", "any"))
    topics = make_topics(bootstrap_servers, "geo422", partitions=PARTITIONS)
    where = produce(bootstrap_servers, topics, geo_events(9_000, run="422"))

    job = JobProcess(args(bootstrap_servers, topics, contract, "g-422", "--breaker_window=500"), tmp_path, "geo422")
    assert job.wait(timeout=120) == 3
    lines = [line for line in job.stderr().splitlines() if line.strip()]
    assert len(lines) == 1 and "the dead-letter breaker tripped" in lines[0] and "http_422" in lines[0], lines
    letters = outputs(bootstrap_servers, topics.dlq)
    assert all(d["reason"] == "http_422" for d in letters)
    committed = committed_are_written(bootstrap_servers, "g-422", topics, where, {d["id"] for d in letters})
    assert committed < 9_000 // 2                                               # the stream was not dead-lettered
    assert service.stats()["statuses"]["422"] >= 500 // 20
