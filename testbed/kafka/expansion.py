"""The two jars that run Beam's Java KafkaIO on Flink without Docker (`--kafka_io=java`).

No mirror serves Beam's `beam-sdks-java-io-expansion-service` jar, so both are
assembled from Maven Central artifacts and cached in .cache/kafka-expansion/:

- the expansion service (deploy/local/kafka-expansion/pom.xml): Python's
  `ReadFromKafka` / `WriteToKafka` expand against it, started with
  `--defaultEnvironmentType=EMBEDDED` so the Java transforms run inside the Flink
  JVM instead of a Docker SDK container;
- a Flink job server with KafkaIO on its classpath (deploy/local/flink/pom.xml,
  profile `kafka-io`): EMBEDDED transforms load their classes from the runner's JVM.

    python -m testbed.kafka.expansion build [--force]   # prints both jar paths
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from pipelines.local_jars import BEAM_VERSION, KAFKA_EXPANSION_JAR, KAFKA_JOB_SERVER_JAR
from testbed.flink import jobserver
from testbed.support.cached_build import build_main, maven_shaded_jar

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "local" / "kafka-expansion" / "pom.xml"
CACHE_DIR = KAFKA_EXPANSION_JAR.parent
EXPANSION_JAR = KAFKA_EXPANSION_JAR
JOB_SERVER_JAR = KAFKA_JOB_SERVER_JAR


class KafkaExpansionError(RuntimeError):
    """A jar could not be built; the one-line message says why and where the log is."""


class KafkaJars(NamedTuple):
    expansion_service: Path
    job_server: Path

    def __str__(self) -> str:
        return f"{self.expansion_service}\n{self.job_server}"


def build(force: bool = False) -> KafkaJars:
    """Both jars, each built with Maven unless already cached."""
    expansion = maven_shaded_jar(POM, EXPANSION_JAR, KafkaExpansionError, [f"beam.version={BEAM_VERSION}"],
                                 force=force)
    try:
        job_server = jobserver.build(force, JOB_SERVER_JAR, profiles=("kafka-io",))
    except jobserver.JobServerError as err:
        raise KafkaExpansionError(str(err)) from err
    return KafkaJars(expansion, job_server)


def main(argv: list[str] | None = None) -> int:
    return build_main("kafka.expansion", __doc__.split("\n")[0], "KafkaIO jars", build, KafkaExpansionError, argv)


if __name__ == "__main__":
    sys.exit(main())
