"""The profile table attributes each sample to the layer of its leaf frame."""
from testbed.bench.profile import summarise

RAW = "\n".join([
    "main (pipelines/enrich_payments.py:1);process (transforms/kafka/write.py:84) 6",
    "main (pipelines/enrich_payments.py:1);process (transforms/kafka/write.py:96) 2",
    "run (apache_beam/runners/worker/sdk_worker.py:9) 1",
    "_worker (concurrent/futures/thread.py:83);loads (json/decoder.py:3) 1",
    "not a stack line",
])


def test_layers_and_functions_are_shares_of_all_samples():
    table = summarise(RAW)
    assert table.splitlines()[0].startswith("10 samples")
    assert "ours: transforms/                 80.0%" in table
    assert "Beam runner and SDK harness       10.0%" in table
    assert "JSON / msgspec                    10.0%" in table
    # lines of one function are added up
    assert " 80.0%  process (transforms/kafka/write.py)" in table


def test_no_samples_says_so():
    assert summarise("") == "no samples"
