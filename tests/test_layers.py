"""The import-layer contract: every module imports only from its own layer or lower ones.

The package is read with :mod:`ast` (nothing is imported). Module-level imports count, as
do the bodies of module-level ``if``/``try`` blocks, except ``if TYPE_CHECKING:`` (those are
annotations only).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import invertible as inv

ROOT = Path(__file__).resolve().parents[1] / "src" / "invertible"

#: Rank of each layer: a module may import modules of a lower rank, and of its own rank
#: only inside its own package. The first match (longest prefix) decides.
LAYERS: dict[str, int] = {
    "invertible.version": 0,
    "invertible.files": 0,
    "invertible.tensors": 0,
    "invertible.core": 0,
    "invertible.distributions": 0,
    "invertible.nn": 0,
    "invertible.transforms": 0,
    "invertible.presets": 0,
    "invertible.data": 1,
    "invertible.catalog": 2,
    "invertible.checkpoint": 2,
    "invertible.evaluation": 3,
    "invertible.training": 4,
    "invertible.distillation": 5,
    "invertible.jobs": 6,
    "invertible.reports": 7,
    "invertible.cli": 8,
    "invertible.__main__": 9,
    # deprecated module paths, then the package root: they re-export from the layers below
    "invertible.distill": 9,
    "invertible.distributed": 9,
    "invertible.models": 9,
    "invertible": 10,
}
#: The primitives: they may import each other freely (their order is their own business).
PRIMITIVES = ("core", "distributions", "nn", "transforms", "presets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                out += _statements(node.body) + _statements(node.orelse)
        elif isinstance(node, ast.Try):
            out += _statements(node.body) + _statements(node.orelse)
            out += _statements(node.finalbody)
            for handler in node.handlers:
                out += _statements(handler.body)
        else:
            out.append(node)
    return out


def imports_of(name: str) -> set[str]:
    """The modules of :mod:`invertible` that module ``name`` imports at import time."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            # ``from package import submodule, ...`` depends on the submodules only
            targets = subs if all(t in MODULES for t in subs) else [node.module, *subs]
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    found.discard(name)
    return found


def layer(name: str) -> tuple[str, int]:
    """The layer (its prefix) and rank of module ``name``."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"module {name} is in no layer; add it to LAYERS")


GRAPH = {name: imports_of(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports_only_lower_layers(name: str) -> None:
    own, rank = layer(name)
    for target in sorted(GRAPH[name]):
        other, other_rank = layer(target)
        primitive = rank == other_rank == 0 and own.split(".")[-1] in PRIMITIVES
        assert other_rank < rank or other == own or primitive, (
            f"{name} (layer {own}, rank {rank}) imports {target} (layer {other}, rank {other_rank})"
        )


def test_utilities_and_data_stay_leaves() -> None:
    for name in ("invertible.files", "invertible.version", "invertible.tensors"):
        assert not GRAPH[name], f"{name} imports {GRAPH[name]}"
    for name in MODULES:
        if layer(name)[0] == "invertible.data":
            outside = {t for t in GRAPH[name] if not t.startswith("invertible.data")}
            assert outside <= {"invertible.files"}, f"{name} imports {outside}"


def test_the_loop_does_not_know_ddp() -> None:
    for name in ("invertible.training.loop", "invertible.training.strategy"):
        assert "invertible.training.ddp" not in GRAPH[name]


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*stack, target])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("invertible.distill", "make_student"),
        ("invertible.distributed", "shard_bounds"),
        ("invertible.models", "build_model"),
    ],
)
def test_deprecated_module_paths_still_work(old: str, name: str) -> None:
    if old != "invertible.distill":  # warns on import: import it afresh
        sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning):
        module = importlib.import_module(old)
        assert getattr(module, name) is not None


def test_the_package_names_stay_functions() -> None:
    with pytest.warns(DeprecationWarning):
        from invertible.distill import frozen  # noqa: F401  (the deprecated path)

    assert callable(inv.distill) and callable(inv.evaluate) and callable(inv.fit)
    assert inv.train is inv.fit and isinstance(inv.__version__, str)
