"""Dependencies are declared exactly: every third-party module the shipped code imports is pinned
in requirements.txt and listed in pyproject.toml, and every runtime requirement is imported."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["picloud", "topology", "tenants", "traffic", "controller_apps", "webui"]  # what pyproject ships
LOCAL = set(PACKAGES) | {"bench", "tests", "docs", "examples", "provisioning"}


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def runtime_requirements() -> dict[str, str]:
    """requirements.txt's runtime block (above '# Development'): name -> the whole line."""
    text = (ROOT / "requirements.txt").read_text().split("# Development")[0]
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {_name(line): line for line in lines}


def imported_distributions() -> set[str]:
    """Distributions providing the top-level modules the shipped packages import (stdlib and our
    own packages excluded; a guarded optional import still counts: it runs on some path)."""
    mapping = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top in LOCAL or top == "__future__":
                        continue
                    dists = mapping.get(top)
                    assert dists, f"{path.relative_to(ROOT)} imports {top!r}, which no installed distribution provides"
                    found.add(dists[0].lower().replace("_", "-"))
    return found


def test_every_imported_distribution_is_pinned_and_declared() -> None:
    pinned = runtime_requirements()
    declared = {_name(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    imported = imported_distributions()
    assert imported - set(pinned) == set(), "imported but not in requirements.txt's runtime block"
    assert imported - declared == set(), "imported but not in pyproject.toml's dependencies"
    assert all("==" in pinned[name] for name in imported), "requirements.txt pins every runtime dependency"


def test_every_runtime_requirement_is_imported() -> None:
    unused = set(runtime_requirements()) - imported_distributions()
    assert unused == set(), f"declared but never imported by the shipped packages: {sorted(unused)}"
