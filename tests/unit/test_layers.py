"""The layers of docs/architecture.md, checked on the code's own import statements.

Protocols sit on top, the store and ``mime/`` at the bottom, and shared leaf modules beside
them; new features reach mail only through ``ourmail/interfaces.py``.  Only imports are read
(with ``ast``): nothing is run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ourmail"
PROTOCOLS = {"imap", "pop3", "smtp", "queue"}
BOTTOM = {"mime", "store", "net"}
FEATURES = {"filters", "web", "vault", "lists"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ourmail modules it imports (at any depth in the file)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: set(_imports(path, name)) & paths.keys() for name, path in paths.items()}


GRAPH = import_graph()


def package(module: str) -> str:
    """``ourmail.imap.fetch`` -> ``imap``; a top-level module is its own package."""
    return module.split(".")[1] if "." in module else ""


def reach(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one chain that gets there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        module = todo.pop()
        for target in GRAPH[module]:
            if target not in chains:
                chains[target] = [*chains[module], target]
                todo.append(target)
    return chains


def in_packages(packages: set[str]) -> list[str]:
    return sorted(m for m in GRAPH if package(m) in packages)


@pytest.mark.parametrize("module", in_packages(BOTTOM))
def test_the_store_mime_and_net_reach_no_protocol(module: str) -> None:
    bad = [chain for target, chain in reach(module).items() if package(target) in PROTOCOLS]
    assert not bad, " -> ".join(bad[0])


@pytest.mark.parametrize("module", in_packages(PROTOCOLS))
def test_a_protocol_imports_no_other_protocol_and_no_concrete_store(module: str) -> None:
    own = package(module)
    bad = sorted(
        t for t in GRAPH[module] if package(t) in (PROTOCOLS - {own}) | {"store", "service"}
    )
    assert not bad, f"{module} imports {bad}"


def test_features_reach_mail_only_through_the_interfaces() -> None:
    """filters/, web/, vault/ and lists/ (as they arrive) import no protocol and no store."""
    bad = {
        module: sorted(t for t in GRAPH[module] if package(t) in PROTOCOLS | {"store"})
        for module in in_packages(FEATURES)
    }
    assert not {m: targets for m, targets in bad.items() if targets}


@pytest.mark.parametrize("module", in_packages(PROTOCOLS))
def test_protocols_reach_features_only_through_the_interfaces(module: str) -> None:
    """smtp/ sees the filter chain as ``IFilterChain``, the queue its signer as an interface:
    service.py wires the concrete ones in."""
    bad = sorted(t for t in GRAPH[module] if package(t) in FEATURES)
    assert not bad, f"{module} imports {bad}"


def test_no_two_packages_import_each_other() -> None:
    edges = {
        (package(m), package(t))
        for m, targets in GRAPH.items()
        for t in targets
        if package(m) and package(t) and package(m) != package(t)
    }
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, cycles


def test_the_graph_is_read() -> None:
    """The checks above see the real code: a known import is found."""
    assert "ourmail.interfaces" in reach("ourmail.service")
