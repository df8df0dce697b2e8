"""Beam's Prism runner: its cached build and the reproduction of its failures."""
