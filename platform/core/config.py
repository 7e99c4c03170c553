"""Typed run configuration: YAML per family + ``key=value`` overrides, validated.

Every section is a dataclass. Unknown keys and values of the wrong type fail with a
:class:`ConfigError` naming the dotted key. The ``model`` and ``loss`` sections are typed
by the family's own dataclasses (see ``raygan.platform.core.registry``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from raygan.platform.core.errors import ConfigError
from raygan.platform.core.registry import FAMILIES, TASKS




class _Loader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false, so ``off``/``no``/``on`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


#: where local defaults live (demo shards, the sqlite MLflow store, Ray storage)
DEFAULT_WORKDIR = ".raygan"


@dataclass
class StorageConfig:
    #: S3 endpoint for shards, checkpoints and artifacts (None: AWS_ENDPOINT_URL, then AWS)
    endpoint_url: Optional[str] = None
    #: attempts per S3 request before a clear error (bounded retries)
    max_attempts: int = 3
    connect_timeout_s: float = 5.0   # seconds to open a connection to the S3 endpoint
    read_timeout_s: float = 60.0     # seconds to wait for an S3 response
    #: how long reads retry an unreachable, throttling or failing (5xx) storage before the
    #: worker fails with "storage unreachable for N s" (Ray's restart then retries it)
    outage_budget_s: float = 300.0
    #: longest wait between two retries (exponential backoff with jitter up to this)
    retry_max_s: float = 30.0


@dataclass
class DataConfig:
    #: training shard set: a local folder or s3://bucket/prefix (None: embedded demo shards)
    train: Optional[str] = None
    #: validation shard set (None: the val split next to ``train``)
    val: Optional[str] = None
    #: degradation task (None: the family's default); see raygan.datasets.degradations
    task: Optional[str] = None
    quality: int = 10          # JPEG quality q (1..100)
    bits: int = 4              # bit depth k of the quantized input (1..7)
    expand: str = "mig"        # how k bits return to 8: zp | mig | br
    scale: int = 4             # downscale factor for super-resolution
    channels: int = 3          # 3 = RGB, 1 = BT.601 Y (MATLAB-compatible)
    patch: int = 80            # training crop (target resolution)
    batch: int = 16            # per-worker batch size
    augment: bool = True       # random flips and 90-degree rotations
    shuffle_buffer: int = 256  # samples held and drawn at random per data stream
    loader_workers: int = 1    # torch DataLoader worker processes per training worker
    #: training patches cut from each decoded record (each its own crop, augmentation and
    #: degradation); > 1 spares decoding a whole photo per small patch (an epoch of
    #: train.epoch_unit=images then counts every record that many times)
    crops_per_record: int = 1
    #: raw records fetched and tar-parsed ahead of the decode by a thread of the loader
    #: (0: in line, on the decoding thread)
    prefetch_records: int = 16
    val_crop: Optional[int] = None        # centre crop of validation images (None: full)
    val_max_images: Optional[int] = None  # cap on validation images (None: all)
    hole_min: float = 0.25     # inpainting: hole area fraction range
    hole_max: float = 0.5      # inpainting: upper end of that range
    min_size: int = 0          # training: skip records with a side below this (0: none)
    #: how a training image becomes a patch: random (a random data.patch crop) |
    #: center_square_resize (the centred largest square, resized to data.patch; DequantizerNet)
    crop: str = "random"
    #: training images whose short side is below the patch: resize (scale up, short side =
    #: the patch, aspect kept) | pad (reflect-pad up to the patch) | skip (drop the record)
    small_images: str = "resize"
    #: a worker that has skipped more than this fraction of the records it read stops the
    #: run with the reasons (1.0: never); checked after each pass and every 200 records
    max_skip_fraction: float = 0.05


@dataclass
class OptimConfig:
    optimizer: str = "adam"    # adam | rmsprop
    lr_g: float = 2e-4         # generator learning rate
    lr_d: float = 1e-4         # discriminator learning rate
    betas: Tuple[float, float] = (0.5, 0.999)  # Adam (beta1, beta2)
    weight_decay: float = 0.0  # L2 weight decay of both optimizers
    lr_step: int = 20000       # multiply lr by lr_gamma every lr_step iterations
    #: the same in epochs (train.epoch_unit), resolved from the data; wins over lr_step when set
    lr_step_epochs: Optional[float] = None
    lr_gamma: float = 0.5      # lr factor of each step (lr_schedule=step)
    #: step: x lr_gamma every lr_step iterations (the papers'); cosine: from lr to 0 over the
    #: run (G over train.steps, D over its adversarial phase); lr_step/lr_gamma then unused
    lr_schedule: str = "step"
    #: when G's schedule starts, and which steps it counts: adversarial (default) = with the
    #: first adversarial step, counting adversarial steps only, G's lr constant at lr_g through
    #: generator-only pretraining (WCDGAN's adversarial phase starts at 2e-4 / 1e-4);
    #: pretraining = from step 0, pretraining steps counted (the engine's earlier behaviour).
    #: D's schedule always counts adversarial steps only (D does not train before them).
    lr_schedule_start: str = "adversarial"
    grad_clip: float = 0.0     # max grad norm (0: off)


@dataclass
class TrainConfig:
    steps: int = 100000        # total iterations, pretraining included
    #: total length in epochs (train.epoch_unit), resolved from the data; wins over steps when set
    epochs: Optional[float] = None
    #: what an epoch is: images (one sample per image) | patches (every epoch_patch square
    #: at stride epoch_stride of every image, counted from the manifest's image sizes)
    epoch_unit: str = "images"
    epoch_patch: Optional[int] = None   # patch side for epoch_unit=patches (None: data.patch)
    epoch_stride: Optional[int] = None  # stride for epoch_unit=patches (None: epoch_patch)
    pretrain_epochs: float = 0.0  # generator-only epochs before adversarial training
    pretrain_steps: Optional[int] = None  # overrides pretrain_epochs when set
    ema_decay: float = 0.999   # EMA of G (0: off)
    amp: str = "none"          # none | bf16 | fp16
    compile: bool = False      # torch.compile G and D (in place; pays on GPUs, first steps slower)
    channels_last: bool = False  # channels-last weights and batches (pays on GPU tensor cores)
    #: split each step's batch over this many threads of the one process, each running its
    #: part forward and backward on torch threads / batch_threads intra-op threads; the
    #: gradients add up and each optimizer steps once (the same update as the whole batch).
    #: Used where a split is safe and has cores to use: on a CPU, in a run of one worker (DDP
    #: workers step their batch whole), at most one thread per torch thread; a generator with
    #: BatchNorm or Dropout is refused. Small convolutions split over intra-op threads
    #: poorly; split over the batch they keep every core busy (jobs/bench_train.py)
    batch_threads: int = 1
    #: DDP gradient all-reduce compression: none | fp16 | bf16 (halves the bytes sent)
    ddp_compression: str = "none"
    log_every: int = 50        # log losses (rank 0 prints a progress line) every N steps
    val_every: int = 2000      # validate (and checkpoint) every N steps, and at the last step
    device: str = "auto"       # auto | cpu | cuda
    init_from: Optional[str] = None  # start G (and D) from a checkpoint dir or models:/ URI
    #: perceptual network weights: a path/URI, "auto" (torch hub cache), or "random"
    perceptual_weights: str = "auto"
    #: LPIPS backbone weights: a path, "auto" (torch hub cache, skipped if absent), or "off"
    lpips_weights: str = "auto"
    val_border: int = 0        # pixels cropped at each border before metrics
    val_grid_images: int = 4   # images in the logged degraded|output|target grid


@dataclass
class RayConfig:
    workers: int = 2           # Ray Train workers (DDP ranks)
    use_gpu: bool = False      # one GPU per worker, NCCL all-reduce (false: CPU, gloo)
    #: CPUs Ray reserves for each worker; None: the cluster's CPUs shared among the workers
    #: (at most one node's, at least 1), so one worker on a 2-core machine gets both
    cpus_per_worker: Optional[float] = None
    #: torch intra-op threads of each worker; None: its whole CPUs (floor(cpus_per_worker), >= 1)
    threads_per_worker: Optional[int] = None
    address: Optional[str] = None   # Ray cluster (None: attach to RAY_ADDRESS or start a local Ray)
    storage: Optional[str] = None   # Ray Train storage path, local or s3:// (None: workdir)
    #: a local storage path (and sqlite MLflow) is on a filesystem every node mounts; without
    #: it, a cluster with more than one alive node refuses local paths (use s3://)
    shared_storage: bool = False
    name: Optional[str] = None      # Ray run name (None: <family>-<timestamp>)
    max_failures: int = 3           # Ray Train restarts from the latest checkpoint after a failure
    keep_checkpoints: int = 2       # best N by validation PSNR (the latest is kept too)
    #: where Ray places the workers: pack (fill a node first: NCCL within a node, what GPU
    #: nodes want) or spread (one per node while nodes last)
    placement: str = "pack"
    #: elastic training: Ray Train's num_workers=(min_workers, workers), meant to go on with as
    #: few as this many workers after a lost node; in the two-node test Ray 2.60 restarted
    #: with the lost node still counted and timed out, so a replacement node is what works;
    #: None: exactly ray.workers
    min_workers: Optional[int] = None
    #: seconds to wait for the workers' resources (at the start, or after a lost node) before
    #: the run stops with one line saying what it waited for
    capacity_wait_s: float = 300.0
    #: ship the driver's raygan to every worker as py_modules (a submitted checkout runs as
    #: submitted); false: each node runs its installed raygan. Either way a node whose
    #: raygan differs from the driver's is refused before training
    ship_code: bool = True


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None   # MLflow tracking URI (None: MLFLOW_TRACKING_URI, else local sqlite)
    experiment: str = "raygan"           # MLflow experiment of the runs
    registered_model: Optional[str] = None  # registry name (None: raygan-<family>-<task tag>)
    register: bool = True                # register the best generator as a new model version
    #: point this alias (e.g. champion, what deploy/serve_config.yaml serves) at the version
    #: the run registers; None: no alias (a sweep's --promote moves champion)
    alias: Optional[str] = None


@dataclass
class RunConfigSpec:
    family: str = "wcdgan"  # registered GAN family: dagan | dequantizer | facesr | pan | wcdgan
    seed: int = 0           # seeds weights, data order and crops, and a sweep's trials
    #: where local defaults live: demo shards, sqlite MLflow, Ray storage
    workdir: str = DEFAULT_WORKDIR
    preset: str = "paper"  # a label: "paper" or the name of a CPU-sized preset
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    loss: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


# ----------------------------------------------------------------------------- typing


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(value, hints[name], key)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


# ------------------------------------------------------------------------ load + override


def parse_override(text: str) -> Tuple[List[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


#: ``(section, wins, other)``: keys that say the same thing in two units. ``wins`` is used
#: when it is not null. A YAML layer (over its ``base:``) or an override that sets ``other``
#: without ``wins`` resets ``wins`` to null, so the value set last is the one used
#: (``--steps 500`` on a config given in ``train.epochs`` trains 500 steps).
EXCLUSIVE_KEYS = (
    ("train", "epochs", "steps"),
    ("optim", "lr_step_epochs", "lr_step"),
    ("train", "pretrain_steps", "pretrain_epochs"),
)


def _reset_exclusive(merged: Dict[str, Any], layer: Dict[str, Any]) -> None:
    """Apply the EXCLUSIVE_KEYS rule for a ``layer`` merged into ``merged`` (in place)."""
    for section, wins, other in EXCLUSIVE_KEYS:
        sec = layer.get(section)
        if isinstance(sec, dict) and other in sec and wins not in sec:
            target = merged.get(section)
            if isinstance(target, dict) and target.get(wins) is not None:
                target[wins] = None


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        if len(path) == 2:
            _reset_exclusive(raw, {path[0]: {path[1]: value}})
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return raw


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    if base:
        parent = _read_yaml((path.parent / base).resolve())
        layer = data
        data = _deep_merge(parent, data)
        _reset_exclusive(data, layer)
    return data


def _deep_merge(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_CHOICES = {
    "data.expand": ("zp", "mig", "br"),
    "data.channels": (1, 3),
    "optim.optimizer": ("adam", "rmsprop"),
    "optim.lr_schedule": ("step", "cosine"),
    "optim.lr_schedule_start": ("adversarial", "pretraining"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.ddp_compression": ("none", "fp16", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.epoch_unit": ("images", "patches"),
    "data.crop": ("random", "center_square_resize"),
    "data.small_images": ("resize", "pad", "skip"),
    "ray.placement": ("pack", "spread"),
}
_POSITIVE = (
    "data.patch", "data.batch", "data.scale", "data.shuffle_buffer", "data.crops_per_record", "train.steps",
    "train.log_every", "train.val_every", "train.batch_threads", "optim.lr_step", "ray.workers",
    "ray.keep_checkpoints", "storage.max_attempts", "storage.outage_budget_s", "storage.retry_max_s",
)


def _validate(cfg: RunConfigSpec) -> None:
    flat = flatten(to_dict(cfg))
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}: {flat[key]!r} is not one of {', '.join(map(str, choices))}")
    for key in _POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(f"{key}: must be > 0, got {flat[key]!r}")
    if not 1 <= cfg.data.quality <= 100:
        raise ConfigError(f"data.quality: JPEG quality must be in 1..100, got {cfg.data.quality}")
    if not 1 <= cfg.data.bits <= 7:
        raise ConfigError(f"data.bits: bit depth must be in 1..7, got {cfg.data.bits}")
    if not 0 < cfg.data.hole_min <= cfg.data.hole_max < 1:
        raise ConfigError("data.hole_min/hole_max: need 0 < hole_min <= hole_max < 1")
    if cfg.data.loader_workers < 0:
        raise ConfigError("data.loader_workers: must be >= 0")
    if cfg.data.prefetch_records < 0:
        raise ConfigError("data.prefetch_records: must be >= 0 (0 reads records in line)")
    try:
        TASKS.get(cfg.data.task)
    except KeyError as exc:
        raise ConfigError(f"data.task: {exc.args[0]}") from None
    if not 0 <= cfg.data.max_skip_fraction <= 1:
        raise ConfigError(f"data.max_skip_fraction: must be in [0, 1], got {cfg.data.max_skip_fraction}")
    for key in ("train.epochs", "optim.lr_step_epochs", "train.epoch_patch", "train.epoch_stride",
                "ray.cpus_per_worker", "ray.threads_per_worker"):
        if flat[key] is not None and not flat[key] > 0:
            raise ConfigError(f"{key}: must be > 0 (or null), got {flat[key]!r}")
    if cfg.ray.min_workers is not None and not 1 <= cfg.ray.min_workers <= cfg.ray.workers:
        raise ConfigError(f"ray.min_workers: must be in 1..ray.workers ({cfg.ray.workers}), got {cfg.ray.min_workers}")
    if not cfg.ray.capacity_wait_s > 0:
        raise ConfigError(f"ray.capacity_wait_s: must be > 0, got {cfg.ray.capacity_wait_s!r}")
    if cfg.train.pretrain_epochs < 0:
        raise ConfigError(f"train.pretrain_epochs: must be >= 0, got {cfg.train.pretrain_epochs}")
    if not 0 <= cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must be in [0, 1), got {cfg.train.ema_decay}")
    for key in ("optim.lr_g", "optim.lr_d"):
        if not flat[key] > 0:
            raise ConfigError(f"{key}: learning rate must be > 0, got {flat[key]!r}")


def build_config(raw: Dict[str, Any]) -> RunConfigSpec:
    """Validate a raw mapping (YAML + overrides) into a RunConfigSpec.

    Families and tasks are looked up in ``raygan.platform.core.registry``, which the entry points
    fill (``import raygan.models``, ``import raygan.datasets.tasks``)."""
    raw = dict(raw)
    family_name = raw.get("family", RunConfigSpec.family)
    if not isinstance(family_name, str):
        raise ConfigError(f"family: expected a family name, got {family_name!r}")
    try:
        family = FAMILIES.get(family_name)
    except KeyError as exc:
        raise ConfigError(f"family: {exc.args[0]}") from None
    model = from_dict(family.ModelConfig, raw.pop("model", None), "model")
    # loss keys an older raygan wrote (a stored run's config, an old YAML) under today's names
    loss = from_dict(family.LossConfig, family.translate_loss_keys(raw.pop("loss", None)), "loss")
    cfg = from_dict(RunConfigSpec, raw)
    cfg.model, cfg.loss = model, loss
    if cfg.data.task is None:
        cfg.data.task = family.task
    _validate(cfg)
    return cfg


def load_config(path: Optional[Union[str, Path]], overrides: List[str] = (),
                family: Optional[str] = None) -> RunConfigSpec:
    """Read a family YAML (or the family's default one), apply overrides, validate.

    ``path`` is a file, or the name of a YAML shipped with a registered family
    (``models/configs``, package data), e.g. ``wcdgan_cpu_demo.yaml``."""
    if path is None:
        if family is None:
            raise ConfigError("no config file and no family given")
        try:
            cls = FAMILIES.get(family)
        except KeyError as exc:
            raise ConfigError(f"family: {exc.args[0]}") from None
        path = cls.config_dir() / cls.default_config
    raw = _read_yaml(find_config(path))
    if family is not None:
        raw.setdefault("family", family)
    raw = apply_overrides(raw, list(overrides))
    return build_config(raw)


def resolve_tracking_uri(explicit: Optional[str] = None, workdir: Optional[str] = None) -> str:
    """The MLflow tracking URI every entry point uses: ``explicit`` (``mlflow.tracking_uri``,
    ``--tracking-uri``), else ``MLFLOW_TRACKING_URI``, else the local sqlite store
    ``<workdir>/mlflow.db`` (``workdir`` default ``.raygan``, as ``make demo`` writes it)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(workdir or DEFAULT_WORKDIR).resolve() / 'mlflow.db')}"


def config_dirs() -> List[Path]:
    """The folders of the registered families' YAML files (package data)."""
    return sorted({FAMILIES.get(name).config_dir() for name in FAMILIES})


def find_config(path: Union[str, Path]) -> Path:
    """``path`` if it is a file, else the shipped config of that name (ConfigError if neither)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.name == str(path):
        for d in config_dirs():
            if (d / p.name).is_file():
                return d / p.name
    shipped = ", ".join(sorted({f.name for d in config_dirs() for f in d.glob("*.yaml")}))
    raise ConfigError(f"config file {path} does not exist (shipped configs: {shipped or 'none'})")
