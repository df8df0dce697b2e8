"""Runnable Beam jobs and their options."""
