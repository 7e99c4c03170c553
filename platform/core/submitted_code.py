"""The code that runs is the code that was submitted.

``ray job submit --working-dir . -- python jobs/train_wcdgan.py`` unpacks the checkout into a
temporary folder on the driver's node and on every node that runs one of the job's workers.
The checkout *is* the ``raygan`` package (pyproject maps ``raygan`` to the repository root),
but the unpacked copy is not importable under that name, so without help each process
imports whatever raygan its node has installed. Three pieces make the submitted code run
everywhere, and say so:

* ``jobs/_checkout.py`` (imported by every ``jobs/*.py`` before raygan, standard library
  only): the driver imports the raygan of the checkout the script sits in, not an installed
  one (nor none).
* :func:`ship_runtime_env`: the running raygan's files (what the wheel would hold) are copied
  into a folder named ``raygan`` and given to Ray as ``py_modules``, so every worker process of
  the job, on every node, imports that copy ahead of anything installed.
* :func:`fingerprint` / :func:`check_nodes`: a hash of those files. Before training, one tiny
  task per alive node reports the fingerprint of the raygan it imports; a node whose code
  differs stops the run with one line naming the node, its raygan and both fingerprints. Each
  training worker reports its own fingerprint too (``raygan: rank R on node ... code ...``).

``serve deploy`` takes a config file, not a process, so the code travels by URI:
:func:`publish` writes the running raygan as a zip (``raygan-<fingerprint>.zip``) to S3 or a
folder every node mounts, and ``raygan serve --write-config`` puts it in the Serve config as
``runtime_env.py_modules`` with the fingerprint in ``RAYGAN_CODE``; each replica compares the
code it imported with that fingerprint when it starts (:func:`check_running`) and refuses to
serve other code.

``ray.ship_code: false`` turns the shipping off (each node then runs its installed raygan, and
the check still refuses a node whose code differs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from raygan.platform.core.errors import ConfigError

#: file types of the package (modules, shipped configs, the page); what the wheel holds
PACKAGE_SUFFIXES = (".py", ".yaml", ".yml", ".html", ".json")
#: folders of a checkout that are not part of the package
NOT_PACKAGE = {"tests", "jobs", "docs", "build", "dist", "__pycache__", "node_modules"}


class CodeMismatchError(ConfigError):
    """A node would run other raygan code than the submitted one."""


def package_root() -> Path:
    """The folder of the raygan that this process imported."""
    import raygan

    return Path(raygan.__file__).resolve().parent


def importable_root() -> Optional[Path]:
    """The folder ``import raygan`` finds in a new process of this Python (sys.path and the
    installed finders, not the module this process already holds); None when none."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find("raygan", None)
        except Exception:  # noqa: BLE001  (a finder that cannot answer is no answer)
            continue
        if spec is not None and spec.origin:
            return Path(spec.origin).resolve().parent
    return None


def package_files(root: Path) -> Iterator[Path]:
    """The package's files under ``root`` (a checkout or an installed raygan), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in NOT_PACKAGE
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith(PACKAGE_SUFFIXES):
                yield Path(dirpath) / name


_FINGERPRINTS: Dict[str, str] = {}


def fingerprint(root: Optional[Path] = None) -> str:
    """12 hex digits of a hash over the package files' relative paths and bytes."""
    root = Path(root) if root is not None else package_root()
    key = str(root)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for path in package_files(root):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
        _FINGERPRINTS[key] = h.hexdigest()[:12]
    return _FINGERPRINTS[key]


def copy_package(root: Path, dest_parent: Path) -> Path:
    """Copy the package files of ``root`` into ``dest_parent/raygan`` (for ``py_modules``)."""
    dest = dest_parent / "raygan"
    for path in package_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


#: the fingerprint a Serve config was written for (runtime_env.env_vars): replicas check it
CODE_ENV = "RAYGAN_CODE"


def check_running(expected: Optional[str]) -> None:
    """Refuse (one line) to run raygan code other than the ``expected`` fingerprint; None or
    empty: nothing was pinned (a config written by hand)."""
    if expected and expected != fingerprint():
        raise CodeMismatchError(
            f"this process imports raygan {fingerprint()} from {package_root()}, not the {expected} "
            f"its Serve config was written for ({CODE_ENV}): the config's runtime_env.py_modules "
            "did not reach this node, or the code there differs; write the config again with "
            "`raygan serve --write-config`")


def package_zip(dest_dir: Path, root: Optional[Path] = None) -> Path:
    """``dest_dir/raygan-<fingerprint>.zip`` holding ``raygan-<fingerprint>/raygan/...``: Ray
    unpacks a remote ``py_modules`` zip without its top folder and puts what is left on the
    workers' ``sys.path``, so ``import raygan`` finds this copy."""
    import zipfile

    root = Path(root) if root is not None else package_root()
    fp = fingerprint(root)
    out = Path(dest_dir) / f"raygan-{fp}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in package_files(root):
            # a fixed date: the same code gives the same zip
            info = zipfile.ZipInfo(f"raygan-{fp}/raygan/{path.relative_to(root).as_posix()}", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    return out


def publish(code_uri: str, storage_cfg: Any = None) -> str:
    """Write the running raygan's zip under ``code_uri`` (``s3://bucket/prefix`` or a folder
    every node mounts); the URI Ray's ``py_modules`` takes (``s3://...`` or ``file://...``)."""
    from raygan.platform.core import storage

    with tempfile.TemporaryDirectory(prefix="raygan-code-") as tmp:
        zipped = package_zip(Path(tmp))
        target = storage.join(code_uri, zipped.name, storage_cfg=storage_cfg)
        storage.write_bytes(target, zipped.read_bytes(), storage_cfg=storage_cfg)
    if storage.is_s3(target):
        return target
    return Path(storage.local_path(target)).resolve().as_uri()


#: set by Ray's job supervisor for the entrypoint of `ray job submit` (runtime env + metadata)
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_runtime_env(environ=None) -> Dict[str, Any]:
    """The runtime env `ray job submit` gave this driver ({} outside a submitted job)."""
    environ = os.environ if environ is None else environ
    try:
        return json.loads(environ.get(RAY_JOB_ENV) or "{}").get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}


_SHIPPED: Dict[str, str] = {}


def ship_runtime_env(job_env: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The runtime-env fields that ship the running raygan to every worker: ``py_modules``
    with a copy of its files (made once per process), unless the job already sets
    ``py_modules`` (Ray would refuse to merge two; then the node check decides)."""
    if (job_env or {}).get("py_modules"):
        return {}
    root = package_root()
    key = str(root)
    if key not in _SHIPPED:
        parent = Path(tempfile.mkdtemp(prefix="raygan-ship-"))
        _SHIPPED[key] = str(copy_package(root, parent))
    return {"py_modules": [_SHIPPED[key]]}


def describe() -> Dict[str, str]:
    """What this process runs: fingerprint, package folder, node address."""
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001  (only a label)
        node = ""
    return {"code": fingerprint(), "path": str(package_root()), "node": node}


def check_nodes(expected: str, timeout_s: float = 120.0) -> List[Dict[str, str]]:
    """One zero-CPU task on each alive node reports the raygan it imports; a node whose
    fingerprint is not ``expected`` raises :class:`CodeMismatchError` naming it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def _probe():
        from raygan.platform.core.submitted_code import describe as _describe

        return _describe()

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote() for n in nodes]
    found = []
    for n, ref in zip(nodes, refs):
        address = n.get("NodeManagerAddress", "?")
        try:
            got = ray.get(ref, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001  (a node that cannot import raygan at all)
            cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()
            raise CodeMismatchError(f"node {address} cannot run the submitted raygan {expected}: "
                                    f"{cause[-1] if cause else type(exc).__name__}") from None
        got["node"] = got.get("node") or address
        found.append(got)
        if got["code"] != expected:
            raise CodeMismatchError(
                f"node {got['node']} would run raygan {got['code']} from {got['path']}, not the "
                f"submitted code {expected}: submit with --working-dir <your checkout> and keep "
                f"ray.ship_code=true (or install the same raygan on every node)")
    return found


__all__ = ["CodeMismatchError", "RAY_JOB_ENV", "check_nodes", "copy_package", "describe", "fingerprint",
           "importable_root", "job_runtime_env", "package_files", "package_root", "ship_runtime_env"]
