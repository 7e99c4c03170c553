"""Import raygan from the checkout these job scripts sit in, not from whatever is installed.

Every ``jobs/*.py`` imports this module first (standard library only, so it works on a node
where raygan is not installed at all). Under ``ray job submit --working-dir .`` the driver
then runs the submitted code; the training and sweep drivers ship that same code to every
worker (``raygan.platform.core.submitted_code``). Outside a raygan checkout it does nothing.
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _is_raygan_checkout(root: Path) -> bool:
    pyproject = root / "pyproject.toml"
    return (root / "__init__.py").is_file() and pyproject.is_file() and \
        'name = "raygan"' in pyproject.read_text(errors="replace")


def use_checkout(root: Path = ROOT) -> bool:
    if not _is_raygan_checkout(root):
        return False
    loaded = sys.modules.get("raygan")
    if loaded is not None and Path(loaded.__file__).resolve().parent == root:
        return True
    for name in [m for m in sys.modules if m == "raygan" or m.startswith("raygan.")]:
        del sys.modules[name]  # nothing has used them yet: the job scripts import us first
    spec = importlib.util.spec_from_file_location("raygan", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["raygan"] = module
    spec.loader.exec_module(module)
    return True


USING_CHECKOUT = use_checkout()
