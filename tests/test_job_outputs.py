"""Where a submitted job's outputs go, and the multi-node storage rule (pure functions; the
`ray job submit` tests are in test_ray_train.py)."""
import json

import pytest

from raygan.platform.core.config import ConfigError, load_config
from raygan.platform.trainer import (RAY_JOB_ENV, check_node_local_storage, local_tracking_path,
                                     place_job_outputs, ray_job_copy, stable_workdir)

JOB_ENV = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_ab12.zip"}, "metadata": {}})


@pytest.fixture
def copy_dir(tmp_path):
    d = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    d.mkdir(parents=True)
    return d


def cfg_with(*overrides):
    return load_config(None, list(overrides), family="wcdgan")


@pytest.mark.parametrize("storage", ["/data/ray", "file:///data/ray", "ray_results"])
def test_multinode_refuses_node_local_storage(storage):
    with pytest.raises(ConfigError, match=r"node-local.*3 alive nodes.*s3://.*ray.shared_storage=true"):
        check_node_local_storage(storage, 3, False, "http://127.0.0.1:5000")


def test_multinode_refuses_local_mlflow_file():
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        check_node_local_storage("s3://b/ray", 2, False, "sqlite:////home/u/.raygan/mlflow.db")


@pytest.mark.parametrize("storage,nodes,shared,tracking", [
    ("/data/ray", 1, False, "sqlite:////x/mlflow.db"),      # one node: local is fine
    ("/data/ray", 0, False, None),
    ("/mnt/nfs/ray", 4, True, "sqlite:////mnt/nfs/m.db"),  # declared shared filesystem
    ("s3://bucket/ray", 4, False, "http://127.0.0.1:5000"),
    ("s3://bucket/ray", 4, False, None),
])
def test_multinode_accepts(storage, nodes, shared, tracking):
    check_node_local_storage(storage, nodes, shared, tracking)


def test_shared_storage_is_a_config_knob():
    assert cfg_with().ray.shared_storage is False
    assert cfg_with("ray.shared_storage=true").ray.shared_storage is True


def test_local_tracking_path():
    assert local_tracking_path("sqlite:////abs/m.db") == "/abs/m.db"
    assert local_tracking_path("sqlite:///rel.db") == "rel.db"
    assert local_tracking_path("file:///abs/mlruns") == "/abs/mlruns"
    assert local_tracking_path("mlruns") == "mlruns"
    assert local_tracking_path("http://127.0.0.1:5000") is None
    assert local_tracking_path("databricks://profile") is None


def test_not_a_job_changes_nothing(copy_dir):
    cfg = cfg_with()
    assert place_job_outputs(cfg, environ={}, cwd=copy_dir) == (cfg, None)
    assert cfg.workdir == ".raygan"
    assert ray_job_copy({}, copy_dir) is None


def test_job_default_workdir_moves_to_stable_home(copy_dir, tmp_path):
    env = {RAY_JOB_ENV: JOB_ENV, "RAYGAN_HOME": str(tmp_path / "home")}
    assert ray_job_copy(env, copy_dir) == copy_dir.resolve()
    loaded = cfg_with()
    cfg, note = place_job_outputs(loaded, environ=env, cwd=copy_dir)
    assert cfg.workdir == str((tmp_path / "home").resolve())
    assert loaded.workdir == ".raygan"  # a new config: the loaded one is left as it was
    assert str((tmp_path / "home").resolve()) in note and "RAYGAN_HOME" in note
    assert stable_workdir({}).name == ".raygan"


def test_job_keeps_explicit_paths_outside_the_copy(copy_dir, tmp_path):
    env = {RAY_JOB_ENV: JOB_ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    cfg = cfg_with(f"workdir={tmp_path / 'w'}", f"ray.storage={tmp_path / 'ray'}")
    cfg, _ = place_job_outputs(cfg, environ=env, cwd=copy_dir)
    assert cfg.workdir == str(tmp_path / "w")


@pytest.mark.parametrize("overrides,env_extra,named", [
    (["workdir=out"], {}, "--workdir"),
    (["workdir=/tmp/x", "ray.storage=ray"], {}, "--storage"),
    (["workdir=/tmp/x", "ray.storage=file://{copy}/r"], {}, "--storage"),
    (["workdir=/tmp/x"], {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, "MLFLOW_TRACKING_URI"),
    (["workdir=/tmp/x", "mlflow.tracking_uri=sqlite:///{copy}/m.db"], {}, "MLFLOW_TRACKING_URI"),
])
def test_job_refuses_paths_inside_the_temporary_copy(copy_dir, overrides, env_extra, named):
    cfg = cfg_with(*[o.format(copy=copy_dir) for o in overrides])
    with pytest.raises(ConfigError) as err:
        place_job_outputs(cfg, environ={RAY_JOB_ENV: JOB_ENV, **env_extra}, cwd=copy_dir)
    msg = str(err.value)
    assert msg.startswith(named) and "temporary copy" in msg and "\n" not in msg
    for word in ("--workdir", "--storage", "MLFLOW_TRACKING_URI"):
        assert word in msg


def test_job_without_working_dir_only_moves_the_default(tmp_path):
    env = {RAY_JOB_ENV: json.dumps({"runtime_env": {}, "metadata": {}}), "RAYGAN_HOME": str(tmp_path / "h")}
    assert ray_job_copy(env, tmp_path) is None
    cfg, _ = place_job_outputs(cfg_with("ray.storage=rel"), environ=env, cwd=tmp_path)
    assert cfg.workdir == str((tmp_path / "h").resolve())


def test_workers_take_the_cluster_cpus_and_one_thread_per_cpu():
    from raygan.platform.trainer import resolve_worker_cpus

    # cpus_per_worker unset: the cluster's CPUs shared out, capped at one node's, >= 1
    assert resolve_worker_cpus(None, None, 1, 2, 2) == (2.0, 2)   # 1 worker on 2 cores: both
    assert resolve_worker_cpus(None, None, 2, 2, 2) == (1.0, 1)
    assert resolve_worker_cpus(None, None, 2, 32, 8) == (8.0, 8)  # a worker lives on one node
    assert resolve_worker_cpus(None, None, 4, 2, 2) == (1.0, 1)   # oversubscribed: still 1
    # set explicitly: kept; threads follow the whole CPUs (a sweep's 0.99 share gets 1)
    assert resolve_worker_cpus(0.99, None, 2, 2, 2) == (0.99, 1)
    assert resolve_worker_cpus(3.0, 2, 1, 8, 8) == (3.0, 2)
    with pytest.raises(ConfigError, match="ray.threads_per_worker"):
        load_config("wcdgan_cpu_demo.yaml", ["ray.threads_per_worker=0"])
