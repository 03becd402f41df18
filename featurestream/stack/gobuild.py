"""Build a Go program once with ``go install`` into the cache's bin dir (versitygw, helm).

The module proxy serves sources, not binaries, so the one toolchain the machine has (Go)
builds what no registry ships prebuilt; the result is kept under ``~/.featurestream/cache/bin``
and every later call is a file check.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from featurestream.stack.errors import StackError


def go_install(what: str, module: str, version: str, binary: str, bin_dir: Path, *,
               search_path: str | None = None, log_path: Path | None = None) -> str | None:
    """``bin_dir/binary`` built from ``module@version`` unless present; None without a Go toolchain.

    ``what`` names the item in errors ("s3", "helm"). A failed build raises StackError with
    the tail of Go's output.
    """
    target = bin_dir / binary
    if target.is_file():
        return str(target)
    go = shutil.which("go", path=search_path)
    if go is None:
        return None
    bin_dir.mkdir(parents=True, exist_ok=True)
    env_prog = shutil.which("env", path=search_path) or "/usr/bin/env"
    # `env GOBIN=...` adds one variable for the child without this module touching os.environ.
    result = subprocess.run(
        [env_prog, f"GOBIN={bin_dir}", go, "install", f"{module}@{version}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0 or not target.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise StackError(f"{what}: building {binary} {version} with `go install` failed "
                         f"(exit {result.returncode}):\n{tail}")
    return str(target)
