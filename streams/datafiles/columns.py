"""A file's column names against its group: refused before any row is read or published.

A header that names an unknown feature, names one twice or lacks the record identifier or
event time would reject every row for the same reason, so it is one clear error instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from schemas.group import FeatureGroup
from streams.datafiles.formats import DataFileError


def check_columns(group: FeatureGroup, names: Sequence[str], path: Path, what: str = "header") -> None:
    """DataFileError naming the group, the columns at fault and the valid feature names."""
    where = f"{str(path)!r}: the {what}"
    valid = ", ".join(group.feature_names[:40]) + (" ..." if len(group.feature_names) > 40 else "")
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise DataFileError(f"{where} has an empty column name at column {empty[0]}; every column must name a "
                            f"feature of group {group.name!r} ({valid})", group=group.name)
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise DataFileError(f"{where} names {', '.join(repr(n) for n in dup[:10])} more than once; each feature "
                            f"of group {group.name!r} may have one column", group=group.name, feature=dup[0])
    unknown = [n for n in names if not group.has_feature(n)]
    if unknown:
        raise DataFileError(f"{where} names {', '.join(repr(n) for n in unknown[:10])}, not a feature of group "
                            f"{group.name!r}; its features are {valid} (add features with `featurestream group "
                            "update --add`)", group=group.name, feature=unknown[0])
    for required in (group.record_identifier_name, group.event_time_name):
        if required not in names:
            raise DataFileError(f"{where} has no column {required!r}, which every record of group {group.name!r} "
                                "needs (its record identifier and event time)", group=group.name, feature=required)
