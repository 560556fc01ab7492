"""The package's shape: imports run down the chain, the CLI sits on top, folder paths are import paths.

Every import counts, function-level ones included: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolchain" / "tsptq"
BENCHMARKS = ROOT / "benchmarks"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "toolchain").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules=MODULES) -> set[str]:
    """The tsptq modules a file imports anywhere in it (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tsptq")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tsptq":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {m for m in imported_modules(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_function_level_imports_and_finds_a_cycle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from tsptq.pkg import b\n")
    b.write_text("import tsptq.pkg.a\n")
    mods = {"tsptq.pkg.a": a, "tsptq.pkg.b": b}
    graph = {n: {m for m in imported_modules(p, mods) if m in mods and m != n} for n, p in mods.items()}
    assert graph == {"tsptq.pkg.a": {"tsptq.pkg.b"}, "tsptq.pkg.b": {"tsptq.pkg.a"}}
    assert cycles(graph) == [["tsptq.pkg.a", "tsptq.pkg.b"]]


def test_no_import_cycle_among_the_modules():
    assert len(MODULES) > 40
    assert cycles(import_graph()) == []


def test_nothing_below_the_cli_imports_it():
    below = {name: path for name, path in MODULES.items() if not name.startswith("tsptq.cli")}
    below.update({f"benchmarks.{p.stem}": p for p in BENCHMARKS.glob("*.py")})
    offenders = {name: sorted(m for m in imported_modules(path) if m.startswith("tsptq.cli"))
                 for name, path in below.items()}
    assert {k: v for k, v in offenders.items() if v} == {}


NAMESPACE_NAMES = {"args", "ns", "namespace", "argv_ns"}


def _reads_of(fn) -> set[str]:
    """Names a function reads attributes from: ``x.attr``, ``getattr(x, ...)``, ``vars(x)``."""
    reads = {n.value.id for n in ast.walk(fn) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
        if call.func.id in ("getattr", "vars", "hasattr") and call.args and isinstance(call.args[0], ast.Name):
            reads.add(call.args[0].id)
    return reads


def _namespace_readers(tree: ast.AST, runnable: bool = False) -> list[str]:
    """Functions that read a parameter named like an argparse namespace (a ``python -m`` module's own ``main``,
    which parses its argv, excepted)."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or (runnable and fn.name == "main"):
            continue
        params = {a.arg for a in fn.args.args + fn.args.kwonlyargs} & NAMESPACE_NAMES
        if params & _reads_of(fn):
            found.append(fn.name)
    return found


def _runnable(tree: ast.AST) -> bool:
    """Whether a module has an ``if __name__ == "__main__":`` block (``python -m tsptq.x.y``)."""
    return any(isinstance(n, ast.If) and isinstance(n.test, ast.Compare) and isinstance(n.test.left, ast.Name)
               and n.test.left.id == "__name__" for n in ast.walk(tree))


def test_below_the_cli_no_function_takes_an_argparse_namespace():
    offenders = {}
    for name, path in MODULES.items():
        if name.startswith("tsptq.cli"):
            continue
        tree = ast.parse(path.read_text())
        bad = _namespace_readers(tree, runnable=_runnable(tree))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_the_namespace_check_can_fail():
    tree = ast.parse("def deploy(args):\n    return args.target\n\ndef main(argv=None):\n    args = 1\n"
                     "def load(ns):\n    return getattr(ns, 'port', None)\n\ndef dump(args):\n    return vars(args)\n"
                     "def main(args):\n    return args.x\n")
    assert _namespace_readers(tree) == ["deploy", "load", "dump", "main"]  # a library `main(args)` too
    assert _namespace_readers(tree, runnable=True) == ["deploy", "load", "dump"]


def test_no_relative_imports():
    """The walker follows absolute imports only: relative ones would hide edges (and folder path = import path)."""
    relative = sorted(name for name, path in MODULES.items()
                      if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(path.read_text()))))
    assert relative == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_importable_by_its_folder_path(name):
    import importlib

    module = importlib.import_module(name)
    assert Path(module.__file__).resolve() == MODULES[name].resolve()


# The chain, bottom layer first: a package imports only the packages before it (and the shared modules).
SHARED = {"tsptq", "tsptq.errors", "tsptq.paths", "tsptq.atomic"}
LAYERS = ["data", "model", "quant", "intmodel", "tflite", "runtime", "evaluation", "npu", "deploy", "cli"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_in_a_layer_or_shared():
    assert {m for m in MODULES if _layer(m) is None} == SHARED


def test_imports_run_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, deps in import_graph().items() for b in deps
                    if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a))
    assert upward == []
    shared_deps = {a: sorted(d for d in deps if d not in SHARED) for a, deps in import_graph().items() if a in SHARED}
    assert {a: d for a, d in shared_deps.items() if d} == {}
