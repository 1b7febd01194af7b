"""The layout rules of docs/architecture.md, checked on the code itself.

Arrows point one way (commands -> search -> dashboard/export -> tracking/space -> trial ->
train -> pruning -> gates/models/data); only ``archsearch/search/`` imports Ray and only
``archsearch/tracking/`` imports MLflow; the core runs with both of them absent.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "archsearch"

#: each unit's layer: a module may import its own unit and units of a lower layer only
LAYERS: dict[str, int] = {
    "cost_gap": 0,
    "constraints": 0,
    "durations": 0,
    "hypervolume": 0,
    "errors": 0,
    "registry": 0,
    "progress": 0,
    "pareto": 0,
    "rungs": 0,
    "schedules": 0,
    "distillation": 0,
    "memory_format": 0,
    "user_code": 0,
    "store_file": 0,
    "run_rows": 0,
    "sqlite_runs": 0,
    "gate_cards": 0,
    "gates": 1,
    "models": 1,
    "onnx_graph": 1,
    "model_import": 1,
    "torchvision_models": 1,
    "data": 1,
    "pruning": 2,
    "config": 3,
    "penalty": 4,
    "train": 4,
    "latency": 4,
    "subnetwork": 4,
    "trial": 5,
    "space": 6,
    "tracking": 6,
    "export": 7,
    "dashboard": 7,
    "search": 8,
    "api": 9,
    "commands": 10,
    "cli": 11,
}

#: third-party packages that may be imported only inside one unit
CONFINED = {"ray": "search", "mlflow": "tracking", "sqlalchemy": "tracking"}

#: the core: what a trial needs, testable with Ray and MLflow absent
CORE = (
    "archsearch.config",
    "archsearch.gates",
    "archsearch.pruning.harden",
    "archsearch.pruning.flops",
    "archsearch.models",
    "archsearch.data",
    "archsearch.train",
    "archsearch.trial",
    "archsearch.subnetwork",
    "archsearch.export",
    "archsearch.pareto",
    "archsearch.space",
)


def _modules() -> dict[str, Path]:
    return {
        ".".join(("archsearch", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: Path, module: str) -> set[str]:
    """Every module an import statement names, at any depth (lazy imports count too)."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {i for i in _imports(path, name) if i in modules and i != name}
        for name, path in modules.items()
    }


def test_every_unit_has_a_layer() -> None:
    units = {_unit(m) for m in _modules()} - {""}
    assert units <= set(LAYERS), f"add {sorted(units - set(LAYERS))} to LAYERS and the docs"


def test_no_import_points_upward() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _unit(module) and LAYERS[_unit(target)] > LAYERS[_unit(module)]
    ]
    assert not upward, upward


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    # A package's __init__ re-exports its own modules: that edge is the package's face.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(f"{t}.")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail, node, target]))
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize(("package", "unit"), sorted(CONFINED.items()))
def test_third_party_stays_in_its_unit(package: str, unit: str) -> None:
    outside = [
        module
        for module, path in _modules().items()
        if _unit(module) != unit
        and any(i == package or i.startswith(f"{package}.") for i in _imports(path, module))
    ]
    assert not outside, f"{package} imported outside archsearch/{unit}/: {outside}"


def test_no_private_module_of_ray_or_mlflow() -> None:
    private = [
        f"{module}: {name}"
        for module, path in _modules().items()
        for name in _imports(path, module)
        if name.split(".")[0] in ("ray", "mlflow")
        and any(p.startswith("_") for p in name.split("."))
    ]
    assert not private, private


def test_core_runs_with_ray_and_mlflow_absent() -> None:
    """Import the core with Ray and MLflow made unimportable, then run a tiny trial."""
    script = textwrap.dedent(
        f"""
        import importlib, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("ray", "mlflow", "optuna"):
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        for name in {CORE!r}:
            importlib.import_module(name)
        from archsearch.config import TrialConfig
        from archsearch.trial import run_trial
        config = TrialConfig(model="mlp", model_options={{"hidden": [8]}}, data="synthetic",
                             epochs=1, finetune_epochs=0, batch_size=64)
        print(run_trial(config).metrics["flops_ratio"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "mlflow"))
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 < float(done.stdout.strip().splitlines()[-1]) <= 1


def test_read_only_commands_do_not_import_ray() -> None:
    script = (
        "import sys, archsearch.cli, archsearch.tracking, archsearch.dashboard;"
        "archsearch.cli.build_parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_help_and_the_pareto_parser_import_neither_torch_ray_nor_mlflow() -> None:
    """``archsearch --help`` answers at once: building every command's parser (and parsing a
    ``pareto`` command line) loads none of the heavy stacks; they load when a command runs.
    Nor do the modules ``pareto`` reads a local store with (``tests/test_pareto_fast.py``
    runs it on one)."""
    script = (
        "import sys, archsearch.cli, archsearch.sqlite_runs, archsearch.run_rows;"
        "archsearch.cli.build_parser().parse_args(['pareto', 'x', '--csv']);"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_modules_and_functions_stay_small() -> None:
    """Where a newcomer gets lost: modules over 400 lines, functions over 60."""
    large = []
    for module, path in _modules().items():
        source = path.read_text()
        if source.count("\n") > 400:
            large.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    large.append(f"{module}.{node.name}: {length} lines")
    assert not large, large
