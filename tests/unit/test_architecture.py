"""The import direction of DESIGN.md, checked on the source: no cycles, no private
modules of other packages, prefect only in the CLI, bentoml only in serve/, train/
free of models, and dvc.yaml code deps that cover every module a stage runs.

Every ``import`` counts, at module level and inside functions (a lazy import hides a
cycle from the interpreter, not from a reader); only ``if TYPE_CHECKING:`` blocks are
left out. The registry imports model classes by name (``models/names.py``); those
count as imports of the registry.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from recpipe.models.names import ENTRIES
from recpipe.pipeline import STAGES

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "recpipe"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes(child))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def _resolve(name: str) -> str | None:
    """The recpipe module ``name`` refers to (a module, or the package of a name in it)."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name ``tree`` imports (third-party names included)."""
    out: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".strip(".")
        out.add(base)
        out.update(f"{base}.{a.name}" for a in node.names)
    return out


@cache
def _names_of(module: str) -> frozenset[str]:
    path = _modules()[module]
    tree = ast.parse(path.read_text())
    return frozenset(imported_names(tree, module, path.name == "__init__.py"))


@cache
def graph() -> dict[str, frozenset[str]]:
    """``{module: recpipe modules it imports}``."""
    out = {}
    for module in _modules():
        deps = {d for n in _names_of(module) if n.startswith("recpipe") and (d := _resolve(n))}
        if module == "recpipe.models.registry":  # imports the classes ENTRIES names, by name
            deps |= {entry.partition(":")[0] for entry in ENTRIES.values()}
        out[module] = frozenset(deps - {module})
    return out


def _cycles(g: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports() -> None:
    assert "recpipe.models.registry" in graph()["recpipe.stages"]  # imported inside train()
    assert "recpipe.train.launch" in graph()["recpipe.stages"]


def test_no_import_cycles() -> None:
    assert _cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    g = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _cycles(g) == [["a", "b", "c"]]


def _package(module: str) -> str:
    return module.rpartition(".")[0] if module.count(".") > 1 else module


def test_no_private_module_of_another_package() -> None:
    bad = []
    for module, deps in graph().items():
        for dep in deps:
            private = any(part.startswith("_") for part in dep.split(".")[1:])
            if private and _package(dep) != _package(module):
                bad.append(f"{module} imports {dep}")
    assert bad == []


def _importers_of(prefix: str) -> set[str]:
    return {
        m
        for m in _modules()
        if any(n == prefix or n.startswith(prefix + ".") for n in _names_of(m))
    }


def test_prefect_only_in_the_cli() -> None:
    assert _importers_of("prefect") <= {"recpipe.cli"}


def test_bentoml_only_in_serve() -> None:
    assert {m for m in _importers_of("bentoml") if not m.startswith("recpipe.serve.")} == set()


def test_gates_never_import_serve() -> None:
    """The registry's pyfunc answers as the service without gates/ depending on serve/:
    the register stage hands it the serving code (recpipe.serve.pyfunc)."""
    bad = [
        f"{m} imports {d}"
        for m, deps in graph().items()
        if m.startswith("recpipe.gates")
        for d in deps
        if d.startswith("recpipe.serve")
    ]
    assert bad == []


def test_train_never_imports_models() -> None:
    bad = [
        f"{m} imports {d}"
        for m, deps in graph().items()
        if m.startswith("recpipe.train")
        for d in deps
        if d.startswith(("recpipe.models", "recpipe.baselines"))
    ]
    assert bad == []


def test_no_file_over_900_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > 900
    }
    assert long == {}


# ---------------------------------------------------------------- dvc.yaml code deps
def _stage_function_imports(name: str) -> set[str]:
    """The recpipe modules the stage function ``name`` of recpipe/stages.py imports,
    with those of the stages.py helpers it calls and stages.py's module-level imports."""
    tree = ast.parse((SRC / "stages.py").read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    module_level = ast.Module(
        body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[]
    )
    names = imported_names(module_level, "recpipe.stages", False)
    todo, seen = [STAGES[name].func.__name__], set()
    while todo:
        fn = functions[todo.pop()]
        if fn.name in seen:
            continue
        seen.add(fn.name)
        names |= imported_names(fn, "recpipe.stages", False)
        called = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        todo += [c for c in called if c in functions and c not in seen]
    return {d for n in names if n.startswith("recpipe") and (d := _resolve(n))}


def stage_modules(name: str) -> set[str]:
    """Every recpipe module the stage runs (the transitive closure of its imports)."""
    todo = list(_stage_function_imports(name))
    seen = {"recpipe.stages"}  # the file itself; its other functions' imports do not count
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph()[module]
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_code_deps_cover_what_the_stage_runs(name: str) -> None:
    code = STAGES[name].code
    missing = sorted(
        rel
        for module in stage_modules(name)
        if not any(
            (rel := _modules()[module].relative_to(REPO).as_posix()) == c
            or rel.startswith(c.rstrip("/") + "/")
            for c in code
        )
    )
    assert missing == [], f"stage {name}: add to its code deps (pipeline.STAGES, dvc.yaml)"


def test_stage_modules_follow_helpers_and_lazy_imports() -> None:
    train = stage_modules("train")
    assert {"recpipe.models.fitting", "recpipe.train.launch", "recpipe.models.mf"} <= train
