"""Prometheus as an operator runs it: Debian's server, scraping the job's /metrics."""
