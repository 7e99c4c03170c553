"""The restoration endpoints: a Ray Serve application built from the MLflow registry.

``build_app(args)`` (the import path in ``deploy/serve_config.yaml``) makes one
``restore-<task>`` deployment per task, each holding one generator, and an ``Ingress``
deployment: FastAPI inside Serve, with OpenAPI docs at ``/docs``::

    GET  /                    a page: pick a task and a photo, see before / after
    GET  /healthz             {"status": "ok", "tasks": [...], "code": <raygan fingerprint>}  (no token)
    GET  /v1/models           the model behind each task: name, version, source, scale
    POST /v1/<task>           image bytes (raw body or multipart field "image") -> restored
    POST /v1/<task>/degrade   the same photo degraded as the model's training data was

Query options of ``POST /v1/<task>``: ``format`` png (default) | jpeg | webp, ``quality``
(JPEG/WebP), ``bits`` (the input's bit depth when a 16-bit file holds fewer bits, e.g. 12),
``tile`` (a smaller tile than the task's). Responses carry ``X-Model-Name``, ``X-Model-Version`` and
``X-Model-Task``. Errors are JSON ``{"error": "..."}`` with a 4xx code; every ``/v1`` route
needs ``Authorization: Bearer <token>``, the token read from ``RAYGAN_SERVE_TOKEN`` or the
file named by ``RAYGAN_SERVE_TOKEN_FILE`` (the Ingress refuses to start without one).

**Models.** A task's ``model`` is a model URI: ``models:/name@alias`` (e.g. ``@champion``,
what the sweeps promote), ``models:/name/<version>``, ``runs:/<id>/generator``, or a
checkpoint folder (local or ``s3://``). ``build_app`` resolves an alias to its version at
deploy time and hands it to the replicas as their ``user_config``: promoting a new champion
and deploying again rolls the replicas over to it. A replica loads and warms its generator
(:class:`TaskModel`) before it takes traffic; ``serve.run`` from Python replaced the replica
on every redeploy in the tests (a rolling update that failed no request), and where Serve
only reconfigures a running replica (a changed user_config under ``serve deploy``),
``reconfigure`` loads the new generator beside the old one and swaps it in. A reference
that does not resolve fails ``build_app`` with one line.

**Any size.** The ingress cuts an image into overlapping tiles (:mod:`raygan.deploy.tiling`)
and sends each to the task's deployment, whose ``@serve.batch`` method stacks tiles of equal
shape from concurrent requests into one forward pass. At most ``tiles_in_flight`` tiles of a
request are outstanding, so the generator's memory is bounded by the tile size.
Weights are read from safetensors only; nothing is unpickled from a request or storage.

**Rooms.** :mod:`raygan.deploy.settings` (the ``args``), :mod:`raygan.deploy.task_model`
(model references and the generator a replica holds), :mod:`raygan.deploy.replica` (the
``restore-<task>`` deployment), :mod:`raygan.deploy.ingress` (FastAPI, the routes above);
this module builds the application from them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Optional

from raygan.deploy.settings import ServeSettings, read_token
from raygan.deploy.task_model import (CPU_FORWARD_PIXELS, SERVABLE_TASKS, TaskModel,
                                      resolve_model_ref)
from raygan.platform.core.errors import ModelRefError

# what callers import from here (the offline restore, the benchmark, the CLI, the tests)
__all__ = ["CPU_FORWARD_PIXELS", "SERVABLE_TASKS", "ModelRefError", "ServeSettings", "TaskModel",
           "build_app", "build_application", "read_token", "resolve_model_ref"]


def build_app(args: Dict[str, Any]):
    """The Serve application of ``args`` (see :class:`ServeSettings`); model references are
    resolved here, so one that does not exist fails the deploy with one line. This is the
    import path of ``deploy/serve_config.yaml``: Serve calls an application builder with the
    config's ``args`` as its one parameter, and applies the config's ``deployments`` itself."""
    return build_application(args)


def build_application(args: Optional[Dict[str, Any]] = None,
                      deployment_options: Optional[Dict[str, Dict[str, Any]]] = None):
    """:func:`build_app` with ``deployment_options`` (name -> ``.options()`` kwargs, the
    ``deployments`` entries of a Serve config) applied here, for programmatic runs
    (:mod:`raygan.deploy.serving`), where no Serve config file does it."""
    from raygan.platform.core.config import resolve_tracking_uri

    settings = ServeSettings.from_args(args)
    # an absolute URI: replicas need not share the deployer's working directory
    settings.tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    opts = {k: {o: v for o, v in d.items() if o != "name"} for k, d in (deployment_options or {}).items()}
    from raygan.deploy.ingress import Ingress
    from raygan.deploy.replica import RestoreDeployment

    bound = {}
    for task, spec in settings.tasks.items():
        ref = resolve_model_ref(spec["model"], settings.tracking_uri)
        name = f"restore-{task}"
        bound[task] = RestoreDeployment.options(name=name, user_config=ref, **opts.get(name, {})).bind(
            task, asdict(settings))
    return Ingress.options(**opts.get("Ingress", {})).bind(bound, asdict(settings))
