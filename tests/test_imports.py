"""Imports run one way: the core never reaches the Hub or an adapter, and no module imports one that imports it back.

The graph is read from the source (AST), so an import deferred into a function counts like any other.
"""

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# Folders as they install (pyproject's package-dir): the card's top-level folders live under mimsdk.
PACKAGES = {
    "mimsdk": ROOT / "mimsdk",
    "mimsdk.adapters": ROOT / "adapters",
    "mimsdk.hub": ROOT / "hub",
    "mimsdk.recipes": ROOT / "recipes",
}
# The layer above the Hub and the adapters: it may use both (adapters only through the registry, by name).
APPLICATION = {"mimsdk", "mimsdk.cli", "mimsdk.trainer", "mimsdk.pretraining", "mimsdk.sharding"}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the modules (of mimsdk, or outside it) it imports anywhere in its file."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        # `import mimsdk.model` names mimsdk.model, not the package that holds it
        graph[name] = {e if e in modules or not e.startswith("mimsdk") else _owner(e, modules) for e in edges} - {name}
    return graph


def _owner(name: str, modules: dict[str, Path]) -> str:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def layer(module: str) -> str:
    if module in APPLICATION:
        return "application"
    for outer in ("mimsdk.hub", "mimsdk.adapters"):
        if module == outer or module.startswith(outer + "."):
            return outer
    return "core"


def test_no_module_imports_one_that_imports_it_back():
    graph = {m: {e for e in edges if e in module_files()} for m, edges in import_graph().items()}
    # Tarjan-free check: a module is on a cycle if it can reach itself.
    cycles = []
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                cycles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"


def test_the_core_never_imports_the_hub_or_an_adapter():
    wrong = []
    for module, edges in import_graph().items():
        for edge in edges:
            if layer(module) == "core" and (layer(edge) != "core" or edge.split(".")[0] == "huggingface_hub"):
                wrong.append(f"{module} -> {edge}")
            if layer(module) == "mimsdk.hub" and layer(edge) in ("mimsdk.adapters", "application"):
                wrong.append(f"{module} -> {edge}")
            if layer(module) == "mimsdk.adapters" and layer(edge) in ("mimsdk.hub", "application"):
                wrong.append(f"{module} -> {edge}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_adapters_import_no_other_adapter_and_are_reached_through_the_registry():
    graph = import_graph()
    for module, edges in graph.items():
        if layer(module) == "mimsdk.adapters" and module != "mimsdk.adapters":
            own = ".".join(module.split(".")[:3])
            others = [e for e in edges if layer(e) == "mimsdk.adapters" and not e.startswith(own)]
            assert not others, f"{module} imports another adapter: {others}"
        if layer(module) in ("application", "core"):
            assert not [e for e in edges if e.startswith("mimsdk.adapters")], f"{module} imports an adapter module"


def test_every_package_folder_installs():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {m for m, p in module_files().items() if p.name == "__init__.py"}
    assert folders <= listed | {"mimsdk.recipes"}, f"not in pyproject's packages: {sorted(folders - listed)}"


def test_the_model_imports_without_huggingface_hub():
    code = "import sys; sys.modules['huggingface_hub'] = None; import mimsdk, mimsdk.model; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
