"""A digest of the package code a computation runs, for code versions and training resume.

A computation starts from one module (an asset's stage module, the training job); everything it
imports inside the package, at any depth and wherever in a module the import stands, is part of
its code. The digest is of each module's syntax tree without docstrings, so an edit to a comment,
a docstring or the layout keeps results reusable and any edit to what runs does not. It is
conservative: a module counts as a whole even when the computation uses one function of it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGE = "crv_dagster"
# The package's source folder; tests point it at an edited copy.
PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(module: str, root: Path | None = None) -> Path | None:
    """The source file of a package module (a package's ``__init__.py``), or None."""
    root = root or PACKAGE_DIR
    parts = module.split(".")[1:]
    candidate = root.joinpath(*parts)
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(module: str, tree: ast.AST, is_package: bool) -> set[str]:
    """The package modules ``tree`` imports (relative imports resolved), submodules included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from pkg import name` may name a submodule.
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _read(module: str, root: Path) -> tuple[str, frozenset[str]] | None:
    """(digest of the module's code, the package modules it imports), or None for no such module."""
    path = module_path(module, root)
    if path is None:
        return None
    stat = path.stat()
    return _parsed(module, path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parsed(module: str, path: Path, mtime_ns: int, size: int) -> tuple[str, frozenset[str]]:
    # Keyed by the file's time and size too: an edited file is read again, the others are not.
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = frozenset(_imported(module, tree, path.name == "__init__.py"))
    code = ast.dump(_without_docstrings(tree), include_attributes=False)
    return hashlib.sha256(code.encode()).hexdigest(), imports


def package_modules(root: Path | None = None) -> list[str]:
    """Every module of the package, by dotted name."""
    root = (root or PACKAGE_DIR).resolve()
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names.append(".".join((PACKAGE, *parts[:-1])) if parts[-1] == "__init__" else ".".join((PACKAGE, *parts)))
    return names


def imports_of(module: str, root: Path | None = None) -> frozenset[str]:
    """The package modules ``module`` imports, anywhere in it (names imported from a module are left
    out: only what is itself a module)."""
    root = (root or PACKAGE_DIR).resolve()
    read = _read(module, root)
    return frozenset(m for m in read[1] if module_path(m, root) is not None) if read else frozenset()


def closure(modules: Iterable[str], root: Path | None = None) -> dict[str, str]:
    """Every package module reached from ``modules`` through imports, with its code digest."""
    root = (root or PACKAGE_DIR).resolve()
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        read = _read(module, root)
        if read is None:
            continue  # a name imported from a module, not a module
        seen[module], imports = read
        todo.extend(imports - seen.keys())
    return dict(sorted(seen.items()))


def code_digest(modules: Iterable[str], root: Path | None = None) -> str:
    """One digest of the code reached from ``modules``."""
    payload = "\n".join(f"{name} {digest}" for name, digest in closure(modules, root).items())
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def forget() -> None:
    """Read the source files again (after an edit in the same process that kept a file's time and size)."""
    _parsed.cache_clear()
