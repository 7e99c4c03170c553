"""MLflow tracking: the driver owns the run; rank 0 of the Ray workers logs into it.

Tracking URI: ``mlflow.tracking_uri`` in the config, else ``MLFLOW_TRACKING_URI``, else a
local sqlite file ``<workdir>/mlflow.db`` with artifacts under ``<workdir>/mlartifacts``.
Telemetry is switched off before MLflow is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

RUN_NAME_TAG = "raygan.ray_run_name"


def resolve_tracking_uri(cfg) -> str:
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(cfg.workdir).resolve() / 'mlflow.db'}"


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
    tracking_uri = resolve_tracking_uri(cfg)
    client = _client(tracking_uri)
    exp_id = get_or_create_experiment(tracking_uri, cfg.mlflow.experiment, cfg.workdir)
    if resume:
        found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                                   max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
    run = client.create_run(exp_id, run_name=run_name,
                            tags={RUN_NAME_TAG: run_name, "raygan.family": cfg.family,
                                  "raygan.preset": cfg.preset})
    items = list(params.items())
    from mlflow.entities import Param

    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in items[i:i + 100]])
    return run.info.run_id


class RunLogger:
    """Thin logger used by rank 0 inside a Ray worker (or the plain loop)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = _client(tracking_uri)
        self.run_id = run_id

    def metrics(self, values: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 500])

    def image(self, image, artifact_file: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def tags(self, tags: Dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def log_generator_model(tracking_uri: str, run_id: str, checkpoint_dir: str,
                        registered_name: Optional[str]) -> Dict[str, Any]:
    """Log the checkpoint's generator as an MLflow pyfunc model and register it.

    The model is "models from code" (``raygan/deploy/mlflow_model.py``) with the weights
    as a safetensors artifact and the run config as JSON: loading it never unpickles.
    """
    import json
    import tempfile

    import mlflow
    from safetensors.torch import save_file

    from raygan.platform.checkpoint import generator_weights

    config, sd = generator_weights(checkpoint_dir)
    code = str(Path(__file__).resolve().parent.parent / "deploy" / "mlflow_model.py")
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "generator.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(weights))
        cfg_file = Path(tmp) / "config.json"
        cfg_file.write_text(json.dumps(config, indent=2))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="generator", python_model=code,
                artifacts={"weights": str(weights), "config": str(cfg_file)},
                registered_model_name=registered_name,
                pip_requirements=["raygan"],
            )
    out = {"model_uri": info.model_uri}
    if registered_name:
        out["registered_model"] = registered_name
        out["registered_version"] = getattr(info, "registered_model_version", None)
    return out
