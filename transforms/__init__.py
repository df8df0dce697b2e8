"""Beam transforms of the enrichment data path and the pure-Python control logic they use."""
