"""The job's command: its exit code passes through, and what was loaded before `main` is frozen."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_exits_with_mains_code_and_runs_it_with_the_loaded_modules_frozen() -> None:
    probe = ("import gc; from pipelines.command import exit_with; "
             "exit_with(lambda: print(gc.get_freeze_count() > 1000, gc.isenabled()) or 3)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert (out.returncode, out.stdout.split()) == (3, ["True", "True"])
