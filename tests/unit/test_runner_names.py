"""The runner guards see one name whatever the spelling: Beam accepts `prism`, `FlinkRunner`,
`directrunner` and class paths alike, and so must the refusals and the defaults."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import enrich_payments
from pipelines.enrich_payments import FN_API_RUNNER, with_runner_defaults
from pipelines.options import ConfigError, parse_options, runner_name, validate_runner

PRISM = ["prism", "Prism", "PRISMRUNNER", "PrismRunner", "apache_beam.runners.portability.prism_runner.PrismRunner"]
FLINK = ["flink", "Flink", "flinkrunner", "FlinkRunner", "apache_beam.runners.portability.flink_runner.FlinkRunner"]
DIRECT = ["direct", "DIRECT", "directrunner", "DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner",
          "SwitchingDirectRunner"]


@pytest.fixture(autouse=True)
def local_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The local build's jars, as empty files under tmp_path (the tests never start them)."""
    jars = {"flink": tmp_path / "job-server.jar", "kafka_job_server": tmp_path / "job-server-kafka.jar",
            "expansion": tmp_path / "expansion.jar"}
    for jar in jars.values():
        jar.touch()
    monkeypatch.setattr(enrich_payments, "FLINK_JOB_SERVER_JAR", jars["flink"])
    monkeypatch.setattr(enrich_payments, "KAFKA_JOB_SERVER_JAR", jars["kafka_job_server"])
    monkeypatch.setattr(enrich_payments, "KAFKA_EXPANSION_JAR", jars["expansion"])
    return jars


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


def flag(args: list[str], name: str) -> list[str]:
    return [a.partition("=")[2] for a in args if a.startswith(f"{name}=")]


@pytest.mark.parametrize("runner", ["flink", "FlinkRunner"])
def test_flink_uses_the_locally_built_job_server_jar(runner: str, local_jars: dict[str, Path]) -> None:
    assert flag(with_runner_defaults([f"--runner={runner}"]), "--flink_job_server_jar") == [str(local_jars["flink"])]
    # A jar or a running job server the user names wins.
    assert flag(with_runner_defaults(["--runner=FlinkRunner", "--flink_job_server_jar=/my.jar"]),
                "--flink_job_server_jar") == ["/my.jar"]
    assert flag(with_runner_defaults(["--runner=FlinkRunner", "--job_endpoint=jobs:8099"]), "--flink_job_server_jar") == []


def test_flink_without_a_local_jar_says_how_to_build_one(local_jars: dict[str, Path]) -> None:
    local_jars["flink"].unlink()
    with pytest.raises(ConfigError, match=r"run `make flink-jar` to build it, or pass --flink_job_server_jar"):
        with_runner_defaults(["--runner=FlinkRunner"])


def test_java_kafka_io_uses_the_jars_of_the_kafka_build(local_jars: dict[str, Path]) -> None:
    args = with_runner_defaults(["--runner=FlinkRunner", "--kafka_io", "java"])
    assert flag(args, "--flink_job_server_jar") == [str(local_jars["kafka_job_server"])]
    assert flag(args, "--kafka_expansion_service") == [str(local_jars["expansion"])]
    local_jars["expansion"].unlink()
    with pytest.raises(ConfigError, match="make kafka-expansion-jar"):
        with_runner_defaults(["--runner=FlinkRunner", "--kafka_io=java"])
    assert flag(with_runner_defaults(["--runner=FlinkRunner", "--kafka_io=java", "--kafka_expansion_service=host:1"]),
                "--kafka_expansion_service") == ["host:1"]


def test_flink_streaming_bundles_last_at_most_the_batch_wait() -> None:
    streaming = ["--runner=FlinkRunner", "--streaming", "--checkpointing_interval=5000"]
    assert flag(checked(*streaming), "--max_bundle_time_mills") == ["2000"]   # the --max_batch_wait default
    assert flag(checked(*streaming, "--max_batch_wait=0.25"), "--max_bundle_time_mills") == ["250"]
    assert flag(checked(*streaming, "--max_bundle_time_mills=40"), "--max_bundle_time_mills") == ["40"]
    assert flag(checked("--runner=FlinkRunner"), "--max_bundle_time_mills") == []   # a drain's bundles end with its reads

