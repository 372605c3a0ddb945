"""The package's floor plan holds: no import cycle, no long function, no long public signature.

The goals of the pipeline issue, kept by the test suite so that a fix made later cannot undo them:
module-level imports between stereodrr's modules form no cycle (imports inside functions and under
``TYPE_CHECKING`` are how a lazy edge is written, so they are not edges); no function outside the
Numba/Triton kernels has more than 60 code lines (docstring, blank and comment lines not counted);
no public function of a public module takes more than 8 parameters (an options object instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stereodrr"
MAX_LINES = 60
MAX_PARAMS = 8


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
SOURCES = {name: path.read_text(encoding="utf-8").splitlines() for name, path in MODULES.items()}
TREES = {name: ast.parse("\n".join(lines)) for name, lines in SOURCES.items()}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, tree in TREES.items():
        edges = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for stmt in node.body if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    edges |= {m for m in _imported(module, stmt) if m in MODULES and m != module}
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _is_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in fn.decorator_list)


def _functions():
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_kernel(node):
                yield module, node


def _code_lines(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    skip = set()
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        skip = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(1 for number in range(fn.lineno, (fn.end_lineno or fn.lineno) + 1)
               if number not in skip and lines[number - 1].strip() and not lines[number - 1].strip().startswith("#"))


def test_the_checks_see_what_they_look_for():
    # The helpers find a known cycle, a long function and a long signature in made-up code.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert len(MODULES) > 50 and "stereodrr.render.drr" in MODULES
    source = 'def f(a):\n    """Doc.\n\n    More.\n    """\n' + "    # why\n\n    x = 1\n" * 60
    fn = ast.parse(source).body[0]
    assert _code_lines(source.splitlines(), fn) == 61  # the def line and the 60 statements


def test_no_import_cycle():
    assert _cycles(_import_graph()) == []


def test_no_function_outside_the_kernels_is_longer_than_60_code_lines():
    long = [f"{module}.{fn.name} ({n} lines)" for module, fn in _functions()
            if (n := _code_lines(SOURCES[module], fn)) > MAX_LINES]
    assert not long, "split these functions: " + ", ".join(long)


def test_no_public_function_takes_more_than_8_parameters():
    # Private modules (the kernels' autograd glue, whose backward signature torch dictates) and
    # private functions are not API.
    wide = []
    for module, fn in _functions():
        if fn.name.startswith("_") or any(part.startswith("_") for part in module.split(".")):
            continue
        args = fn.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        if len(names) + bool(args.vararg) > MAX_PARAMS:
            wide.append(f"{module}.{fn.name} ({len(names)})")
    assert not wide, "give these an options object: " + ", ".join(wide)
