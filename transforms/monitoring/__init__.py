"""Metrics: one declaration per metric (`catalogue`), one handle that updates Beam and the live
registry (`metrics`, `telemetry`), and their Cloud Monitoring export (`exporter`); see docs/metrics.md.

Submodules are imported directly, so the status command and the options do
not load the Google client libraries.
"""
