"""Ray Train glue: the per-worker loop and the driver that builds the TorchTrainer.

The per-worker loop is :func:`train_loop_per_worker`; :func:`run_loop` is the same loop
without Ray (one process), used by tests and benchmarks. The driver
(:func:`run_training`) resolves data and storage, creates the MLflow run, runs the
TorchTrainer with failure recovery and best-N checkpointing, then logs and registers the
best generator and returns the JSON summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from PIL import Image

from raygan.datasets.pipeline import DataPlan, make_train_loader, make_val_loader
from raygan.platform.core import metrics as M
from raygan.platform.core import counters, storage, submitted_code
from raygan.platform import tracking
from raygan.platform.checkpoint import (load_checkpoint, load_weights, newest_complete_checkpoint, read_meta,
                                        save_checkpoint)
from raygan.platform.core.config import RunConfigSpec, build_config, flatten, to_dict
from raygan.platform.core.errors import CapacityError, ConfigError
from raygan.platform.engine import GANEngine, build_family, count_parameters, resolve_batch_threads
from raygan.platform.plan import RunPlan, resolve_run_plan, resolve_schedule, with_settings
from raygan.platform.tracking import RunLogger, fetch_checkpoint, run_tracking_uri


# Variables forwarded to Ray workers: endpoints and regions only. Credentials are never
# copied into Ray's runtime env; workers read them from their own environment.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_DISABLE_TELEMETRY", "TORCH_HOME")


def run_loop(run: Union[RunPlan, RunConfigSpec], *, rank: int = 0, world: int = 1,
             device: Optional[torch.device] = None, wrap_model=None,
             restore_dir: Optional[str] = None, logger=None,
             report: Optional[Callable[[Dict[str, Any], Optional[str]], None]] = None,
             checkpoint_root: Optional[str] = None, plan: Optional[DataPlan] = None) -> Dict[str, Any]:
    """The training loop shared by Ray workers and plain single-process runs.

    ``run`` is the driver's :class:`~raygan.platform.plan.RunPlan` (a config alone is resolved
    into one here, over ``plan`` or the data its config names); the loop takes its iterations,
    generator-only phase and cadence from the plan's schedule and never changes the config.
    ``report(metrics, checkpoint_dir_or_None)`` is called after every validation (Ray:
    ``ray.train.report``); ``restore_dir`` resumes from a checkpoint directory.
    The counters (:mod:`~raygan.platform.core.counters`): what the training stream counted,
    carried in its batches, plus what this process's other storage calls (MLflow logging,
    Ray's checkpoint I/O, validation reads) counted since the run started.
    """
    process_at_start = counters.PROCESS.copy()
    if not isinstance(run, RunPlan):
        run = resolve_run_plan(run, world, plan)
    elif run.world != world:  # an elastic run started with fewer workers: epochs count for these
        run = dataclasses.replace(run, schedule=resolve_schedule(run.cfg(), world, run.data.train), world=world)
    cfg, schedule, plan = run.cfg(), run.schedule, run.data
    torch.manual_seed(cfg.seed + rank)
    engine = GANEngine(cfg, device=device, wrap_model=wrap_model, schedule=schedule)
    resumed_from = 0
    if restore_dir is not None:
        load_checkpoint(restore_dir, engine)
        resumed_from = engine.step
    elif cfg.train.init_from:
        initialize_from(engine, cfg.train.init_from, cfg)

    lpips = M.LPIPSMetric(cfg.train.lpips_weights, engine.device)
    # Reseed the stream on resume so a restarted run does not replay the same samples.
    loader = make_train_loader(plan, cfg.data, rank, world, seed=cfg.seed + 7919 * engine.step)
    val_loader = make_val_loader(plan, cfg.data, rank, world)
    batches = iter(loader)
    streamed = counters.Counters()  # what the training stream's batches carried, this rank
    running: Dict[str, float] = {}
    n_running = 0
    last: Dict[str, Any] = {}
    t0 = time.time()
    images = 0

    def validate_and_report() -> None:
        nonlocal last
        val = engine.validate(val_loader, lpips, grid_images=cfg.train.val_grid_images if rank == 0 else 0)
        counted = streamed.copy().merge(counters.PROCESS.since(process_at_start))
        metrics = {f"val_{k}": v for k, v in val["metrics"].items()}
        # skipped_records counts bad records only; storage outages are counted apart
        metrics.update(step=engine.step, val_images=val["count"], **counted.reduce(),
                       resumed_from_step=resumed_from,
                       images_per_s=images / max(time.time() - t0, 1e-9) * world)
        last = metrics
        if logger is not None:
            logger.metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                           step=engine.step)
            if val["grid"]:
                grid = M.image_grid([[M.to_uint8_image(x) for x in row] for row in val["grid"]])
                logger.image(Image.fromarray(grid), f"val/grid_step_{engine.step:08d}.png")
        ckpt_dir = None
        if rank == 0:
            root = checkpoint_root or tempfile.mkdtemp(prefix="raygan-ckpt-")
            ckpt_dir = str(save_checkpoint(Path(root) / f"checkpoint_{engine.step:08d}", engine,
                                           {"family": cfg.family, "step": engine.step,
                                            "config": to_dict(cfg), "metrics": metrics}))
        if report is not None:
            report(metrics, ckpt_dir)

    while engine.step < schedule.steps:
        batch = next(batches)
        streamed.merge(batch.pop("counters", {}))
        logs = engine.train_step(batch)
        images += batch["target"].shape[0]
        for k, v in logs.items():
            running[k] = running.get(k, 0.0) + v
        n_running += 1
        if engine.step % schedule.log_every == 0:
            means = {k: v / n_running for k, v in running.items()}
            if logger is not None:
                logger.metrics({f"train_{k}": v for k, v in means.items()}, step=engine.step)
                mine = streamed.copy().merge(counters.PROCESS.since(process_at_start))  # rank 0's
                logger.metrics({f"{k}_rank0": v for k, v in mine.values.items()}, step=engine.step)
            if rank == 0:
                print(progress_line(engine.step, schedule.steps, means, images * world,
                                    time.time() - t0, resumed_from), flush=True)
            running, n_running = {}, 0
        if engine.step % schedule.val_every == 0 or engine.step == schedule.steps:
            validate_and_report()
    if not last:  # resumed at the final step: validate once more so the run has metrics
        validate_and_report()
    if world > 1:  # DDP ranks must end with the same weights; one line each says whether they do
        print(f"raygan: rank {rank} ends at step {engine.step} with weights {weights_digest(engine)}",
              flush=True)
    return last


def weights_digest(engine: GANEngine) -> str:
    """12 hex digits of a hash over the parameters of G, D and G's EMA: what DDP keeps equal
    on every rank (D's normalisation statistics are buffers each rank keeps from its own
    batches, ``broadcast_buffers=False``, so buffers are left out)."""
    import hashlib

    nets = {"generator": engine.generator, "discriminator": engine.discriminator,
            "generator_ema": engine.ema.model if engine.ema is not None else None}
    h = hashlib.sha256()
    for name, net in nets.items():
        for key, tensor in (net.named_parameters() if net is not None else ()):
            h.update(f"{name}.{key}".encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


#: loss keys shown on the console, in this order, when a family logs them
_PROGRESS_KEYS = ("g_total", "d_total", "g_pixel", "g_perceptual", "g_adversarial", "g_fine")


def progress_line(step: int, total: int, losses: Dict[str, float], images: int,
                  elapsed_s: float, start_step: int = 0) -> str:
    """``step 40/400 (10%) | g_total 0.0213 g_pixel 0.0213 | 12.3 img/s | ETA 4m05s``.

    ``images`` is counted over all ranks since ``start_step`` (a resumed run's first step).
    """
    shown = " ".join(f"{k} {losses[k]:.4g}" for k in _PROGRESS_KEYS if k in losses)
    done = max(step - start_step, 0)
    rate = images / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - step) * elapsed_s / done if done else float("nan")
    eta_txt = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
    phase = " pretrain" if losses.get("pretraining", 0.0) >= 1.0 else ""
    return (f"step {step}/{total} ({100 * step // max(total, 1)}%){phase} | {shown} | "
            f"{rate:.1f} img/s | ETA {eta_txt}")


def initialize_from(engine, uri: str, cfg: RunConfigSpec) -> None:
    """Start ``engine`` from another run's weights (checkpoint dir, s3://, runs:/ or models:/).

    Weights only: G (and D and G-EMA when the source is a checkpoint); optimizers, step and
    schedules start fresh, as for DequantizerNet's Phi run initialised from Gimel.
    """
    local = fetch_checkpoint(uri, run_tracking_uri(cfg), cfg.storage)
    engine.load_state(load_weights(local), None)


# ---------------------------------------------------------------------------- Ray worker


def train_loop_per_worker(loop_config: Dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    run = RunPlan.from_dict(loop_config["run"])  # the driver's, resolved once
    cfg = run.cfg()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if loop_config.get("threads"):  # Ray sets OMP_NUM_THREADS; torch may have read another
        torch.set_num_threads(int(loop_config["threads"]))
    me = submitted_code.describe()
    print(f"raygan: rank {rank} on node {me['node']} runs code {me['code']} from {me['path']}", flush=True)
    if loop_config.get("code") and me["code"] != loop_config["code"]:
        raise submitted_code.CodeMismatchError(
            f"rank {rank} on node {me['node']} runs raygan {me['code']} from {me['path']}, not the "
            f"driver's {loop_config['code']}")
    if rank == 0:
        split = resolve_batch_threads(cfg.train.batch_threads, world, torch.get_num_threads(),
                                      cfg.ray.use_gpu, cfg.data.batch)
        print(f"raygan: {world} worker(s) x {torch.get_num_threads()} torch thread(s)"
              + (f", each step's batch split over {split} threads" if split > 1 else ""), flush=True)
    logger = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        logger = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"], cfg.storage)
    def report(metrics, ckpt_dir):
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=ckpt,
                         checkpoint_dir_name=f"checkpoint_{int(metrics['step']):08d}" if ckpt else None)

    with contextlib.ExitStack() as stack:
        checkpoint = ray.train.get_checkpoint()
        restore_dir = stack.enter_context(checkpoint.as_directory()) if checkpoint is not None else None
        if loop_config.get("run_storage"):
            # Ray's run record can miss the newest checkpoints (see newest_complete_checkpoint)
            known = read_meta(restore_dir)["step"] if restore_dir else -1
            newer = newest_complete_checkpoint(loop_config["run_storage"], cfg.storage,
                                               stack.enter_context(tempfile.TemporaryDirectory()), known)
            if newer is not None:
                if rank == 0:
                    print(f"raygan: resuming from {newer.name} in {loop_config['run_storage']}"
                          f" (Ray's run record {'ends at step %d' % known if known >= 0 else 'has none'})"
                          f" on {world} worker(s)", flush=True)
                restore_dir = str(newer)
            elif restore_dir is not None and rank == 0:
                print(f"raygan: resuming from {Path(checkpoint.path).name} in {loop_config['run_storage']} "
                      f"(step {known}) on {world} worker(s)", flush=True)
        _run_worker(run, rank, world, logger, report, restore_dir)


def _run_worker(run, rank, world, logger, report, restore_dir):
    import ray.train.torch

    run_loop(run, rank=rank, world=world, device=ray.train.torch.get_device(),
             wrap_model=ray.train.torch.prepare_model, restore_dir=restore_dir,
             logger=logger, report=report)


# ---------------------------------------------------------------------------- driver


def driver_runtime_env(cfg: RunConfigSpec, attached: bool, environ=None) -> Dict[str, Any]:
    """What this driver adds to the job's runtime env: the forwarded endpoints (those the
    job does not set itself: Ray refuses to merge a variable twice) and, with
    ``ray.ship_code``, the running raygan as ``py_modules`` when the workers would otherwise
    import another one (always on a cluster; locally only when the running raygan is not
    the one a new process would import)."""
    environ = os.environ if environ is None else environ
    job_env = submitted_code.job_runtime_env(environ)
    taken = set((job_env.get("env_vars") or {}))
    env = {k: environ[k] for k in FORWARDED_ENV if k in environ and k not in taken}
    if CAPACITY_ENV not in taken:  # read by Ray Train's controller, wherever it runs
        env[CAPACITY_ENV] = str(cfg.ray.capacity_wait_s)
    out: Dict[str, Any] = {"env_vars": env} if env else {}
    if cfg.ray.ship_code and (attached or submitted_code.importable_root() != submitted_code.package_root()):
        out.update(submitted_code.ship_runtime_env(job_env))
    return out


def init_ray(cfg: RunConfigSpec) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    runtime_env = driver_runtime_env(cfg, attached=bool(address))
    os.environ.setdefault(CAPACITY_ENV, str(cfg.ray.capacity_wait_s))  # a local Ray inherits it
    if address:
        ray.init(address=address, runtime_env=runtime_env or None, log_to_driver=True)
        reclaim_orphaned_placement_groups()
    else:
        # A private local cluster on loopback; "local" never attaches to a stale one.
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env=runtime_env.get("py_modules") and {"py_modules": runtime_env["py_modules"]},
                 num_cpus=max(os.cpu_count() or 1, int(cfg.ray.workers * (cfg.ray.cpus_per_worker or 1))))
    if address or runtime_env.get("py_modules"):
        # before any worker trains: every alive node imports the driver's raygan, or one line
        code = submitted_code.fingerprint()
        nodes = submitted_code.check_nodes(code)
        how = "shipped as py_modules" if runtime_env.get("py_modules") else "installed on every node"
        print(f"raygan: code {code} from {submitted_code.package_root()} ({how}); "
              f"{len(nodes)} node(s) import it: {', '.join(sorted({n['node'] for n in nodes}))}",
              flush=True)


# A job's status once its driver is gone (a driver job is SUCCEEDED whenever it is dead).
_ENDED_JOB = ("SUCCEEDED", "FAILED", "STOPPED")


def orphaned_placement_groups(groups, jobs, actors) -> list:
    """The ids of the placement groups Ray should already have removed: not detached, not
    removed, created by a job that has ended, and holding no live actor (a detached actor
    outlives the job that created it, and so do the groups it creates: Serve's replicas).
    ``groups``, ``jobs`` and ``actors`` are Ray state records (``list_placement_groups``,
    ``list_jobs``, ``list_actors``, with detail) or dicts with their fields. Pure."""
    def get(rec, key):
        return rec.get(key) if isinstance(rec, dict) else getattr(rec, key, None)

    ended = {get(j, "job_id") for j in jobs if str(get(j, "status")).split(".")[-1] in _ENDED_JOB}
    in_use = {get(a, "placement_group_id") for a in actors if get(a, "state") != "DEAD"}
    return [get(g, "placement_group_id") for g in groups
            if get(g, "creator_job_id") in ended and get(g, "is_detached") is False
            and str(get(g, "state")) != "REMOVED" and get(g, "placement_group_id") not in in_use]


def reclaim_orphaned_placement_groups() -> list:
    """Remove the placement groups a SIGKILLed driver left behind on an attached cluster.

    Ray removes a job's placement groups when the job ends, and Train's own cleaner removes its
    worker group's when the controller dies; a driver killed while a placement group was being
    created can still leave one CREATED, holding its CPUs for good (seen under load: a resumed
    sweep then waits for them forever). Best effort: the state API unreachable is one line."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray.util.state import list_actors, list_jobs, list_placement_groups

    try:
        groups = list_placement_groups(filters=[("state", "!=", "REMOVED")], detail=True,
                                       raise_on_missing_output=False)
        actors = list_actors(filters=[("state", "!=", "DEAD")], detail=True, limit=10000,
                             raise_on_missing_output=False)
        orphans = orphaned_placement_groups(groups, list_jobs(raise_on_missing_output=False), actors)
        for pg_id in orphans:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
    except Exception as exc:  # the cluster still trains; only the leftovers stay
        print(f"raygan: could not look for placement groups of ended jobs ({exc})", flush=True)
        return []
    if orphans:
        print(f"raygan: removed {len(orphans)} placement group(s) left by ended jobs: "
              f"{', '.join(p[:8] for p in orphans)}", flush=True)
    return orphans


def resolve_worker_cpus(cpus_per_worker: Optional[float], threads: Optional[int], workers: int,
                        cluster_cpus: float, node_cpus: float) -> Tuple[float, int]:
    """``(CPUs Ray reserves per worker, torch threads per worker)``.

    ``cpus_per_worker`` None shares the cluster's CPUs among the workers, capped at the largest
    node's (a worker runs on one node) and at least 1: one worker on a 2-core machine gets 2
    CPUs and 2 threads instead of leaving a core idle. ``threads`` None: the worker's whole
    CPUs (a fractional share, as in sweeps, gets 1)."""
    if cpus_per_worker is None:
        cpus_per_worker = float(max(1, min(int(node_cpus), int(cluster_cpus // max(workers, 1)))))
    return cpus_per_worker, int(threads) if threads else max(1, int(cpus_per_worker))


def _cluster_cpus() -> Tuple[float, float]:
    """(the cluster's CPUs, the largest alive node's CPUs)."""
    import ray

    nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return float(ray.cluster_resources().get("CPU", 1.0)), float(max(nodes, default=1.0))


# Where a submitted job's outputs go. `ray job submit --working-dir .` runs the entrypoint in
# a temporary copy, <session>/runtime_resources/working_dir_files/_ray_pkg_<hash>/, deleted
# with the Ray session; the default workdir (.raygan, relative) would put the MLflow db and
# the checkpoints there. A submitted job's default workdir is therefore $RAYGAN_HOME or
# ~/.raygan, announced on the job's log; explicit paths inside the copy are refused.
RAYGAN_HOME_ENV = "RAYGAN_HOME"
#: set by Ray's job supervisor for the entrypoint of `ray job submit` (runtime env + metadata)
RAY_JOB_ENV = submitted_code.RAY_JOB_ENV
#: how long Ray Train's controller waits for a worker group's resources (ray.capacity_wait_s)
CAPACITY_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def stable_workdir(environ=None) -> Path:
    """A submitted job's default workdir: ``$RAYGAN_HOME``, else ``~/.raygan``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(RAYGAN_HOME_ENV) or Path.home() / ".raygan").expanduser().resolve()


def ray_job_copy(environ=None, cwd=None) -> Optional[Path]:
    """The temporary working-dir copy this driver runs in, when it is a `ray job submit`
    entrypoint with a ``working_dir`` (None otherwise)."""
    environ = os.environ if environ is None else environ
    if RAY_JOB_ENV not in environ:
        return None
    cwd = Path(cwd or os.getcwd()).resolve()
    runtime_env = submitted_code.job_runtime_env(environ)
    return cwd if runtime_env.get("working_dir") or "runtime_resources" in cwd.parts else None


def local_tracking_path(uri: str) -> Optional[str]:
    """The file behind a local MLflow store (``sqlite:///x.db``, ``file:``, a path); None for a server."""
    if uri.startswith("sqlite:///"):
        return uri[len("sqlite:///"):]
    if uri.startswith("file:"):
        from urllib.parse import urlparse

        return urlparse(uri).path
    return None if "://" in uri else uri


def place_job_outputs(cfg: RunConfigSpec, environ=None, cwd=None) -> Tuple[RunConfigSpec, Optional[str]]:
    """For the driver of a submitted Ray job: the default workdir moves to
    :func:`stable_workdir` (a new config; ``cfg`` is left as it was), and workdir, storage or
    MLflow paths that fall inside the job's temporary working-dir copy are refused
    (ConfigError). Returns ``(config, line to print)``; the line is None when this is not a
    submitted job."""
    environ = os.environ if environ is None else environ
    if RAY_JOB_ENV not in environ:
        return cfg, None
    base = Path(cwd or os.getcwd()).resolve()
    note = ""
    if cfg.workdir == RunConfigSpec.workdir:
        cfg = with_settings(cfg, workdir=str(stable_workdir(environ)))
        note = f" (the default for submitted jobs; set --workdir or ${RAYGAN_HOME_ENV} to change it)"
    copy = ray_job_copy(environ, base)
    if copy is not None:
        tracking = cfg.mlflow.tracking_uri or environ.get("MLFLOW_TRACKING_URI")
        candidates = [("--workdir", cfg.workdir)]
        if cfg.ray.storage and storage.is_local(cfg.ray.storage):
            candidates.append(("--storage", storage.local_path(cfg.ray.storage)))
        if tracking and local_tracking_path(tracking) is not None:
            candidates.append(("MLFLOW_TRACKING_URI", local_tracking_path(tracking)))
        for what, path in candidates:
            resolved = (base / Path(path).expanduser()).resolve()
            if resolved == copy or copy in resolved.parents:
                raise ConfigError(
                    f"{what} {path} is inside Ray's temporary copy of --working-dir ({copy}), "
                    "which is deleted with the Ray session: give --workdir an absolute path (or "
                    f"leave it out for {stable_workdir(environ)}), --storage s3://... or an "
                    "absolute path, and MLFLOW_TRACKING_URI an MLflow server or an absolute sqlite path")
    return cfg, f"raygan: submitted Ray job; workdir {cfg.workdir}{note}"


def check_node_local_storage(storage_uri: str, nodes: int, shared_storage: bool,
                             tracking_uri: Optional[str] = None) -> None:
    """Refuse node-local checkpoint storage (and a local MLflow file) on a multi-node cluster.

    Workers on other nodes can neither write nor restore checkpoints under a path that only
    one node has; ``ray.shared_storage=true`` says the path is on a filesystem every node
    mounts. Raises ConfigError; pure (the caller counts the alive nodes)."""
    if nodes <= 1 or shared_storage:
        return
    fix = ("or set ray.shared_storage=true if every node mounts that path")
    if storage.is_local(storage_uri):
        raise ConfigError(
            f"ray.storage: {storage_uri} is a node-local path but the Ray cluster has {nodes} "
            f"alive nodes: use --storage s3://bucket/prefix, {fix}")
    if tracking_uri and local_tracking_path(tracking_uri) is not None:
        raise ConfigError(
            f"MLflow tracking {tracking_uri} is a node-local file but the Ray cluster has "
            f"{nodes} alive nodes (rank 0 may log from another node): set "
            f"MLFLOW_TRACKING_URI to an MLflow server, {fix}")


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _run_name(cfg: RunConfigSpec) -> str:
    return cfg.ray.name or f"{cfg.family}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run(cfg: RunConfigSpec) -> Dict[str, Any]:
    """What the driver settles before any Ray worker starts, failing fast with clear errors:
    the family and its loss networks (missing VGG19 weights), parameter counts, the data plan
    (missing shards, manifests that cannot count epochs) and the resolved schedule."""
    family = build_family(cfg)
    family.setup(torch.device("cpu"))
    run = resolve_run_plan(cfg, cfg.ray.workers)
    return {"family": family, "run": run, "plan": run.data, "schedule": run.schedule,
            "params_generator": count_parameters(family.build_generator()),
            "params_discriminator": count_parameters(family.build_discriminator())}


def check_run(cfg: RunConfigSpec) -> Dict[str, Any]:
    """``--check``: :func:`prepare_run` without training; what a run would use, as JSON."""
    prepared = prepare_run(cfg)
    plan, schedule = prepared["plan"], prepared["schedule"]
    return {"check": "ok", "family": cfg.family, "preset": cfg.preset, "task": cfg.data.task,
            "train": plan.train.uri, "train_records": plan.train.count, "val": plan.val.uri,
            "steps": schedule.steps, "lr_step": schedule.lr_step,
            "workers": cfg.ray.workers, "perceptual_init": prepared["family"].perceptual_init,
            "init_from": cfg.train.init_from,
            "params_generator": prepared["params_generator"],
            "params_discriminator": prepared["params_discriminator"]}


def build_torch_trainer(cfg: RunConfigSpec, loop_config: Dict[str, Any], storage_path: str,
                        filesystem: Any, *, callbacks=(), score: str = "val_psnr",
                        score_order: str = "max", cpus_per_worker: Optional[float] = None):
    """The TorchTrainer of one run (:func:`run_training`, and each trial of a sweep):
    ``cfg.ray.workers`` workers running :func:`train_loop_per_worker` with ``loop_config``,
    the loopback-bound rendezvous, restarts after failures, and the best
    ``cfg.ray.keep_checkpoints`` checkpoints by ``score`` kept under
    ``storage_path/cfg.ray.name``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raygan.platform.distributed import LoopbackTorchConfig

    cpus = cfg.ray.cpus_per_worker if cpus_per_worker is None else cpus_per_worker
    cpus, threads = resolve_worker_cpus(cpus, cfg.ray.threads_per_worker, cfg.ray.workers,
                                        *_cluster_cpus())
    # where this run's checkpoint folders are, for a worker to find the newest complete one
    storage_uri = f"s3://{storage_path}" if filesystem is not None else storage_path
    loop_config = {**loop_config, "threads": threads, "code": submitted_code.fingerprint(),
                   "run_storage": storage.join(storage_uri, cfg.ray.name, storage_cfg=cfg.storage)}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=worker_count(cfg), use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker={"CPU": cpus},
                                     placement_strategy=cfg.ray.placement.upper()),
        torch_config=LoopbackTorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        run_config=RunConfig(
            name=cfg.ray.name, storage_path=storage_path, storage_filesystem=filesystem,
            # a worker group that cannot get its resources within ray.capacity_wait_s ends the
            # run (controller_failure_limit 0) instead of waiting forever
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures, controller_failure_limit=0),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.ray.keep_checkpoints,
                                               checkpoint_score_attribute=score,
                                               checkpoint_score_order=score_order),
            worker_runtime_env={"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}},
            callbacks=list(callbacks),
        ),
    )


def worker_count(cfg: RunConfigSpec):
    """ScalingConfig's num_workers: ``ray.workers``, or ``(ray.min_workers, ray.workers)``."""
    if cfg.ray.min_workers is not None and cfg.ray.min_workers < cfg.ray.workers:
        return (cfg.ray.min_workers, cfg.ray.workers)
    return cfg.ray.workers


def capacity_error(cfg: RunConfigSpec, exc: BaseException) -> Optional[CapacityError]:
    """A CapacityError naming what the run waited for, when ``exc`` is Ray Train's
    worker-group start timeout (else None)."""
    text = f"{type(exc).__name__}: {exc} {getattr(exc, 'controller_failure', '')!r}"
    if "WorkerGroupStartupTimeoutError" not in text and "startup timed out" not in text.lower():
        return None
    want = f"{cfg.ray.min_workers or cfg.ray.workers}"
    cpus = f"{cfg.ray.cpus_per_worker:g}" if cfg.ray.cpus_per_worker else "its share of the"
    res = f"{'1 GPU + ' if cfg.ray.use_gpu else ''}{cpus} CPU"
    return CapacityError(
        f"no capacity: waited {cfg.ray.capacity_wait_s:g} s (ray.capacity_wait_s) for {want} Ray Train "
        f"worker(s) of {res} each ({cfg.ray.placement}); add nodes, lower ray.workers / "
        f"ray.min_workers, or wait longer")


def run_training(cfg: RunConfigSpec, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train ``cfg`` on Ray; returns the summary printed by the jobs. ``cfg`` is not changed:
    what the driver settles (the work folder, the storage path, the run name) goes into the
    run's own config, and with the data and the schedule into its :class:`RunPlan`."""
    cfg, job_note = place_job_outputs(cfg)
    workdir = Path(cfg.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    runs_dir = workdir / "runs"
    runs_dir.mkdir(exist_ok=True)
    if resume == "latest":
        latest = runs_dir / f"latest-{cfg.family}.txt"
        if not latest.exists():
            raise ValueError(f"--resume: no earlier {cfg.family} run recorded in {runs_dir}; "
                             "name the run: --resume NAME")
        resume = latest.read_text().strip()
    name = resume or _run_name(cfg)
    settings = {"workdir": str(workdir), "ray.name": name}
    if cfg.ray.storage and storage.is_local(cfg.ray.storage):
        settings["ray.storage"] = str(Path(storage.local_path(cfg.ray.storage)).resolve())
    cfg = with_settings(cfg, **settings)
    # Fail fast, in the driver (clear errors, no Ray noise); the run plan (data, schedule) is
    # resolved once, here, and handed to the workers; the resolved iterations go into the params.
    prepared = prepare_run(cfg)
    family, run, schedule = prepared["family"], prepared["run"], prepared["schedule"]
    cfg = run.cfg()  # the run's config: the data it resolved recorded in it
    params_g, params_d = prepared["params_generator"], prepared["params_discriminator"]
    (runs_dir / f"latest-{cfg.family}.txt").write_text(name)

    storage_uri = cfg.ray.storage or str(workdir / "ray_results")
    storage_path, filesystem = storage.ray_storage(storage_uri, cfg.storage)

    tracking_uri = tracking.run_tracking_uri(cfg)
    init_ray(cfg)
    check_node_local_storage(storage_uri, alive_nodes(), cfg.ray.shared_storage, tracking_uri)
    if job_note:
        print(f"{job_note}\nraygan: checkpoints -> {storage_uri.rstrip('/')}/{name}, "
              f"MLflow -> {tracking_uri}", flush=True)
    cpus, threads = resolve_worker_cpus(cfg.ray.cpus_per_worker, cfg.ray.threads_per_worker,
                                        cfg.ray.workers, *_cluster_cpus())
    params = flatten(to_dict(cfg))
    params.update({"params_generator": params_g, "params_discriminator": params_d,
                   "resolved_cpus_per_worker": cpus, "resolved_threads_per_worker": threads,
                   "resolved_batch_threads": resolve_batch_threads(cfg.train.batch_threads, cfg.ray.workers,
                                                                   threads, cfg.ray.use_gpu, cfg.data.batch),
                   "perceptual_init": getattr(family, "perceptual_init", cfg.train.perceptual_weights),
                   "resolved_steps": schedule.steps, "resolved_lr_step": schedule.lr_step,
                   "resolved_pretrain_steps": schedule.pretrain_steps})
    run_id = tracking.start_run(cfg, name, resume is not None, params)

    trainer = build_torch_trainer(
        cfg, {"run": run.to_dict(), "mlflow_run_id": run_id,
              "tracking_uri": tracking_uri}, storage_path, filesystem, cpus_per_worker=cpus)
    logger = tracking.RunLogger(tracking_uri, run_id, cfg.storage)
    try:
        result = trainer.fit()
    except Exception as exc:
        logger.finish("FAILED")
        capacity = capacity_error(cfg, exc)
        if capacity is not None:
            raise capacity from None
        raise
    best = max(result.best_checkpoints or [], key=lambda cm: cm[1].get("val_psnr", float("-inf")),
               default=None)
    best_uri = best_metrics = None
    model_info: Dict[str, Any] = {}
    if best is not None:
        best_ckpt, best_metrics = best
        best_uri = f"s3://{best_ckpt.path}" if filesystem is not None else best_ckpt.path
        with best_ckpt.as_directory() as local:
            model_name = cfg.mlflow.registered_model or f"raygan-{cfg.family}-{family.task_tag()}"
            model_info = tracking.log_generator_model(
                tracking_uri, run_id, local, model_name if cfg.mlflow.register else None,
                alias=cfg.mlflow.alias)
    final = result.metrics or {}
    summary = {
        "ray_run_name": name,
        "mlflow_run_id": run_id,
        "mlflow_tracking_uri": tracking_uri,
        "best_checkpoint": best_uri,
        "best_val_psnr": (best_metrics or {}).get("val_psnr"),
        "params_generator": params_g,
        "params_discriminator": params_d,
        "steps": final.get("step"),
        "resumed_from_step": final.get("resumed_from_step"),
        "skipped_records": final.get("skipped_records"),
        "storage_retries": final.get("storage_retries"),
        "storage_wait_s": final.get("storage_wait_s"),
        "val_model": {k[4:]: v for k, v in final.items() if k.startswith("val_") and not k.startswith("val_input_") and k != "val_images"},
        "val_degraded_input": {k[10:]: v for k, v in final.items() if k.startswith("val_input_")},
        **model_info,
    }
    logger.metrics({"best_val_psnr": summary["best_val_psnr"]} if summary["best_val_psnr"] is not None else {},
                   step=int(final.get("step", 0) or 0))
    logger.text(json.dumps(summary, indent=2), "summary.json")
    logger.finish("FINISHED")
    return summary
