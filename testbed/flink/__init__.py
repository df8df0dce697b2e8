"""Stand-in for Flink: a local session cluster, the Beam Flink job server and the Python SDK worker pool."""
