"""The layering rules of ARCHITECTURE.md, checked on the source with ``ast``.

import-linter cannot build a graph of one namespace whose subpackages live in
top-level folders (``package-dir``), so the contracts are checked here: every
import, at module level or inside a function, followed through our own modules.
"""

from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: source package -> import prefixes it must not reach, directly or through our modules.
CONTRACTS: dict[str, tuple[str, ...]] = {
    "recstream.schemas": ("recstream",),  # nothing of ours outside itself
    "recstream.inference": ("recstream.stream", "recstream.trainer"),
    "recstream.trainer": ("recstream.stream",),
    "recstream.stream": ("torch", "recstream.inference", "recstream.trainer"),
}


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def module_files() -> dict[str, Path]:
    """Every module of the distribution by its import name."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


@cache
def direct_imports(module: str) -> frozenset[str]:
    path = module_files()[module]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, node, path.name == "__init__.py")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def ours(name: str, modules: dict[str, Path]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def reachable(start: str, modules: dict[str, Path]) -> dict[str, list[str]]:
    """Our modules reachable from ``start`` with one import chain to each."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for name in direct_imports(current):
            target = ours(name, modules)
            if target and target not in chains:
                chains[target] = [*chains[current], target]
                todo.append(target)
    return chains


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(source: str, forbidden: tuple[str, ...]) -> list[str]:
    """Import chains from ``source`` to a forbidden module (imports inside ``source`` allowed)."""
    modules = module_files()
    found = set()
    for start in (m for m in modules if within(m, source)):
        for module, chain in reachable(start, modules).items():
            for name in direct_imports(module):
                if not within(name, source) and any(within(name, f) for f in forbidden):
                    found.add(" -> ".join([*chain, name]))
    return sorted(found)


def test_every_contract_holds() -> None:
    broken = {src: violations(src, forbidden) for src, forbidden in CONTRACTS.items()}
    assert {src: v for src, v in broken.items() if v} == {}


def test_the_checker_sees_a_breach() -> None:
    # A chain the rules allow, asked of a rule that forbids it: the checker must find it.
    assert violations("recstream.trainer", ("recstream.inference",))
    assert violations("recstream.stream", ("recstream.schemas",))


def test_every_folder_is_mapped_into_the_namespace() -> None:
    mapped = {d.name for d in package_dirs().values()}
    assert {"schemas", "stream", "inference", "trainer", "bench", "recstream"} <= mapped
    assert "recstream.stream.worker" in module_files()
