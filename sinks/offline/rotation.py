"""When a partition writer should turn its buffers into files: the rotation policy.

Pure: the decision is a function of counters and clock readings the caller passes in, so it
is unit tested without time passing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.offline.errors import OfflineLayoutError

# 50 s of buffering plus the upload and commit keeps publish-to-queryable p99 under a minute.
DEFAULT_MAX_AGE_S = 50.0


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """Rotate when any limit is reached.

    ``max_age_s`` bounds how stale the offline store can be: 50 s by default so rows are
    queryable within a minute, commit included, at the 99th percentile (the reference takes
    up to 15 minutes). Record/byte limits bound memory
    and file size; compaction merges the small files that fast rotation leaves.
    """

    max_records: int = 500_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = DEFAULT_MAX_AGE_S

    def __post_init__(self) -> None:
        for name in ("max_records", "max_bytes"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise OfflineLayoutError(f"RotationPolicy.{name} must be a positive integer; got {v!r}")
        v = self.max_age_s
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < float("inf")):
            raise OfflineLayoutError(f"RotationPolicy.max_age_s must be a positive finite number of "
                                     f"seconds; got {v!r}")


def rotation_reason(policy: RotationPolicy, records: int, est_bytes: int,
                    first_added_at: float | None, now: float) -> str | None:
    """Why the buffer must be written now ("records", "bytes", "age"), or None to keep buffering.

    ``first_added_at``/``now`` are monotonic-clock seconds; None means the buffer is empty.
    """
    if records <= 0 or first_added_at is None:
        return None
    if records >= policy.max_records:
        return "records"
    if est_bytes >= policy.max_bytes:
        return "bytes"
    if now - first_added_at >= policy.max_age_s:
        return "age"
    return None
