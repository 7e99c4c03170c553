"""Packaging: one import root `raygan`; nothing shadows stdlib `platform` or HF `datasets`."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_platform_not_shadowed_from_repo_root():
    out = subprocess.run([sys.executable, "-c",
                          "import platform; print(platform.python_version()); print(platform.__file__)"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].count(".") == 2
    assert not out[1].startswith(str(ROOT))


def test_no_top_level_platform_or_datasets_package_in_tree():
    for name in ("platform", "datasets"):
        assert not (ROOT / name / "__init__.py").exists(), f"{name}/__init__.py would shadow a real package"
        assert not (ROOT / f"{name}.py").exists()


def test_datasets_name_never_resolves_to_our_code():
    code = ("import importlib.util as u; s = u.find_spec('datasets');"
            "print('none' if s is None else (s.origin or 'namespace'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    # Either Hugging Face's package, nothing, or an empty namespace with none of our modules.
    assert not out.startswith(str(ROOT / "datasets")), out


def test_subpackages_import_under_raygan():
    import raygan.datasets.pipeline
    import raygan.deploy.dequantize
    import raygan.models
    import raygan.platform.engine

    assert raygan.platform.engine.__name__ == "raygan.platform.engine"


def test_plain_wheel_install_contains_the_mapped_packages(tmp_path):
    import shutil

    had_build = (ROOT / "build").exists()
    try:
        _wheel_install(tmp_path)
    finally:
        if not had_build:  # setuptools builds in the source tree; leave it as found
            shutil.rmtree(ROOT / "build", ignore_errors=True)


def _wheel_install(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("raygan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("raygan/__init__.py", "raygan/platform/engine.py", "raygan/models/wcdgan.py",
                 "raygan/datasets/pipeline.py", "raygan/platform/mlflow_model.py", "raygan/models/configs/wcdgan.yaml"):
        assert must in names, must
    assert not any(n.startswith(("platform/", "datasets/", "models/", "tests/")) for n in names)
    # Installed alone (no repository on sys.path), the package imports.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", "import raygan.platform.core.config as c; print(c.__file__)"],
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target))
    # ... and finds the families' default configs in the wheel (package data), by family and by name
    code = ("import raygan.models, raygan.datasets.tasks\n"
            "from raygan.platform.core.config import find_config, load_config\n"
            "cfg = load_config(None, family='wcdgan', overrides=['train.perceptual_weights=random'])\n"
            "print(cfg.family, cfg.train.steps, find_config('wcdgan_cpu_demo.yaml'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    family, steps, demo = out.stdout.split()
    assert (family, steps) == ("wcdgan", "200000")
    assert demo == str(target / "raygan" / "models" / "configs" / "wcdgan_cpu_demo.yaml")
