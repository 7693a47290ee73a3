"""Every third-party module the code imports is declared in pyproject.toml (and so pinned for installs), and
every declared distribution is imported."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("reasonrank", "actors", "jobs", "serve", "cluster")


def _imported_modules() -> dict[str, str]:
    """Top-level module → a file importing it, over the installed packages' sources."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """The distributions pyproject.toml declares."""
    return {_normalise(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0])
            for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}


def test_every_imported_module_is_declared():
    declared = _declared()
    for platform in ("requirements-cpu.txt", "requirements-gpu.txt"):  # vLLM: each platform's distribution
        declared |= {_normalise(re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0])
                     for line in (REPO / platform).read_text().splitlines() if line.startswith("vllm")}
    providers = packages_distributions()
    missing = {}
    for module, where in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module in PACKAGES:
            continue
        distributions = {_normalise(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            missing[module] = (sorted(distributions), where)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_dependency_is_imported():
    """A declared distribution that no module imports is weight on every install (and a pin to keep up)."""
    providers = packages_distributions()
    imported = {_normalise(d) for module in _imported_modules() for d in providers.get(module, [module])}
    unused = _declared() - imported
    assert not unused, f"declared in pyproject.toml but imported nowhere in {', '.join(PACKAGES)}: {sorted(unused)}"
