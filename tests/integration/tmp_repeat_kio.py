import pytest
from tests.integration.test_kafka_io import test_full_producer_queue_is_backpressure_not_loss as bp, test_drain_writes_every_record_once_and_commits_the_end_offsets as dr, conn

@pytest.mark.parametrize("i", range(8))
def test_bp(i, bootstrap_servers, kafka_topic):
    bp(bootstrap_servers, kafka_topic)
