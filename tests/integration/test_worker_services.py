"""A runner places the job's stages in worker processes as it likes: on Flink each stage of a slot goes to
one of its SDK workers, so a process may only score, or only commit. Every step that records metrics must
therefore start the worker's `/metrics` endpoint itself (the CI run of 2026-12-07 scraped two of four SDK
workers and never saw a scored event: the scoring stage ran where no parse step had started the server)."""
from __future__ import annotations

import pickle
import urllib.request

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.enrich_payments import build
from pipelines.options import parse_options
from testbed.support.local_ports import free_ports
from transforms.contract.loader import load_contract
from transforms.monitoring.prometheus import stop_server

pytestmark = pytest.mark.integration

#: The job's own steps that record metrics: each must serve them from whatever process it runs in.
RECORDING = {"_ReadPartitionFn", "_ReadUnboundedPartitionFn", "_ParseFn", "_EnrichListsFn", "_WriteFn",
             "_TransactionalWriteFn", "_CommitFn", "_CommitAfterCheckpointFn"}
#: The job's own steps that record nothing (planning and discovery of partitions).
QUIET = {"_PlanPartitions", "_DiscoverPartitions"}


def _job_dofns(argv: list[str]) -> list[beam.DoFn]:
    options: PipelineOptions = parse_options(argv)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options, load_contract("transforms/contract/payments.yaml"))
    found: list[beam.DoFn] = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node) -> None:
            fn = getattr(node.transform, "fn", None)
            if isinstance(fn, beam.DoFn) and type(fn).__module__.startswith(("transforms.", "pipelines.")):
                found.append(fn)

    pipeline.visit(Visitor())
    return found


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("mode", [["--delivery=at_least_once"], ["--delivery=exactly_once"],
                                  ["--streaming", "--delivery=at_least_once"]], ids=["drain", "exactly-once", "streaming"])
def test_every_step_that_records_metrics_serves_them_from_its_own_process(mode: list[str], bootstrap_servers: str) -> None:
    port = free_ports(1)[0]
    dofns = _job_dofns([f"--bootstrap_servers={bootstrap_servers}", "--input_topic=in", "--output_topic=out",
                        "--dlq_topic=dlq", "--group_id=g", "--service_url=http://127.0.0.1:1/score",
                        f"--prometheus_port={port}", "--prometheus_host=127.0.0.1", *mode])
    names = {type(fn).__name__ for fn in dofns}
    assert names <= RECORDING | QUIET, f"a new step of the job: decide whether it records metrics: {names}"
    recording = [fn for fn in dofns if type(fn).__name__ in RECORDING]
    assert len(recording) >= 4, names
    for fn in recording:
        stop_server()
        fn = pickle.loads(pickle.dumps(fn))          # as a worker receives it
        fn.setup()
        try:
            assert _serves(port), f"{type(fn).__name__}.setup() left this process without /metrics"
        finally:
            fn.teardown()
            stop_server()
