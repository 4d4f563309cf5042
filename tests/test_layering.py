"""The package's floors: every import (top level, inside functions and under TYPE_CHECKING)
goes to the importer's own package or to one below it, so no import circle can form."""

from __future__ import annotations

import ast
import pathlib

import toolkit

FLOORS = [
    "__init__", "registry", "protocol", "config", "kernels", "kv", "attention", "layers",
    "quant", "lora", "models", "tokenizer", "guided", "runner", "speculative",
    "scheduler", "engine", "parallel", "api", "resolve", "compose", "waits", "determinism", "runtime", "quantize", "bench",
    "cli", "__main__",
]
"""Bottom to top: ``toolkit/<floor>`` (a package or a top-level module)."""

ROOT = pathlib.Path(toolkit.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = ("toolkit", *path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The toolkit modules ``module`` imports (an imported name counts as its module)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                                ([node.module] if node.module else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                found.add(name)
    return found


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_is_on_a_known_floor():
    unknown = {_floor(m) for m in _modules()} - set(FLOORS)
    assert not unknown, f"add {sorted(unknown)} to FLOORS"


def test_imports_go_down_the_floors_only():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        floor = FLOORS.index(_floor(module))
        for target in _imports(module, path, modules):
            if FLOORS.index(_floor(target)) > floor:
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle_between_modules():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, str] = {}

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*trail[trail.index(target):], target] if target in trail else [target]
            if target not in state:
                found = cycle_from(target, [*trail, target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = cycle_from(module, [module])
            assert cycle is None, " -> ".join(cycle)
