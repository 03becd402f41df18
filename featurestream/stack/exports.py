"""The `export NAME=value` lines `featurestream up` prints for `eval "$(featurestream up)"`."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def export_line(name: str, value: str) -> str:
    """One POSIX-shell ``export`` line; the value is quoted so any character survives eval."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"not a shell variable name: {name!r} (letters, digits and _ only)")
    if not isinstance(value, str):
        raise TypeError(f"value of {name} must be a string, got {type(value).__name__}: {value!r}")
    if "\0" in value or "\n" in value:
        raise ValueError(f"value of {name} must be one line without NUL bytes, got {value!r}")
    return f"export {name}={shlex.quote(value)}"


def format_exports(variables: Mapping[str, str]) -> str:
    """All export lines, one per variable, in the given order, ending with a newline."""
    return "".join(export_line(k, v) + "\n" for k, v in variables.items())


def parse_exports(text: str) -> dict[str, str]:
    """Inverse of :func:`format_exports` (tests and `status` read earlier output with it)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = shlex.split(line)
        if len(parts) != 2 or parts[0] != "export" or "=" not in parts[1]:
            raise ValueError(f"not an export line: {line!r}")
        name, value = parts[1].split("=", 1)
        result[name] = value
    return result
