"""Runnable Beam jobs and their options."""
import logging

# Beam logs a warning on every import when google-cloud-* packages (here:
# google-cloud-monitoring) are installed without google-cloud-storage. We do
# not use GCS, so keep job output readable.
logging.getLogger("apache_beam.io.filesystems").setLevel(logging.ERROR)
