"""MLflow tracking: the driver owns the run; rank 0 of the Ray workers logs into it.

Tracking URI: ``mlflow.tracking_uri`` in the config, else ``MLFLOW_TRACKING_URI``, else a
local sqlite file ``<workdir>/mlflow.db`` with artifacts under ``<workdir>/mlartifacts``.
Telemetry is switched off before MLflow is imported (``raygan.ENV_DEFAULTS``).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from raygan.platform.core import storage
from raygan.platform.checkpoint import META_FILE, generator_weights
from raygan.platform.core.config import StorageConfig, resolve_tracking_uri
from raygan.platform.core.errors import CheckpointError, ModelRefError

RUN_NAME_TAG = "raygan.ray_run_name"


@contextmanager
def mlflow_store(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, registration, models:/ downloads) against ``uri``,
    without leaving ``uri`` behind: ``mlflow.set_tracking_uri`` also sets the process's
    ``MLFLOW_TRACKING_URI``, which every later resolution would then read."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        # set_registry_uri(None) would leave MLFLOW_REGISTRY_URI set: restore both by hand
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_tracking_uri(cfg) -> str:
    """The tracking URI of a run config (see raygan.platform.core.config.resolve_tracking_uri)."""
    return resolve_tracking_uri(cfg.mlflow.tracking_uri, cfg.workdir)


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def get_or_create_experiment(tracking_uri: str, name: str, workdir: str) -> str:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        # A local store: keep artifacts beside it (absolute, so Ray workers agree).
        artifact_location = (Path(workdir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def start_run(cfg, run_name: str, resume: bool, params: Dict[str, Any]) -> str:
    """Create the MLflow run for a Ray run (or find it again when resuming)."""
    tracking_uri = run_tracking_uri(cfg)
    exp_id = get_or_create_experiment(tracking_uri, cfg.mlflow.experiment, cfg.workdir)
    run_id, _ = open_run(tracking_uri, exp_id, {RUN_NAME_TAG: run_name}, run_name,
                         {"raygan.family": cfg.family, "raygan.preset": cfg.preset}, params,
                         reuse=resume)
    return run_id


def open_run(tracking_uri: str, experiment_id: str, key: Dict[str, str], run_name: str,
             tags: Dict[str, str], params: Dict[str, Any], reuse: bool = True) -> Tuple[str, bool]:
    """The run whose tags match ``key`` (set RUNNING again) when ``reuse``, else a new one
    with ``key`` + ``tags`` and ``params``. Returns ``(run_id, created)``. Sweeps find their
    parent and child runs again this way when resumed."""
    client = _client(tracking_uri)
    if reuse:
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in key.items())
        found = client.search_runs([experiment_id], filter_string=where, max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id, False
    run = client.create_run(experiment_id, run_name=run_name, tags={**key, **tags})
    items = list(params.items())
    from mlflow.entities import Param

    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in items[i:i + 100]])
    return run.info.run_id, True


def mlflow_transient(exc: BaseException) -> bool:
    """A tracking or artifact failure worth retrying: the storage's transient errors, and
    MLflow server answers 5xx / "temporarily unavailable" / rate limited."""
    if storage.is_transient(exc):
        return True
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code() or 0
        return status >= 500 or exc.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                                                  "INTERNAL_ERROR")
    return False


class RunLogger:
    """Thin logger used by rank 0 inside a Ray worker (or the plain loop). Every call is
    retried through transient tracking/artifact-store failures for up to
    ``storage.outage_budget_s`` (then StorageUnavailable names the outage); the retries
    count in ``counters.PROCESS``."""

    def __init__(self, tracking_uri: str, run_id: str, storage_cfg: Any = None):
        self.client = _client(tracking_uri)
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.storage_cfg = storage_cfg

    def _retry(self, what: str, fn) -> Any:
        return storage.retry_transient(fn, self.storage_cfg, what,
                                       transient=mlflow_transient, endpoint=f"MLflow {self.tracking_uri}")

    def metrics(self, values: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(batch), 500):
            self._retry("logging metrics", lambda: self.client.log_batch(self.run_id, metrics=batch[i:i + 500]))

    def image(self, image, artifact_file: str) -> None:
        self._retry(f"uploading {artifact_file}",
                    lambda: self.client.log_image(self.run_id, image, artifact_file=artifact_file))

    def text(self, text: str, artifact_file: str) -> None:
        self._retry(f"uploading {artifact_file}", lambda: self.client.log_text(self.run_id, text, artifact_file))

    def finish(self, status: str = "FINISHED") -> None:
        self._retry("closing the run", lambda: self.client.set_terminated(self.run_id, status=status))


def log_generator_model(tracking_uri: str, run_id: str, checkpoint_dir: str,
                        registered_name: Optional[str], alias: Optional[str] = None) -> Dict[str, Any]:
    """Log the checkpoint's generator as an MLflow pyfunc model and register it.

    The model is "models from code" (``raygan/platform/mlflow_model.py``) with the weights
    as a safetensors artifact and the run config as JSON: loading it never unpickles. Its
    signature, float32 images (N, H, W, C) in [0, 1] of any size with the model's channel
    count, in and out, and a small input example let MLflow's own tools validate inputs.
    """
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from safetensors.torch import save_file

    config, sd = generator_weights(checkpoint_dir)
    channels = int(config.get("data", {}).get("channels", 3))
    images = TensorSpec(np.dtype(np.float32), (-1, -1, -1, channels))  # unnamed: predict gets the array
    signature = ModelSignature(inputs=Schema([images]), outputs=Schema([images]))
    example = np.random.default_rng(0).random((1, 32, 32, channels), dtype=np.float32)
    code = str(Path(__file__).resolve().parent / "mlflow_model.py")
    with mlflow_store(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "generator.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(weights))
        cfg_file = Path(tmp) / "config.json"
        cfg_file.write_text(json.dumps(config, indent=2))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="generator", python_model=code,
                artifacts={"weights": str(weights), "config": str(cfg_file)},
                registered_model_name=registered_name,
                pip_requirements=["raygan"], signature=signature, input_example=example,
            )
    out = {"model_uri": info.model_uri}
    if registered_name:
        out["registered_model"] = registered_name
        out["registered_version"] = getattr(info, "registered_model_version", None)
        if alias and out["registered_version"] is not None:
            from mlflow import MlflowClient

            with mlflow_store(tracking_uri):
                MlflowClient(tracking_uri).set_registered_model_alias(
                    registered_name, alias, str(out["registered_version"]))
            out["registered_alias"] = alias
    return out


#: MLflow URIs of a generator logged by raygan.platform.tracking.log_generator_model
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:")


def fetch_checkpoint(uri: str, tracking_uri: Optional[str] = None,
                     storage_cfg: Optional[StorageConfig] = None) -> Path:
    """The one way from a model URI to a local checkpoint directory.

    ``uri``: a local checkpoint directory (returned as it is), ``s3://.../checkpoint_*``
    (downloaded), or an MLflow model, ``models:/name/version``, ``models:/name@alias``,
    ``runs:/<id>/generator`` (downloaded from the tracking server resolved by
    :func:`raygan.platform.core.config.resolve_tracking_uri`, and given a ``meta.json`` holding its
    config, so it reads like a checkpoint with a generator only).
    """
    if uri.startswith(MLFLOW_SCHEMES):
        import mlflow

        # models:/ resolves through the registry URI, which MLflow takes from its fluent state
        where = resolve_tracking_uri(tracking_uri)
        try:
            with mlflow_store(where):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)) / "artifacts"
        except Exception as exc:  # noqa: BLE001 -- MlflowException & co.: one line, not a traceback
            msg = (str(getattr(exc, "message", "")) or str(exc) or type(exc).__name__).splitlines()[0]
            raise ModelRefError(f"model {uri} does not resolve at {where}: {msg}") from None
        if not (local / "config.json").exists():
            raise ModelRefError(f"model {uri}: no raygan generator there (config.json is missing); "
                                  "give models:/name/version, models:/name@alias or runs:/<id>/generator")
        config = json.loads((local / "config.json").read_text())
        (local / META_FILE).write_text(json.dumps({"config": config}))
        return local
    if storage.is_s3(uri):
        dst = Path(tempfile.mkdtemp(prefix="raygan-ckpt-"))
        files = storage.list_files(uri, storage_cfg=storage_cfg)
        if not files:
            raise CheckpointError(f"no checkpoint at {uri}: the prefix holds no files")
        for f in files:
            (dst / f.rsplit("/", 1)[-1]).write_bytes(storage.read_bytes(f, storage_cfg))
        return dst
    return Path(storage.local_path(uri))
