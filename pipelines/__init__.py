"""Runnable Beam jobs and their options."""
import logging
import warnings

from pipelines.command import pause_collector_while_loading

pause_collector_while_loading(__name__)

# Beam logs a warning on every import when google-cloud-* packages (here:
# google-cloud-monitoring) are installed without google-cloud-storage, and the
# Google client libraries warn about Python and grpcio support dates. Neither is
# actionable for a user of this job; keep its output (and one-line errors) clean.
logging.getLogger("apache_beam.io.filesystems").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
