"""Dependencies are declared as used, and the wheel imports on what it declares alone.

Two checks, both on the real files:
- every third-party package that a module of the wheel (or a job script) imports belongs to a
  distribution that ``pyproject.toml`` declares (jobs may use an extra);
- the wheel, built from this checkout and installed into a new virtual environment (no
  system site-packages, no checkout on the path), imports every one of its modules when that
  environment holds exactly the distributions ``pyproject.toml`` pulls in: the declared
  dependencies and what they require in turn (extras and markers evaluated), nothing else.
  The distributions are linked from this test environment rather than installed again (a
  second 5 GB torch install per run); which ones are linked is computed from the
  declarations, so an import of an undeclared package fails here as it would for a user.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the [dev] extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras=()) -> set:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    return {_norm(Requirement(r).name) for r in reqs}


def _wheel_sources():
    """(module file, package folder) of every module the wheel ships, from pyproject's mapping."""
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        folder = ROOT / dirs[package]
        yield from folder.glob("*.py")


def _third_party_imports(files) -> dict:
    found = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("raygan", "__future__"):
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def _undeclared(imports: dict, declared: set) -> list:
    owners = md.packages_distributions()
    bad = []
    for top, where in sorted(imports.items()):
        dists = {_norm(d) for d in owners.get(top, [])}
        if not dists & declared:
            bad.append(f"{top} (distribution {sorted(dists) or 'unknown'}) imported by {sorted(where)}")
    return bad


def test_every_import_of_the_wheel_is_a_declared_dependency():
    imports = _third_party_imports(_wheel_sources())
    assert {"torch", "ray", "mlflow", "numpy", "PIL", "webdataset"} <= set(imports)
    assert _undeclared(imports, _declared()) == []


def test_job_scripts_import_only_declared_packages_and_extras():
    imports = _third_party_imports((ROOT / "jobs").glob("*.py"))
    imports.pop("_checkout")  # jobs/_checkout.py, beside them
    assert "psutil" in imports  # the training benchmark's CPU readings: the [bench] extra
    assert _undeclared(imports, _declared(("bench",))) == []


def test_the_check_names_an_undeclared_import():
    # the check itself can fail: psutil is only in extras, so the runtime set refuses it
    bad = _undeclared({"psutil": {"x.py"}, "numpy": {"x.py"}}, _declared())
    assert len(bad) == 1 and bad[0].startswith("psutil") and "x.py" in bad[0]


def _closure(requirements) -> dict:
    """Distribution name -> Distribution for the requirements and everything they pull in."""
    out, todo = {}, [(Requirement(r), ()) for r in requirements]
    seen = set()
    while todo:
        req, _ = todo.pop()
        key = (_norm(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            raise
        out[_norm(req.name)] = dist
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                         for e in ("", *req.extras)):
                todo.append((sub, ()))
    return out


def _link_distributions(dists: dict, target: Path) -> None:
    """Link each distribution's top-level files and folders (and its metadata) into target."""
    target.mkdir()
    for dist in dists.values():
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if not parts or parts[0] == ".." or parts[0].endswith(".pth") or parts[0] == "__pycache__":
                continue
            src = Path(dist.locate_file(parts[0]))
            dst = target / parts[0]
            if src.exists() and not dst.exists() and not os.path.lexists(dst):
                dst.symlink_to(src)


@pytest.mark.slow
def test_the_wheel_imports_every_module_in_a_venv_of_its_declared_dependencies(tmp_path):
    # built from a copy: an in-tree setuptools build would leave build/ and *.egg-info here
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".raygan", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)
    (wheel,) = wheels.glob("raygan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # what a pip-installed raygan needs beside its modules: the console command, configs, page
    assert "raygan/cli.py" in names and "raygan/models/configs/wcdgan_cpu_demo.yaml" in names
    assert "raygan/deploy/static/index.html" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "raygan = raygan.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, stdout=subprocess.DEVNULL)
    deps = tmp_path / "declared"
    closure = _closure(PYPROJECT["project"]["dependencies"])
    assert "raygan" not in closure and {"torch", "ray", "mlflow", "fastapi"} <= set(closure)
    _link_distributions(closure, deps)
    (site / "declared-dependencies.pth").write_text(str(deps) + "\n")

    script = r"""
import importlib, json, pathlib, sys
import raygan
root = pathlib.Path(raygan.__file__).parent
names = sorted("raygan." + ".".join(p.relative_to(root).with_suffix("").parts)
               for p in root.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # every failure, named
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"file": raygan.__file__, "modules": names, "failed": failed}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(site)), report["file"]  # the wheel, not the checkout
    assert report["failed"] == {}
    assert len(report["modules"]) > 40 and "raygan.deploy.app" in report["modules"]
    # the console command runs from the clean environment too: `python -m raygan`, and the
    # `raygan` entry point as the installed script finds it (through the wheel's metadata)
    cli = subprocess.run([str(venv / "bin" / "python"), "-m", "raygan", "--help"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "restore" in cli.stdout, cli.stderr[-2000:]
    script = ("import sys; from importlib.metadata import entry_points; "
              "(ep,) = entry_points(group='console_scripts', name='raygan'); "
              "sys.argv = ['raygan', 'restore', '--help']; sys.exit(ep.load()())")
    cli = subprocess.run([str(venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "usage: raygan restore" in cli.stdout, cli.stderr[-2000:]


def test_every_pin_says_why_it_is_pinned():
    """constraints.txt holds the pins that matter, each with its reason; not a freeze."""
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert 10 < len(pins) < 60, len(pins)
    unexplained = [p for p in pins if "#" not in p or not p.split("#", 1)[1].strip()]
    assert unexplained == [], f"pins without a reason: {unexplained}"
    assert all(re.match(r"^[A-Za-z0-9_.\-]+==[\w.]+\s", p) for p in pins), pins
