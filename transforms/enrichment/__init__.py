"""Throttled enrichment for any Beam pipeline: the public API.

    from transforms.enrichment import ThrottledEnrichment, ThrottleSettings, Caller, succeeded, ElementFailure

`ThrottledEnrichment(caller, settings)` batches a PCollection, calls the
service through `caller` at the rate the service sustains (learned, capped in
flight, backed off with jitter, honouring `Retry-After`, within a retry budget
and a deadline) and emits `Enriched` or `Failed` per element; it stops the job
instead of dead-lettering the stream when the service says the job is
misconfigured or most elements fail. `transforms.contract.HttpJsonCaller` is a
ready caller for HTTP JSON services, configured by a file.
"""
from transforms.control.settings import DEFAULTS, ThrottleSettings
from transforms.control.signals import (
    DEFAULT_STATUS,
    AttemptKind,
    AttemptResult,
    ElementFailure,
    StatusClasses,
    connection_refused,
    parse_policy_rps,
    parse_retry_after,
    succeeded,
    timed_out,
)
from transforms.enrichment.caller import BlockingCaller, Caller
from transforms.enrichment.outcomes import Enriched, Failed
from transforms.enrichment.runtime import EnrichmentStopped, close_runtimes
from transforms.enrichment.transform import ThrottledEnrichment

#: The apache-beam releases this API is tested on: the pinned one (`setup.py`, shared with the Flink
#: job server) and the newest on PyPI when it was last checked (`make test-beam-latest`).
SUPPORTED_BEAM_VERSIONS = (">=2.62.0", "<2.78")

__all__ = [
    "DEFAULTS", "DEFAULT_STATUS", "SUPPORTED_BEAM_VERSIONS", "AttemptKind", "AttemptResult", "BlockingCaller",
    "Caller", "ElementFailure", "Enriched", "EnrichmentStopped", "Failed", "StatusClasses", "ThrottleSettings",
    "ThrottledEnrichment", "close_runtimes", "connection_refused", "parse_policy_rps", "parse_retry_after",
    "succeeded", "timed_out",
]
