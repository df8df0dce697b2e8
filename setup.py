"""Packaging for the throttled payment-enrichment pipeline.

Beam is pinned exactly: the Python SDK, the Flink job server and the Prism
binary must all be the same Beam version (see README, "Beam version").
"""
from setuptools import find_packages, setup

BEAM_VERSION = "2.62.0"

setup(
    name="payment-enrichment",
    version="0.1.0",
    description=(
        "Kafka -> bounded batches -> throttled fraud scoring -> Kafka, "
        "with backpressure as a control signal (Apache Beam)."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines*", "transforms*", "testbed*"]),
    install_requires=[
        f"apache-beam=={BEAM_VERSION}",
        "confluent-kafka>=2.6,<3",
        "requests>=2.32,<3",
        # JSON encode/decode on the hot path (a tenth of the stdlib's cost per event).
        "msgspec==0.22.0",
        "google-cloud-monitoring>=2.20,<3",
        "psutil>=5.9",
        "rich>=13",
        # The local scoring service (testbed) is an asyncio HTTP server.
        "aiohttp>=3.9,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "jsonschema>=4.20",
            "pyyaml>=6",
            # Kubernetes JSON schemas for tests/unit/test_deploy_manifests.py (offline).
            "kubernetes-validate>=1.30",
            # `make lint` (pinned: a new rule set must not turn a clean tree red on its own).
            "ruff==0.17.5",
            "mypy==2.4.1",
        ],
        "bench": [
            "matplotlib>=3.8",
            # The flame graphs under docs/profile/ (python -m testbed.bench.profile).
            "py-spy==0.4.3",
            f"apache-beam[gcp]=={BEAM_VERSION}",
        ],
    },
)
