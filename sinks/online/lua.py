"""Loading featurestream's Redis scripts: each is ``decimal.lua`` (the shared helpers) then its own text.

Redis runs a script as one chunk with no includes, so the shared part is put in front here.
"""

from __future__ import annotations

from importlib import resources


def load_script(name: str) -> str:
    """The text to EVAL/SCRIPT LOAD for ``name`` (a .lua file of this package)."""
    here = resources.files("sinks.online")
    return here.joinpath("decimal.lua").read_text(encoding="utf-8") + "\n" + \
        here.joinpath(name).read_text(encoding="utf-8")
