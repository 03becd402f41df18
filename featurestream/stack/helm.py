"""Helm, for rendering and linting the chart in deploy/helm without a cluster.

No registry reachable here ships a Helm binary, so it is built once from source with
``go install`` (like versitygw) by ``make fetch`` and cached under ``~/.featurestream/cache/bin``.
The version is pinned: the chart tests compare rendered output, and template functions
change between Helm releases.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from featurestream.stack.gobuild import go_install

HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"


def find_helm(bin_dir: Path, *, search_path: str | None = None, build: bool = False) -> str | None:
    """The cached pinned helm, else one on PATH, else (``build``) a fresh build; None if none."""
    cached = bin_dir / "helm"
    if cached.is_file():
        return str(cached)
    on_path = shutil.which("helm", path=search_path)
    if on_path:
        return on_path
    if build:
        return go_install("helm", HELM_MODULE, HELM_VERSION, "helm", bin_dir, search_path=search_path)
    return None
