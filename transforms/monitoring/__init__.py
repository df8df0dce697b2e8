"""Cloud Monitoring export of the process-wide TELEMETRY, and Kafka lag sampling (see docs/metrics.md).

Submodules are imported directly, so the status command and the options do
not load the Google client libraries.
"""
