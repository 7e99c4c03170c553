"""Running the endpoints from Python: the Serve config file, narrowed to some tasks, on a
local Ray (or the cluster in ``RAY_ADDRESS``). Used by ``jobs/serve.py``, the tests and the
benchmark; ``serve run deploy/serve_config.yaml`` runs the same application."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from raygan.platform.core import submitted_code

DEFAULT_CONFIG = Path(__file__).resolve().parent / "serve_config.yaml"


def load_serve_config(path: Optional[str] = None, tasks: Optional[Dict[str, str]] = None,
                      tracking_uri: Optional[str] = None, host: Optional[str] = None,
                      port: Optional[int] = None, **arg_overrides: Any) -> Dict[str, Any]:
    """``{"http": {host, port}, "app": <the config's first application>}`` with ``tasks``
    (name -> model URI) replacing the config's tasks (a new name takes the options of the
    config's first ``restore-*`` deployment) and ``arg_overrides`` set in its args."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"serve config {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"serve config {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    apps = doc.get("applications") if isinstance(doc, dict) else None
    if not apps or not isinstance(apps, list) or not isinstance(apps[0], dict):
        raise ValueError(f"serve config {path}: no `applications` list (see deploy/serve_config.yaml)")
    app = copy.deepcopy(apps[0])
    args = app.setdefault("args", {})
    deployments = {d["name"]: d for d in app.get("deployments", [])}
    if tasks:
        template = next((d for n, d in deployments.items() if n.startswith("restore-")), {"name": "restore"})
        args["tasks"] = {name: {"model": uri} for name, uri in tasks.items()}
        kept = {n: d for n, d in deployments.items() if not n.startswith("restore-")}
        for name in tasks:
            kept[f"restore-{name}"] = {**copy.deepcopy(deployments.get(f"restore-{name}", template)),
                                       "name": f"restore-{name}"}
        deployments = kept
    if tracking_uri:
        args["tracking_uri"] = tracking_uri
    args.update(arg_overrides)
    app["deployments"] = list(deployments.values())
    http = dict(doc.get("http_options") or {})
    http["host"] = host or http.get("host", "127.0.0.1")
    http["port"] = int(port or http.get("port", 8000))
    # where Serve runs HTTP proxies: EveryNode (Serve's default) | HeadOnly | Disabled
    return {"http": http, "app": app, "proxy_location": doc.get("proxy_location")}


def write_deploy_config(config: Dict[str, Any], code_uri: str, out: str, storage_cfg: Any = None) -> Dict[str, str]:
    """A Serve config file for ``serve deploy`` / ``serve run`` / a RayService that runs this
    raygan, not the cluster's installed one: the code is published under ``code_uri``
    (:func:`submitted_code.publish`) and named in the application's ``runtime_env``
    (``py_modules`` and ``RAYGAN_CODE``, which each replica checks when it starts)."""
    uri = submitted_code.publish(code_uri, storage_cfg)
    app = copy.deepcopy(config["app"])
    env = dict(app.get("runtime_env") or {})
    if env.get("py_modules") or env.get("working_dir"):
        raise ValueError("serve config: the application already sets runtime_env py_modules/working_dir; "
                         "--write-config sets py_modules itself")
    env["py_modules"] = [uri]
    env["env_vars"] = {**(env.get("env_vars") or {}), submitted_code.CODE_ENV: submitted_code.fingerprint()}
    app["runtime_env"] = env
    doc = {"proxy_location": config.get("proxy_location") or "EveryNode", "http_options": config["http"],
           "applications": [app]}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("# written by `raygan serve --write-config`: the application runs raygan "
                         f"{submitted_code.fingerprint()} from {uri}\n" + yaml.safe_dump(doc, sort_keys=False))
    return {"config": str(out), "code_uri": uri, "code": submitted_code.fingerprint()}


def build(config: Dict[str, Any]):
    from raygan.deploy.app import build_application

    skip_unpromoted(config)
    app = config["app"]
    return build_application(app.get("args"), {d["name"]: d for d in app.get("deployments", [])})


def skip_unpromoted(config: Dict[str, Any]) -> None:
    """Drop from ``config`` each task whose ``models:/name@alias`` names an alias no version
    carries yet (a task not promoted yet: the shipped config's four ``@champion`` tasks after
    ``make demo``, which promotes one), with one warning line each. Any other reference that
    does not resolve, or no task left, fails with one line (:class:`ModelRefError`)."""
    from raygan.deploy.app import resolve_model_ref
    from raygan.platform.core.errors import ModelRefError

    app = config["app"]
    args = app.get("args") or {}
    tasks = dict(args.get("tasks") or {})
    skipped: Dict[str, str] = {}  # task -> why
    for task, spec in tasks.items():
        model = spec.get("model") if isinstance(spec, dict) else None
        if not (isinstance(model, str) and model.startswith("models:/") and "@" in model):
            continue  # a pinned version or a checkpoint: build_app fails on it, as it should
        try:
            resolve_model_ref(model, args.get("tracking_uri"))
        except ModelRefError as exc:
            skipped[task] = str(exc)
    if skipped and len(skipped) == len(tasks):
        raise ModelRefError("no task's model resolves: " + "; ".join(f"task {t}: {why}" for t, why in skipped.items()))
    for task, why in skipped.items():
        args["tasks"].pop(task)
        app["deployments"] = [d for d in app.get("deployments", []) if d.get("name") != f"restore-{task}"]
        print(f"raygan serve: skipping task {task}: {why}", file=sys.stderr, flush=True)


def run_local(config: Dict[str, Any], num_cpus: Optional[int] = None) -> str:
    """Start Ray (local, on loopback; or ``RAY_ADDRESS``) and Serve, deploy ``config``;
    returns the base URL. Model references are resolved before anything starts."""
    import ray
    from ray import serve

    application = build(config)  # fails fast, with one line, on a bad model reference
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            # a cluster: the replicas run this raygan (shipped as py_modules; serve.run gives
            # the driver's runtime env to its deployments), checked on every node first
            ray.init(address=os.environ["RAY_ADDRESS"],
                     runtime_env=submitted_code.ship_runtime_env(submitted_code.job_runtime_env()) or None)
            submitted_code.check_nodes(submitted_code.fingerprint())
        else:
            # Loopback only because raygan's ENV_DEFAULTS set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
            # (Ray's single-node mode); exported as 1, Ray binds its GCS, raylet, agents and
            # workers to all interfaces whatever node IP is given. Each Serve replica's gRPC
            # server listens on all interfaces in either mode (README, Security).
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    http = config["http"]
    serve.start(http_options={"host": http["host"], "port": http["port"]},
                proxy_location=config.get("proxy_location") or "EveryNode")
    app = config["app"]
    serve.run(application, name=app.get("name", "raygan"), route_prefix=app.get("route_prefix", "/"))
    return f"http://{http['host']}:{http['port']}"
