"""`make mutate`: the mutation score of the modules whose bugs would silently corrupt results.

mutmut 3 plants one small change at a time (an operator, a constant, a comparison, a dropped
argument) into a module and runs the fast tests that call the changed function; a mutant that
no test notices *survived*: a bug the suite would let through.

raygan's import root is mapped from the checkout's folders (``raygan.platform`` is
``platform/``), while mutmut names a mutant after its file's path and activates it only when
the running module's ``__module__`` matches. The run therefore happens in a staging folder
(``.mutation/``, ignored by git) holding the package as ``raygan/`` and the tests beside it;
mutmut copies that into ``.mutation/mutants/`` and puts it first on ``sys.path``, so the
tests import the mutated ``raygan``, not the checkout's.

    python tests/mutation/run.py [--area metrics ...] [--max-children N]

It writes ``docs/mutation.md`` (killed / survived / timed out per module, the score over the
non-equivalent mutants, and each survivor's diff) and exits 1 when a module is under the
goal. Equivalent mutants (no test could tell them apart: the behaviour is identical) are
listed with their reason in ``tests/mutation/equivalent.txt``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / ".mutation"
GOAL = 0.90

#: area -> (module, the functions mutated ("*": all; "Class.*": a class's methods), the fast
#: tests that pin them: no Ray cluster, no servers, seconds per mutant)
AREAS = {
    "losses": ("platform/core/losses.py", ["*"], ["tests/test_losses.py", "tests/test_loss_weights.py"]),
    # the scores; not metric_conventions (its description) nor the evaluator's pictures
    "metrics": ("platform/core/metrics.py", ["_check", "quantize_uint8", "_prepare", "psnr", "_gaussian_1d",
                                             "_filter_valid", "ssim", "lpips_distance", "LPIPSMetric.*", "score"],
                ["tests/test_metrics.py", "tests/test_perceptual.py"]),
    # the one BT.601 conversion (metrics' Y, the Y-channel tasks, serving's luma split)
    "colour": ("platform/core/colour.py", ["*"], ["tests/test_colour.py", "tests/test_metrics.py",
                                                  "tests/test_degradations.py"]),
    "degradations": ("datasets/degradations.py", ["*"], ["tests/test_degradations.py", "tests/test_pipeline.py",
                                                           "tests/test_degradation_primitives.py"]),
    "tiling and blending": ("platform/core/tiling.py", ["*"], ["tests/test_tiling.py"]),
    "checkpoints": ("platform/checkpoint.py", ["*"], ["tests/test_checkpoint.py", "tests/test_engine.py",
                                                      "tests/test_tiling.py", "tests/test_s3_checkpoints.py"]),
    "shard split": ("datasets/pipeline.py", ["TrainStream._worker", "TrainStream.__iter__", "ValStream.__iter__"],
                    ["tests/test_pipeline.py"]),
    "schedule": ("datasets/pipeline.py", ["steps_per_epoch", "patches_per_image", "epoch_samples"],
                 ["tests/test_pipeline.py", "tests/test_paper_schedules.py"]),
    # the run plan's schedule: epochs -> iterations, resolved once on the driver
    "run plan": ("platform/plan.py", ["resolve_schedule", "iteration_schedule", "Schedule.*"],
                 ["tests/test_plan.py", "tests/test_pipeline.py", "tests/test_paper_schedules.py",
                  "tests/test_engine.py"]),
    "engine schedule": ("platform/engine.py", ["_make_scheduler",
                                               "GANEngine.g_schedule_counts_pretraining",
                                               "GANEngine.pretraining"],
                        ["tests/test_engine.py", "tests/test_paper_schedules.py"]),
    "EMA": ("platform/engine.py", ["EMA.*"], ["tests/test_ema.py"]),
    "storage retry clock": ("platform/core/storage.py", ["OutageClock.*", "retry_transient", "is_transient"],
                            ["tests/test_storage.py"]),
}
#: package folders and files staged as ``raygan/`` (what the wheel ships)
PACKAGE = ["__init__.py", "__main__.py", "cli.py", "platform", "models", "datasets", "deploy"]
#: beside ``raygan/``: what the tests read by path from the checkout's root
BESIDE = ["tests", "models", "platform", "datasets", "deploy", "jobs", "docs", "README.md"]
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
REPORT = ROOT / "docs" / "mutation.md"
#: the last run's wall time, kept beside its mutants for --report-only
RUN_MINUTES = STAGE / "run_minutes.txt"

# mutmut's exit codes per mutant (mutmut/__main__.py: status_by_exit_code)
KILLED, SURVIVED = "killed", "survived"


def read_equivalent(path: Path = EQUIVALENT) -> dict:
    """``{mutant name: reason}`` from lines ``<name>  # <reason>``; a line without a reason is
    an error (an equivalent mutant is a claim, and the claim needs its why)."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1) if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{n}: equivalent mutant {name.strip()} has no reason")
        out[name.strip()] = reason.strip()
    return out


def mutant_globs(area: str) -> list:
    """mutmut's names for ``area``'s mutants, as fnmatch patterns:
    ``raygan.platform.engine.xǁEMAǁupdate__mutmut_3``, ``raygan.platform.core.losses.x_tv_loss__mutmut_1``."""
    module, functions, _ = AREAS[area]
    prefix = "raygan." + module[:-3].replace("/", ".") + "."
    out = []
    for f in functions:
        if f == "*":
            out.append(prefix + "x*__mutmut_*")
        elif "." in f:
            cls, _, meth = f.partition(".")
            out.append(f"{prefix}x\u01c1{cls}\u01c1{meth}__mutmut_*")
        else:
            out.append(f"{prefix}x_{f}__mutmut_*")
    return out


def narrow(glob: str, only: str) -> str:
    """``glob`` cut to the functions whose name contains ``only``."""
    head = glob[:-len("__mutmut_*")]
    return f"{head}{only}*__mutmut_*" if head.endswith("*") else glob


def stage(areas: list) -> None:
    """``.mutation/``: the package as ``raygan/``, the tests and data beside it, and the
    mutmut configuration for ``areas``."""
    modules = sorted({AREAS[a][0] for a in areas})
    if STAGE.exists():
        shutil.rmtree(STAGE)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    pkg = STAGE / "raygan"
    pkg.mkdir(parents=True)
    for name in PACKAGE:
        src = ROOT / name
        (shutil.copytree(src, pkg / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, pkg / name))
    tests = sorted({t for a in areas for t in AREAS[a][2]})
    toml = ["[tool.mutmut]",
            'source_paths = ["raygan"]',
            "only_mutate = [%s]" % ", ".join(json.dumps(f"raygan/{m}") for m in modules),
            "also_copy = [%s]" % ", ".join(json.dumps(b) for b in BESIDE),
            "pytest_add_cli_args_test_selection = [%s]" % ", ".join(json.dumps(t) for t in tests),
            # --tb=no: a caught mutant needs no traceback (formatting tensors costs seconds)
            'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x", "-m", "not slow", "--tb=no"]',
            # a mutant that makes a loop never end is stopped at 3x its tests' time (+5 s)
            "timeout_multiplier = 3.0",
            "timeout_constant = 5.0",
            # logging and error-message text is not behaviour a mutation score should chase
            r'do_not_mutate_patterns = ["^\\s*(log|logger)\\.", "raise \\w+Error\\(f?\"", "^\\s*print\\("]',
            "",
            "[tool.pytest.ini_options]",
            "timeout = 300",
            'filterwarnings = ["ignore::DeprecationWarning"]',
            'markers = ["slow: starts a Ray cluster or a server subprocess", "shared_data: needs ../shared/data"]']
    (STAGE / "pyproject.toml").write_text("\n".join(toml) + "\n")
    for name in BESIDE:  # copied into mutants/ by mutmut (also_copy), read there by path
        src = ROOT / name
        dst = STAGE / name
        (shutil.copytree(src, dst, ignore=ignore) if src.is_dir() else shutil.copy2(src, dst))
    copy_tests(STAGE / "tests")


def copy_tests(dst: Path) -> None:
    """The checkout's tests into ``dst``, with the mutation run's Hypothesis profile."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT / "tests", dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # a failing property test shrinks its example for many seconds: a caught mutant would read
    # as a timeout. Shrinking is for people; here the first failure is enough.
    with open(dst / "conftest.py", "a") as f:
        f.write("\n\nfrom hypothesis import Phase as _P, settings as _s\n"
                "_s.register_profile('mutation', phases=[_P.explicit, _P.reuse, _P.generate], deadline=None)\n"
                "_s.load_profile('mutation')\n")


def set_stage(path: Path) -> None:
    """Stage in ``path``; a folder other than ``.mutation/`` keeps its summary to itself."""
    global STAGE, REPORT, RUN_MINUTES
    STAGE = path.resolve()
    RUN_MINUTES = STAGE / "run_minutes.txt"
    if STAGE != (ROOT / ".mutation").resolve():
        REPORT = STAGE / "summary.md"


def refresh(globs: list) -> None:
    """Reuse the last staging: the checkout's current tests go in, and the selected mutants'
    results are forgotten so they run again (mutmut finds the new tests by itself)."""
    copy_tests(STAGE / "tests")
    copy_tests(STAGE / "mutants" / "tests")
    for meta in (STAGE / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for k in codes:
            if any(fnmatch.fnmatchcase(k, g) for g in globs):
                codes[k] = None
        meta.write_text(json.dumps(data, indent=4))


def mutmut(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # one torch thread: mutmut forks a child per mutant from a parent that imported torch, and
    # an OpenMP pool does not survive a fork (the child spins until its CPU limit)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    mutmut_bin = Path(sys.executable).parent / "mutmut"
    if not mutmut_bin.exists():
        raise SystemExit(f"mutmut is not installed in {mutmut_bin.parent}: run `make mutate`, or "
                         f"{sys.executable} -m pip install -c constraints.txt mutmut")
    return subprocess.run([str(mutmut_bin), *args], cwd=STAGE, env=env, text=True,
                          capture_output=True, check=check)


def results() -> dict:
    """``{mutant name: status}`` from ``mutmut results --all true``."""
    out = mutmut("results", "--all", "true").stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\S+__mutmut_\d+):\s*(.+?)\s*$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def summarize(status: dict, equivalent: dict, areas, only: str | None = None) -> list:
    rows = []
    for area in areas:
        globs = mutant_globs(area)
        if only:
            globs = [narrow(g, only) for g in globs if g.endswith("x*__mutmut_*") or only in g]
        mine = {k: v for k, v in status.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
        eq = [k for k in mine if k in equivalent]
        live = {k: v for k, v in mine.items() if k not in equivalent}
        killed = sum(1 for v in live.values() if v == KILLED)
        timeout = sum(1 for v in live.values() if v == "timeout")
        survived = sorted(k for k, v in live.items() if v not in (KILLED, "timeout"))
        scored = killed + timeout + len(survived)
        rows.append({"area": area, "module": AREAS[area][0], "functions": AREAS[area][1],
                     "mutants": len(mine), "equivalent": len(eq), "killed": killed, "timeout": timeout,
                     "survived": survived, "score": (killed + timeout) / scored if scored else 1.0})
    return rows


def write_report(rows: list, command: str, minutes: float) -> None:
    """The summary table to ``docs/mutation.md``; the table and every survivor's diff to
    ``.mutation/report.md`` (the last run's, beside the mutants)."""
    lines = [
        "# Mutation score",
        "",
        f"Measured {dt.date.today().isoformat()} on 2 cores with `{command}` ({minutes:.0f} min),",
        "mutmut 3 over the areas whose bugs would silently corrupt results, each mutant run",
        "against the fast tests that call the mutated function. A timed-out mutant counts as",
        f"killed (the tests did not let it pass). Goal: {GOAL:.0%} of the non-equivalent mutants",
        "killed in each area; equivalent mutants are listed with their reason in",
        "`tests/mutation/equivalent.txt`. Each survivor's diff is in `.mutation/report.md` after",
        "a run (`python tests/mutation/run.py --report-only` rewrites it from the last run).",
        "",
        "| area | module: functions | mutants | equivalent | killed | timed out | survived | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        what = "all" if r["functions"] == ["*"] else ", ".join(f"`{f}`" for f in r["functions"])
        lines.append(f"| {r['area']} | `{r['module']}`: {what} | {r['mutants']} | {r['equivalent']} | {r['killed']} | "
                     f"{r['timeout']} | {len(r['survived'])} | {r['score']:.1%} |")
    REPORT.write_text("\n".join(lines) + "\n")
    survivors = [k for r in rows for k in r["survived"]]
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    for name in survivors:
        diff = mutmut("show", name, check=False).stdout.strip()
        lines += [f"### `{name}`", "", "```diff", diff, "```", ""]
    (STAGE / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--area", action="append", choices=sorted(AREAS),
                    help="mutate only this area (repeatable); default: all of them")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the reports from the last run in .mutation/ (no new run)")
    ap.add_argument("--only", metavar="FUNCTION",
                    help="mutate only the area's functions whose mutmut name contains this "
                         "(e.g. inpaint_mask): a quick check of new tests, not a score")
    ap.add_argument("--stage", type=Path, default=STAGE,
                    help="staging folder (default .mutation/); another one lets two areas run "
                         "side by side, and its summary stays there instead of docs/mutation.md")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the staged package and its test map, copy in the current tests and "
                         "rerun the selected mutants: minutes instead of a fresh staging")
    args = ap.parse_args(argv)
    set_stage(args.stage)
    areas = args.area or list(AREAS)
    equivalent = read_equivalent()
    start = time.time()
    globs = [g for a in areas for g in mutant_globs(a)]
    if args.only:
        globs = [narrow(g, args.only) for g in globs if g.endswith("x*__mutmut_*") or args.only in g]
        if not globs:
            raise SystemExit(f"--only {args.only}: no function of {', '.join(areas)} matches")
    if not args.report_only:
        if args.reuse and (STAGE / "mutants").is_dir():
            refresh(globs)
        else:
            stage(areas)
        run = mutmut("run", "--max-children", str(args.max_children), *globs, check=False)
        if run.returncode != 0:
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n", file=sys.stderr)
            return run.returncode
        RUN_MINUTES.write_text(f"{(time.time() - start) / 60:.1f}\n")
    elif not (STAGE / "mutants").is_dir():
        raise SystemExit(f"--report-only: no earlier run in {STAGE}")
    status = results()
    stale = sorted(k for k in equivalent if k not in status and any(
        fnmatch.fnmatchcase(k, g) for g in globs))
    if stale:  # a source edit renumbers its mutants: the list names ones that no longer exist
        print(f"warning: {len(stale)} equivalent entries name no mutant of this run (renumbered by an "
              f"edit? check {EQUIVALENT.name}): {', '.join(stale[:5])}", file=sys.stderr)
    rows = summarize(status, equivalent, areas, args.only)
    command = "make mutate" if not args.area else "python tests/mutation/run.py " + " ".join(
        f"--area {a!r}" for a in args.area)
    write_report(rows, command, float(RUN_MINUTES.read_text()) if RUN_MINUTES.exists() else float("nan"))
    for r in rows:
        print(f"{r['area']:22s} {r['score']:6.1%}  killed {r['killed']} timeout {r['timeout']} "
              f"survived {len(r['survived'])} equivalent {r['equivalent']}")
    print(f"report: {REPORT}")
    return 0 if all(r["score"] >= GOAL for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
