"""Outputs stamped straight into the global window, at a time Beam can hold.

Every element of this job lives in the global window. A DoFn that yields a
`TimestampedValue` makes Beam assign its window again, and `GlobalWindow()`
re-runs a constructor that converts a protobuf constant each time: a few
microseconds per element, a twentieth of the drain's CPU. A `WindowedValue`
over one shared window tuple costs none of that.

Kafka timestamps are whatever a producer sent within the broker's
`message.timestamp.after.max.ms`, which a topic may raise to any value; Beam
holds microseconds in a signed 64-bit integer and the global window ends a day
before that. `event_time` clamps into that range instead of failing the job.
"""
from __future__ import annotations

from typing import Any

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

_GLOBAL_WINDOWS = (GlobalWindow(),)
_MAX_MS = GlobalWindow().max_timestamp().micros // 1000
_MIN_MS = -_MAX_MS


def clamped_ms(timestamp_ms: int) -> int:
    """A Kafka timestamp (ms) moved into the global window's range."""
    return min(max(timestamp_ms, _MIN_MS), _MAX_MS)


def event_time(timestamp_ms: int) -> Timestamp:
    """A Kafka timestamp (ms) as a Beam timestamp inside the global window."""
    return Timestamp(micros=clamped_ms(timestamp_ms) * 1000)


def in_global_window(value: Any, timestamp: Timestamp) -> WindowedValue:
    return WindowedValue(value, timestamp, _GLOBAL_WINDOWS)
