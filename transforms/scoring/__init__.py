"""Scoring events through the capacity-limited fraud service.

`score_in_batches.ScoreInBatches` (the stateful batching DoFn) hands batches to
the process-wide `runtime.ScoringRuntime`, which runs each through the
throttle in `transforms.control` and the HTTP `client`; `codec` is the one
place that encodes requests, validates responses and builds results and dead
letters (the benchmark's baseline clients use it too).
"""
