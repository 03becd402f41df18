"""`make fetch` builds helm once with `go install` and then finds it cached (a fake `go` here)."""

from __future__ import annotations

import pytest

from featurestream.stack.errors import StackError
from featurestream.stack.helm import HELM_MODULE, HELM_VERSION, find_helm

FAKE_GO = """#!/bin/sh
echo "$@" > "$GOBIN/go-args"
printf '#!/bin/sh\\necho fake helm\\n' > "$GOBIN/helm"
chmod +x "$GOBIN/helm"
"""


def _tool(directory, name: str, script: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(script)
    path.chmod(0o755)


def test_builds_the_pinned_version_once_then_uses_the_cache(tmp_path) -> None:
    tools, bin_dir = tmp_path / "tools", tmp_path / "cache" / "bin"
    _tool(tools, "go", FAKE_GO)
    search = f"{tools}:/usr/bin:/bin"
    assert find_helm(bin_dir, search_path=search) is None  # no build unless asked: tests never compile
    built = find_helm(bin_dir, search_path=search, build=True)
    assert built == str(bin_dir / "helm")
    assert (bin_dir / "go-args").read_text().split() == ["install", f"{HELM_MODULE}@{HELM_VERSION}"]
    (tools / "go").unlink()
    assert find_helm(bin_dir, search_path=search, build=True) == built


def test_without_go_there_is_no_helm_and_a_failed_build_says_why(tmp_path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    assert find_helm(tmp_path / "bin", search_path=str(tools), build=True) is None
    _tool(tools, "go", "#!/bin/sh\necho 'go: module lookup disabled' >&2\nexit 1\n")
    with pytest.raises(StackError, match=r"(?s)helm: building helm v3.22.0 with `go install` failed.*lookup disabled"):
        find_helm(tmp_path / "bin", search_path=f"{tools}:/usr/bin:/bin", build=True)
