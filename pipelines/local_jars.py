"""Where the local build puts the jars the launcher uses by default (paths only).

`make flink-jar` and `make kafka-expansion-jar` (testbed/flink/jobserver.py,
testbed/kafka/expansion.py) build them into .cache/; no mirror serves Beam's
own. The launcher only needs to know where they are, so the paths live here
and the testbed builds to them.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

BEAM_VERSION = version("apache-beam")  # a jar must match the installed SDK exactly
FLINK_MINOR = "1.19"
CACHE = Path(__file__).resolve().parent.parent / ".cache"
FLINK_JOB_SERVER_JAR = CACHE / "flink" / f"beam-runners-flink-{FLINK_MINOR}-job-server-{BEAM_VERSION}.jar"
KAFKA_EXPANSION_JAR = CACHE / "kafka-expansion" / f"beam-kafka-expansion-service-{BEAM_VERSION}.jar"
KAFKA_JOB_SERVER_JAR = (CACHE / "kafka-expansion"
                        / f"beam-runners-flink-{FLINK_MINOR}-job-server-kafka-{BEAM_VERSION}.jar")
