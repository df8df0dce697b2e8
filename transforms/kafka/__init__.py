"""Pure-Python Kafka I/O (confluent-kafka): read by offset range, write with acks, commit acknowledged offsets.

The path through it: `read.ReadFromKafka` -> (the pipeline) -> `write.WriteToKafka`
-> `commit.CommitOffsets`; `connection` holds the client settings, `records`
the element types that carry each record's source position to the committer,
`lag` measures what is left (committed vs end offsets).
"""
