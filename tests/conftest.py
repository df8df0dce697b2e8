"""Session-wide fixtures: the real Kafka broker and scoring service live in tests/fixtures."""
pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.scoring", "tests.fixtures.metric_service", "tests.fixtures.flink",
                  "tests.fixtures.prometheus", "tests.fixtures.redis", "tests.fixtures.geo"]
