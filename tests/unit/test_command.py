"""The job's command: its exit code passes through, and what was loaded before `main` is frozen."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_exits_with_mains_code_and_runs_it_with_the_loaded_modules_frozen() -> None:
    probe = ("import gc; from pipelines.command import exit_with; "
             "exit_with(lambda: print(gc.get_freeze_count() > 1000, gc.isenabled()) or 3)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert (out.returncode, out.stdout.split()) == (3, ["True", "True"])


def test_run_as_a_command_the_collector_waits_until_the_modules_are_loaded_and_frozen() -> None:
    # As `python -m pipelines.<command>` starts: the package loads first, to find the command in it.
    probe = ("import sys; sys.orig_argv = [sys.executable, '-X', 'utf8', '-m', 'pipelines.status']; "
             "import gc, pipelines; paused = not gc.isenabled(); "
             "import apache_beam; from pipelines.command import exit_with; "
             "exit_with(lambda: print(paused, gc.isenabled(), gc.get_freeze_count() > 100_000) or 0)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert (out.returncode, out.stdout.split()) == (0, ["True", "True", "True"]), out.stderr[-500:]


def test_imported_as_a_library_the_package_leaves_the_collector_alone() -> None:
    probe = "import gc, pipelines.enrich_payments; print(gc.isenabled())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["True"], out.stderr[-500:]


def test_every_command_of_the_package_runs_through_exit_with() -> None:
    """A command that did not would run with the collector paused for its whole life."""
    for module in sorted((ROOT / "pipelines").glob("*.py")):
        text = module.read_text()
        if 'if __name__ == "__main__":' in text:
            main_block = text.split('if __name__ == "__main__":', 1)[1]
            assert "exit_with(" in main_block, f"{module.name} does not run through pipelines.command.exit_with"


def test_a_users_package_that_imports_the_job_and_runs_with_dash_m_keeps_its_collector(tmp_path: Path) -> None:
    """`python -m mycompany.job`, whose package imports the job: runpy imports that package while
    sys.argv[0] is "-m" too, and nothing of ours would start the collector again."""
    package = tmp_path / "mycompany"
    package.mkdir()
    (package / "__init__.py").write_text("import pipelines.enrich_payments\n")
    (package / "job.py").write_text("import gc\nprint(gc.isenabled())\n")
    out = subprocess.run([sys.executable, "-m", "mycompany.job"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])})
    assert out.stdout.split() == ["True"], out.stderr[-500:]


def test_the_module_the_interpreter_runs_is_read_from_its_own_arguments() -> None:
    from pipelines.command import _module_run_by_interpreter as run_module
    assert run_module(["python", "-m", "pipelines.status", "-m", "x"]) == "pipelines.status"
    assert run_module(["python", "-u", "-X", "importtime", "-W", "ignore", "-mpipelines.status"]) == "pipelines.status"
    assert run_module(["python", "-c", "pass", "-m", "pipelines.status"]) is None
    assert run_module(["python", "job.py", "-m", "pipelines.status"]) is None
    assert run_module(["python"]) is None
