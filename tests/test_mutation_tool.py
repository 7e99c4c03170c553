"""`make mutate`'s own logic (tests/mutation/run.py): which mutants count for which area, the
equivalent list's format, and that every area still names functions that exist."""
import ast
import fnmatch
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "tests" / "mutation" / "run.py")
mutate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutate)


def _defined(module: Path) -> set:
    """``f`` and ``Class.method`` defined at the top of ``module``."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{n.name}" for n in node.body
                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


@pytest.mark.parametrize("area", sorted(mutate.AREAS))
def test_every_area_names_functions_and_tests_that_exist(area):
    module, functions, tests = mutate.AREAS[area]
    defined = _defined(ROOT / module)
    for f in functions:
        if f == "*":
            continue
        if f.endswith(".*"):
            assert any(d.startswith(f[:-1]) for d in defined), f"{area}: no class {f[:-2]} in {module}"
        else:
            assert f in defined, f"{area}: {f} is not defined in {module} (renamed? update AREAS)"
    assert tests and all((ROOT / t).is_file() for t in tests), tests


def test_globs_take_exactly_their_areas_mutants():
    ema = mutate.mutant_globs("EMA")
    hit = "raygan.platform.engine.x\u01c1EMA\u01c1update__mutmut_3"
    other = "raygan.platform.engine.x\u01c1GANEngine\u01c1train_step__mutmut_1"
    assert any(fnmatch.fnmatchcase(hit, g) for g in ema)
    assert not any(fnmatch.fnmatchcase(other, g) for g in ema)
    losses = mutate.mutant_globs("losses")
    assert any(fnmatch.fnmatchcase("raygan.platform.core.losses.x_tv_loss__mutmut_1", g) for g in losses)
    assert any(fnmatch.fnmatchcase("raygan.platform.core.losses.x\u01c1PerceptualLoss\u01c1forward__mutmut_2", g)
               for g in losses)
    assert not any(fnmatch.fnmatchcase("raygan.platform.core.metrics.x_psnr__mutmut_1", g) for g in losses)
    sched = mutate.mutant_globs("schedule")
    assert any(fnmatch.fnmatchcase("raygan.datasets.pipeline.x_epoch_samples__mutmut_9", g) for g in sched)
    assert not any(fnmatch.fnmatchcase("raygan.datasets.pipeline.x_resolve_data__mutmut_9", g) for g in sched)
    plan = mutate.mutant_globs("run plan")
    assert any(fnmatch.fnmatchcase("raygan.platform.plan.x_resolve_schedule__mutmut_9", g) for g in plan)


def test_score_counts_timeouts_as_caught_and_untested_as_survived():
    name = "raygan.platform.core.tiling.x_tile_starts__mutmut_{}"
    status = {name.format(1): "killed", name.format(2): "timeout", name.format(3): "survived",
              name.format(4): "no tests", name.format(5): "survived",
              "raygan.platform.core.metrics.x_psnr__mutmut_1": "survived"}
    [row] = mutate.summarize(status, {name.format(5): "same result"}, ["tiling and blending"])
    assert (row["mutants"], row["equivalent"], row["killed"], row["timeout"]) == (5, 1, 1, 1)
    assert row["survived"] == [name.format(3), name.format(4)]
    assert row["score"] == pytest.approx(2 / 4)


def test_an_equivalent_mutant_needs_its_reason(tmp_path):
    good = tmp_path / "eq.txt"
    good.write_text("# header\nraygan.platform.core.tiling.x_f__mutmut_1  # the sum is symmetric\n\n")
    assert mutate.read_equivalent(good) == {"raygan.platform.core.tiling.x_f__mutmut_1": "the sum is symmetric"}
    bad = tmp_path / "bad.txt"
    bad.write_text("raygan.platform.core.tiling.x_f__mutmut_1\n")
    with pytest.raises(SystemExit, match="has no reason"):
        mutate.read_equivalent(bad)
    assert mutate.read_equivalent(mutate.EQUIVALENT) is not None  # the shipped list parses
