"""docs/architecture.md holds: every module imports only from its own floor or the floors its row names, at the
top of a file or inside a function alike, no two modules import each other, and its example method runs."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# floor -> (its packages, the floors it may import from besides its own), bottom to top.
FLOORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "kit": (("benchmark.kit",), ()),  # what a method is built from: data, backbone, training loop, contract
    "methods": (("methods",), ("kit",)),
    "harness": (("benchmark.harness",), ("kit", "methods")),  # configs of cells, the grid, executors, perf
    "reports": (("benchmark.reports",), ("kit",)),  # tables and figures, from the records alone: no registry
    "cli": (("benchmark.cli", "benchmark.commands", "benchmark.__main__"), ("kit", "methods", "harness", "reports")),
}
PACKAGE_ROOT = "benchmark"  # its __init__ holds the version only: any floor may read it


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("benchmark", "methods"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def floor_of(module: str) -> str:
    for floor, (packages, _) in FLOORS.items():
        if any(module == p or module.startswith(p + ".") for p in packages):
            return floor
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def imports_of(module: str, path: Path | None = None) -> set[str]:
    """The suite's modules `module` (read from `path`, its own file by default) imports anywhere in its file,
    relative imports resolved."""
    path = path or MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES and name != module}


def wrong_imports(module: str, targets: set[str]) -> list[str]:
    floor = floor_of(module)
    allowed = {floor, *FLOORS[floor][1]}
    return [f"{module} ({floor}) imports {target} ({floor_of(target)})" for target in sorted(targets)
            if target != PACKAGE_ROOT and floor_of(target) not in allowed]


def test_every_module_imports_only_from_its_floor_and_the_floors_below():
    wrong = [line for module in MODULES if module != PACKAGE_ROOT for line in wrong_imports(module, imports_of(module))]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {module: imports_of(module) - {PACKAGE_ROOT} for module in MODULES}
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}  # a parent package
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state and (cycle := visit(target, path + [module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_an_import_from_a_higher_floor_is_reported(tmp_path):
    """The check can fail: a kit module importing the harness inside a function, or a report importing the
    registry, is named."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from benchmark.harness.runner import Cell\n    import methods\n")
    assert wrong_imports("benchmark.kit.fake", imports_of("benchmark.kit.fake", fake)) == [
        "benchmark.kit.fake (kit) imports benchmark.harness.runner (harness)",
        "benchmark.kit.fake (kit) imports methods (methods)"]
    assert wrong_imports("benchmark.reports.fake", imports_of("benchmark.reports.fake", fake)) == [
        "benchmark.reports.fake (reports) imports benchmark.harness.runner (harness)",
        "benchmark.reports.fake (reports) imports methods (methods)"]


def _blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page, flags=re.S)


def test_the_example_method_of_the_architecture_page_registers_and_runs(tmp_path, monkeypatch, smoke_args, capsys):
    """docs/architecture.md's method, one file and one YAML: listed, run on the smoke profile, in Table II."""
    import methods.registry
    from benchmark.cli import main

    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    (code,), (yaml_text,) = _blocks(page, "python"), _blocks(page, "yaml")
    monkeypatch.setattr(methods.registry, "_REGISTRY", dict(methods.registry._REGISTRY))  # gone after the test
    module = tmp_path / "entmin.py"
    module.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("methods.entmin", module)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    configs = tmp_path / "configs" / "methods"
    configs.mkdir(parents=True)
    (configs / "entmin.yaml").write_text(yaml_text, encoding="utf-8")
    monkeypatch.setenv("MICS_BENCH_CONFIGS", str(tmp_path / "configs"))

    assert main(["list"]) == 0 and "entmin" in capsys.readouterr().out
    out = tmp_path / "results"
    # one worker runs the cells in this process, where the module is registered (a file in methods/ would
    # be imported by every worker)
    assert main(["run", "--method", "entmin,supervised", "--labels", "50", *smoke_args, "--workers", "1",
                 "--out", str(out), "--reports", str(tmp_path / "reports")]) == 0
    record = json.loads((out / "runs/synthetic/entmin/single/labels50/seed0/result.json").read_text())
    assert record["config"]["method"]["weight"] == 0.1 and (record["label"], record["group"]) == ("EntMin", "table2")
    table = (tmp_path / "reports" / "table2.md").read_text()
    assert "| EntMin " in table and table.index("EntMin") < table.index("bounds (not ranked)")
