"""The registry as users load it: ``mlflow.pyfunc.load_model("models:/...")`` from outside the
checkout restores exactly what ``load_generator`` restores, and the logged signature lets
MLflow validate inputs."""
import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch

from raygan.platform.checkpoint import save_checkpoint
from raygan.platform.core.config import to_dict
from raygan.platform.engine import GANEngine
from raygan.platform.restorer import load_generator, restore_array
from raygan.platform.tracking import log_generator_model, mlflow_store, start_run
from test_engine import batch, tiny_cfg

LOAD_AND_PREDICT = """
import json, sys
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
np.save("restored.npy", model.predict(np.load("images.npy")))
try:
    model.predict(np.zeros((1, 16, 16, 4), dtype=np.float32))  # 4 channels: not the signature
    print(json.dumps({"rejected": None}))
except Exception as exc:
    print(json.dumps({"rejected": type(exc).__name__ + ": " + str(exc)[:200]}))
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    cfg = tiny_cfg(f"workdir={tmp}")
    eng = GANEngine(cfg)
    for i in range(2):
        eng.train_step(batch(i))
    ckpt = save_checkpoint(tmp / "ckpt", eng, {"family": cfg.family, "step": 2, "config": to_dict(cfg)})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg.mlflow.tracking_uri = uri
    info = log_generator_model(uri, start_run(cfg, "pyfunc", False, {}), str(ckpt), "raygan-test-pyfunc")
    return tmp, uri, f"models:/raygan-test-pyfunc/{info['registered_version']}"


def test_pyfunc_from_outside_the_checkout_equals_load_generator(registered, tmp_path):
    _, uri, model_uri = registered
    images = np.random.default_rng(1).random((2, 24, 20, 3), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["MLFLOW_TRACKING_URI"] = uri
    out = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, model_uri], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    restored = np.load(tmp_path / "restored.npy")
    model, _ = load_generator(model_uri, uri)
    expected = restore_array(model, images)
    assert restored.shape == images.shape and restored.dtype == np.float32
    np.testing.assert_allclose(restored, expected, rtol=0, atol=1e-6)
    assert np.abs(restored - images).max() > 1e-3  # a trained generator, not the identity
    # MLflow's schema enforcement refuses what the signature does not allow
    rejected = json.loads(out.stdout.strip().splitlines()[-1])["rejected"]
    assert rejected is not None and rejected.startswith("MlflowException") and "schema" in rejected, rejected


def test_signature_and_input_example_are_logged(registered):
    _, uri, model_uri = registered
    with mlflow_store(uri):
        info = mlflow.models.get_model_info(model_uri)
    spec = info.signature.inputs.inputs[0]
    assert (spec.type, spec.shape) == (np.dtype(np.float32), (-1, -1, -1, 3))
    assert info.signature.outputs.inputs[0].shape == (-1, -1, -1, 3)
    assert info.saved_input_example_info is not None
    # the store did not leak into the process environment (MLflow sets both variables)
    assert uri not in (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
