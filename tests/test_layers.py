"""The layer rule of ARCHITECTURE.md, as a check.

`mvcc` imports `storage` and `locking`; `storage` and `locking` import neither
each other nor `mvcc`; `stress` uses only the public `mvcc` API, except that a
benchmark of one lower layer (stress/bench/<layer>.py) imports the layer it
measures.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"mvcc", "storage", "locking", "stress", "tests"}

# package -> top-level packages of ours it must not import
FORBIDDEN = {
    "storage": {"mvcc", "locking", "stress", "tests"},
    "locking": {"mvcc", "storage", "stress", "tests"},
    "mvcc": {"stress", "tests"},
}
# stress modules allowed to reach below the public API (a package or a module of one);
# the group-commit benchmark measures the commit path's own protocol, mvcc.commitlog
LAYER_BENCHMARKS = {
    "stress/bench/storage.py": {"storage"},
    "stress/bench/locking.py": {"locking", "storage", "mvcc.commitlog"},
    "stress/bench/vacuum.py": {"mvcc.vacuum"},  # the vacuum process's report file
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_reach_up_or_across(package: str) -> None:
    bad = []
    for path in _modules(package):
        for line, name in _imports(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_stress_uses_only_the_public_api() -> None:
    public = _public_names()
    bad = []
    for path in _modules("stress"):
        rel = str(path.relative_to(ROOT))
        allowed = LAYER_BENCHMARKS.get(rel, set())
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] not in OURS or parts[0] == "stress":
                continue
            if any(name == a or name.startswith(f"{a}.") for a in allowed):
                continue
            if parts[0] == "mvcc" and (len(parts) == 1 or parts[1] in public):
                continue
            bad.append(f"{rel}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def _public_names() -> set[str]:
    """`mvcc.__all__` plus the errors module: what stress may import."""
    import mvcc

    return {"errors", *mvcc.__all__}


def test_the_rule_catches_a_forbidden_edge(tmp_path: Path) -> None:
    """The walker itself works: a planted edge is found."""
    planted = tmp_path / "x.py"
    planted.write_text(
        "import os\nfrom mvcc.transaction import Transaction\nimport locking.filelock\n"
    )
    names = [n for _l, n in _imports(planted)]
    assert "mvcc.transaction" in names and "locking.filelock" in names
