"""Runnable examples of the public API (`transforms.enrichment`)."""
