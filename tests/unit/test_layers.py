"""The import drawing of the project, checked: three layers and no circle of files.

- the kernel (``serve/kernel/``) imports nothing of the project outside itself;
- the graph's nodes (``deployments/``) import the kernel and each other, never the HTTP
  shell or the CLI;
- the HTTP shell (``serve/`` outside the kernel) imports no node: the application
  builder (``serve/app.py``) is the one place that binds nodes, and the tools that run
  nodes on their own (the CLI's ``gpu-check`` and the benchmarks) are allowed to;
- no module reaches itself by following imports.

Every import counts, at module level or inside a function, under ``TYPE_CHECKING`` too:
a lazy import is an arrow all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

from serve.kernel.config import PROJECT_ROOT

#: Shell modules that may import nodes: the builder that binds them, and the tools
#: that run one on its own.
BINDS_NODES = ("serve.app", "serve.gpu_check", "serve.gpu_check_run", "serve.bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    paths = [*(PROJECT_ROOT / "serve").rglob("*.py"), *(PROJECT_ROOT / "deployments").rglob("*.py")]
    return {_module_name(path): path for path in paths}


def _imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a package's ``from p import m`` names ``p.m``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and candidate not in ("serve", "deployments"):
                found.add(candidate)
                break
    return found


def import_graph() -> dict[str, set[str]]:
    """Every project module and the project modules it imports."""
    known = _project_modules()
    return {name: _imported(name, path, known) for name, path in known.items()}


def _layer(module: str) -> str:
    if module.startswith("serve.kernel"):
        return "kernel"
    if module.startswith("deployments"):
        return "nodes"
    return "shell"


def test_the_drawing_is_read_from_the_source():
    graph = import_graph()
    assert "serve.kernel.dispatcher" in graph["deployments.extraction.deployment"]
    assert "deployments.router.in_process" in graph["serve.app"]
    assert len(graph) > 80


def test_the_kernel_imports_nothing_above_it():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() if _layer(module) == "kernel"
                    for target in targets if _layer(target) != "kernel")
    assert upward == []


def test_no_node_imports_the_http_shell_or_the_cli():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() if _layer(module) == "nodes"
                    for target in targets if _layer(target) == "shell")
    assert upward == []


def test_the_http_shell_imports_no_node():
    binders = tuple(BINDS_NODES)
    downward = sorted(f"{module} -> {target}" for module, targets in import_graph().items()
                      if _layer(module) == "shell" and not (module in binders or module.startswith(binders[-1] + "."))
                      for target in targets if _layer(target) == "nodes")
    assert downward == []


def test_no_circle_of_files():
    graph = import_graph()
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
