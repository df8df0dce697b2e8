"""Stand-in for Kafka: a local broker, admin helpers, the KafkaIO expansion jars, a producer and its synthetic events."""
