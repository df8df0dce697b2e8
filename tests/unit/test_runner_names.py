"""The runner guards see one name whatever the spelling: Beam accepts `prism`, `FlinkRunner`,
`directrunner` and class paths alike, and so must the refusals and the defaults."""
from __future__ import annotations

import pytest

from pipelines.enrich_payments import FN_API_RUNNER, with_runner_defaults
from pipelines.options import ConfigError, parse_options, runner_name, validate_runner

PRISM = ["prism", "Prism", "PRISMRUNNER", "PrismRunner", "apache_beam.runners.portability.prism_runner.PrismRunner"]
FLINK = ["flink", "Flink", "flinkrunner", "FlinkRunner", "apache_beam.runners.portability.flink_runner.FlinkRunner"]
DIRECT = ["direct", "DIRECT", "directrunner", "DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner",
          "SwitchingDirectRunner"]


def checked(*argv: str) -> list[str]:
    """What `prepare` does with the runner before touching Kafka."""
    args = with_runner_defaults(list(argv))
    validate_runner(parse_options(args), args)
    return args


@pytest.mark.parametrize("runner, name", [*((r, "PrismRunner") for r in PRISM), *((r, "FlinkRunner") for r in FLINK),
                                          ("direct", "DirectRunner"), (None, "DirectRunner"), (FN_API_RUNNER, "FnApiRunner"),
                                          ("my.own.Runner", "Runner")])
def test_runner_names_are_resolved_as_beam_resolves_them(runner: str | None, name: str) -> None:
    assert runner_name(runner) == name


@pytest.mark.parametrize("runner", PRISM)
@pytest.mark.parametrize("form", ["--runner={}", "--runner {}"])
def test_prism_is_refused_in_any_spelling(runner: str, form: str) -> None:
    with pytest.raises(ConfigError, match="PrismRunner is refused"):
        checked(*form.format(runner).split(" "))


@pytest.mark.parametrize("runner", FLINK)
def test_flink_streaming_needs_a_checkpointing_interval_in_any_spelling(runner: str) -> None:
    with pytest.raises(ConfigError, match="needs --checkpointing_interval"):
        checked(f"--runner={runner}", "--streaming")
    args = checked(f"--runner={runner}", "--streaming", "--checkpointing_interval=5000")   # passes through
    assert "--finish_bundle_before_checkpointing" in args


@pytest.mark.parametrize("runner", DIRECT)
def test_direct_means_the_fn_api_runner_in_any_spelling(runner: str) -> None:
    args = checked("--runner", runner)
    assert [a for a in args if a.startswith("--runner")] == [f"--runner={FN_API_RUNNER}"]
    with pytest.raises(ConfigError, match="--streaming needs FlinkRunner"):
        checked(f"--runner={runner}", "--streaming")
    with pytest.raises(ConfigError, match="unknown option"):
        checked(f"--runner={runner}", "--checkpointing_interval=5000")   # only portable runners pass flags on
