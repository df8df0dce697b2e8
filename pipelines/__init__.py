"""Runnable Beam jobs and their options."""
import gc
import logging
import sys
import warnings

# Run as a command (`python -m pipelines.<command>`: runpy imports this package while sys.argv[0]
# is "-m"), the collector waits until the command's modules are loaded: its passes over them took
# 0.13-0.17 s of every start-up. `command.exit_with`, which every command runs through, freezes
# them and starts it again before the command's `main`.
if sys.argv[:1] == ["-m"]:
    gc.disable()

# Beam logs a warning on every import when google-cloud-* packages (here:
# google-cloud-monitoring) are installed without google-cloud-storage, and the
# Google client libraries warn about Python and grpcio support dates. Neither is
# actionable for a user of this job; keep its output (and one-line errors) clean.
logging.getLogger("apache_beam.io.filesystems").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
