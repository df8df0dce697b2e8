"""The portable runners the pipeline targets actually run a pipeline at the pinned Beam version."""
from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from testbed.flink import jobserver
from testbed.prism import runner as prism_runner

N, KEYS = 1000, 7
EXPECTED = [(k, sum(i for i in range(N) if i % KEYS == k)) for k in range(KEYS)]


def run_keyed_sum(pipeline_args: list[str]) -> None:
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        sums = (
            p
            | beam.Create(range(N))
            | beam.Map(lambda i: (i % KEYS, i))
            | beam.CombinePerKey(sum)
        )
        assert_that(sums, equal_to(EXPECTED))


@pytest.mark.flink
def test_flink_runner_launches_the_job_server_jar(flink_job_server_jar: Path) -> None:
    """Beam's own launcher (`--flink_job_server_jar`) accepts the locally built jar."""
    run_keyed_sum(jobserver.runner_args(flink_job_server_jar))


@pytest.mark.flink
def test_flink_runner_on_a_shared_job_server(flink_job_server: jobserver.JobServer) -> None:
    run_keyed_sum(flink_job_server.runner_args())


def test_prism_runner(prism_binary: Path) -> None:
    run_keyed_sum(prism_runner.runner_args(prism_binary))
