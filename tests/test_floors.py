"""The floor plan (docs/architecture.md): lower floors never import higher ones, and no
raygan module imports itself back through others. Every import counts, including the
ones inside function bodies."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"platform": "raygan.platform", "models": "raygan.models", "datasets": "raygan.datasets",
           "deploy": "raygan.deploy"}

#: floor -> the modules on it (a trailing ".*": every module of that package). The same
#: table is drawn in docs/architecture.md; a new module must be placed here.
FLOORS = {
    0: ["raygan", "raygan.platform.core", "raygan.platform.core.errors", "raygan.platform.core.registry",
        "raygan.platform.core.colour", "raygan.platform.core.counters"],
    1: ["raygan.platform.core.config", "raygan.platform.core.storage", "raygan.platform.core.perceptual",
        "raygan.platform.core.losses", "raygan.platform.core.metrics", "raygan.platform.core.tiling",
        "raygan.platform.core.submitted_code"],
    2: ["raygan.datasets.*"],
    3: ["raygan.models.*"],
    4: ["raygan.platform.plan", "raygan.platform.engine", "raygan.platform.checkpoint", "raygan.platform.tracking",
        "raygan.platform.restorer", "raygan.platform.mlflow_model", "raygan.platform.evaluation",
        "raygan.platform.distributed", "raygan.platform.trainer", "raygan.platform.cli",
        "raygan.platform.sweep", "raygan.platform.sweep.*", "raygan.platform.budget",
        "raygan.platform.gpu_check"],
    5: ["raygan.deploy.*"],
    6: ["raygan.cli", "raygan.__main__"],
}


def modules() -> dict:
    """module name -> source file, for every raygan module in the tree."""
    out = {"raygan": ROOT / "__init__.py"}
    for path in sorted(ROOT.glob("*.py")):  # modules of the root package: the command
        if path.stem != "__init__":
            out[f"raygan.{path.stem}"] = path
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):  # subpackages too (platform/sweep/)
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":  # a package: its __init__.py
                parts = parts[:-1]
            out[".".join((package,) + parts)] = path
    return out


def floor_of(module: str) -> int:
    for floor, names in FLOORS.items():
        for name in names:
            if module == name or (name.endswith(".*") and (module + ".").startswith(name[:-1])):
                return floor
    raise AssertionError(f"{module} is on no floor: place it in FLOORS (tests/test_floors.py) "
                         f"and in docs/architecture.md")


def imports_of(path: Path, known: set) -> set:
    """The raygan modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from raygan.platform.core import storage" imports raygan.platform.core.storage
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("raygan"):
                found.add(name)
    return found


def graph() -> dict:
    mods = modules()
    known = set(mods)
    # namespace portions and packages count as their __init__ only where one exists
    return {m: imports_of(p, known) - {m, "raygan.platform", "raygan.datasets"} for m, p in mods.items()}


def test_every_module_is_on_a_floor():
    for module in modules():
        floor_of(module)


def test_no_import_from_a_lower_floor_to_a_higher_one():
    wrong = [f"{m} (floor {floor_of(m)}) imports {dep} (floor {floor_of(dep)})"
             for m, deps in graph().items() for dep in sorted(deps) if floor_of(dep) > floor_of(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    g = graph()
    state: dict = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        if state.get(m) == "open":
            cycle = path[path.index(m):] + [m]
            pytest.fail("import circle: " + " -> ".join(cycle))
        state[m] = "open"
        for dep in sorted(g.get(m, ())):
            visit(dep, path + [m])
        state[m] = "done"

    for m in sorted(g):
        visit(m, [])


def test_the_check_sees_function_level_imports(tmp_path):
    """The checker itself: an upward import hidden in a function body is found."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from raygan.platform.trainer import run_training\n")
    assert imports_of(src, set(modules())) == {"raygan.platform.trainer"}


def test_the_architecture_page_lists_every_floor():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for names in FLOORS.values():
        for name in names:
            short = name.replace("raygan.platform.core.", "core.").replace("raygan.", "").replace(".*", "")
            assert short in page, name


def test_the_folders_show_the_floors():
    """platform/core/ holds the ground (floors 0-1), the rest of platform/ the roof (floor 4):
    a module's folder says which floor it is on."""
    for module in modules():
        if module.startswith("raygan.platform.core"):
            assert floor_of(module) <= 1, module
        elif module.startswith("raygan.platform."):
            assert floor_of(module) == 4, module
