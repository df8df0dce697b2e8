"""The local fraud-scoring service, split by concern; run it via ``python -m testbed.scoring``."""
