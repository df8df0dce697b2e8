"""Packaging for the throttled enrichment pipeline.

`pip install .` installs the transforms (`transforms.enrichment` is the public
API) and the jobs (`pipelines`); the local stand-ins and the benchmark
(`testbed/`) stay a development part of the repository, run from its root.

Beam is pinned exactly: the Python SDK, the Flink job server and the Prism
binary must all be the same Beam version (see README, "Beam version").
`BEAM_VERSION=<x.y.z>` in the environment installs another one instead, for
checking the public transform on it (`make test-beam-latest`).
"""
import os

from setuptools import find_packages, setup

PINNED_BEAM = "2.62.0"
BEAM_VERSION = os.environ.get("BEAM_VERSION", PINNED_BEAM)

setup(
    name="throttled-enrichment",
    version="0.1.0",
    description=(
        "Enrich any PCollection (or a Kafka topic) through a capacity-limited service, "
        "with backpressure as a control signal (Apache Beam)."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines*", "transforms*"]),
    package_data={"transforms.contract": ["*.yaml"]},
    install_requires=[
        f"apache-beam=={BEAM_VERSION}",
        "confluent-kafka>=2.6,<3",
        "requests>=2.32,<3",
        # JSON encode/decode on the hot path (a tenth of the stdlib's cost per event).
        "msgspec==0.22.0",
        "google-cloud-monitoring>=2.20,<3",
        # Contract files (transforms/contract/): YAML or JSON.
        "pyyaml>=6",
        "psutil>=5.9",
        "rich>=13",
        # --prometheus_port: the official client serves the metric catalogue from each worker process.
        "prometheus-client>=0.20,<1",
        # --quota_coordinator: the fleet quota's leases (transforms/quota/).
        "redis>=5,<9",
        # The HTTP caller (transforms/contract/http.py) and the local scoring service (testbed).
        # 3.11: a name that does not resolve is its own error (ClientConnectorDNSError).
        "aiohttp>=3.11,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "jsonschema>=4.20",
            # Kubernetes JSON schemas for tests/unit/test_deploy_manifests.py (offline).
            "kubernetes-validate>=1.30",
            # `make lint` (pinned: a new rule set must not turn a clean tree red on its own).
            "ruff==0.17.5",
            "mypy==2.4.1",
            "types-PyYAML>=6",
        ],
        "bench": [
            "matplotlib>=3.8",
            # The flame graphs under docs/profile/ (python -m testbed.bench.profile).
            "py-spy==0.4.3",
            f"apache-beam[gcp]=={BEAM_VERSION}",
        ],
    },
)
