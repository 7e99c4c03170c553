"""A sweep's space: what ``--space`` names or a space YAML holds (:class:`SweepSpace`), checked
end to end before any trial (every range end and variant built into a run config), and the
points drawn from it once (:func:`sample_points`, keyed by :func:`trial_key`)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from raygan.platform.core.config import apply_overrides, build_config, to_dict, yaml_load
from raygan.platform.engine import build_family
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.registry import FAMILIES

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "grid")
#: an ablation point's key holding the variant's name
VARIANT = "variant"


@dataclass
class SweepSpace:
    """A weight search (``params``) or an ablation (``variants``), validated."""

    name: str
    params: Dict[str, Dict[str, list]] = field(default_factory=dict)
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "ablation" if self.variants else "search"


def lr_space(cfg) -> Dict[str, Dict[str, list]]:
    """Learning rates log-uniform over a decade each side of the base config's."""
    return {key: {"loguniform": [lr / 10, lr * 10]}
            for key, lr in (("optim.lr_g", cfg.optim.lr_g), ("optim.lr_d", cfg.optim.lr_d))}


def load_space(spec: str, cfg, variants: Optional[List[str]] = None) -> SweepSpace:
    """``--space``: declared names (comma-joined) or a YAML file, checked against ``cfg``."""
    family = FAMILIES.get(cfg.family)
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        space = _space_from_yaml(path, cfg.family)
    else:
        space = SweepSpace(spec)
        names = [n.strip() for n in spec.split(",") if n.strip()]
        declared = sorted(family.search_spaces) + ["lr"] + (["ablation"] if family.ablations else [])
        for name in names:
            if name == "ablation" and family.ablations:
                if len(names) > 1:
                    raise ConfigError("--space ablation cannot be combined with a weight search")
                space.variants = family.ablation_variants(cfg)
            elif name == "lr":
                space.params.update(lr_space(cfg))
            elif name in family.search_spaces:
                space.params.update(copy.deepcopy(family.search_spaces[name]))
            else:
                raise ConfigError(f"--space {name}: family {cfg.family} declares no space {name!r}; "
                                  f"declared: {', '.join(declared)} (or give a space YAML file)")
    if variants:
        if not space.variants:
            raise ConfigError("--variants selects rows of an ablation; this space is a weight search")
        unknown = [v for v in variants if v not in space.variants]
        if unknown:
            raise ConfigError(f"--variants: no variant {unknown[0]!r} in the {cfg.family} ablation; "
                              f"variants: {', '.join(space.variants)}")
        space.variants = {v: space.variants[v] for v in variants}
    check_space(space, cfg)
    return space


def _space_from_yaml(path: Path, family: str) -> SweepSpace:
    if not path.is_file():
        raise ConfigError(f"--space {path}: no such file (named spaces: losses, lr, ablation)")
    try:
        data = yaml_load(path.read_text()) or {}
    except Exception as exc:  # yaml.YAMLError; a space file is small and user-written
        raise ConfigError(f"space {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"space {path}: expected a mapping with params: or variants:")
    unknown = sorted(set(data) - {"family", "params", "variants"})
    if unknown:
        raise ConfigError(f"space {path}: unknown key {unknown[0]!r}; valid keys: family, params, variants")
    if data.get("family") not in (None, family):
        raise ConfigError(f"space {path} is written for family {data['family']!r}, "
                          f"but this sweep trains {family!r}")
    if bool(data.get("params")) == bool(data.get("variants")):
        raise ConfigError(f"space {path}: give either params: (a weight search) or variants: "
                          "(an ablation), not both and not neither")
    for section in ("params", "variants"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"space {path}: {section}: expected a mapping")
    return SweepSpace(str(path), params=data.get("params") or {}, variants=data.get("variants") or {})


def _ends(key: str, dist: Any) -> List[Any]:
    """The values of one parameter a trial may get at the extremes (checked ahead)."""
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ConfigError(f"space parameter {key}: expected one of "
                          f"{', '.join(f'{{{d}: [...]}}' for d in DISTRIBUTIONS)}, got {dist!r}")
    kind, args = next(iter(dist.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space parameter {key}: {kind} needs a non-empty list, got {args!r}")
    if kind in ("uniform", "loguniform"):
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"space parameter {key}: {kind} needs [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"space parameter {key}: empty range {kind} [{low}, {high}] (low must be < high)")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"space parameter {key}: loguniform needs low > 0, got {low}")
        # a drawn value is almost never an end: the midpoint catches integer-typed keys
        return [low, (low + high) / 2, high]
    return list(args)


def check_space(space: SweepSpace, cfg) -> None:
    """Build every end of every range and every variant into a run config (ConfigError
    naming the parameter or variant), and set up each distinct loss network once (missing
    VGG19 weights fail here, not in a trial)."""
    base = to_dict(cfg)
    configs = []
    if space.kind == "search":
        if not space.params:
            raise ConfigError(f"space {space.name}: no parameters")
        for key, dist in space.params.items():
            if key.split(".")[0] in ("family", "ray", "mlflow", "workdir"):
                raise ConfigError(f"space parameter {key}: {key.split('.')[0]} cannot be searched")
            for value in _ends(key, dist):
                configs.append((f"space parameter {key}={value!r}", trial_config(base, {key: value}, key)))
    else:
        for name, overrides in space.variants.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"ablation variant {name!r}: expected a mapping of config "
                                  f"keys to values, got {overrides!r}")
            configs.append((f"ablation variant {name!r}", trial_config(base, overrides, f"variant {name!r}")))
    seen = set()
    for what, trial_cfg in configs:
        family = build_family(trial_cfg)
        if family.perceptual_spec() in seen:
            continue
        seen.add(family.perceptual_spec())
        try:
            family.setup(torch.device("cpu"))
        except Exception as exc:
            raise type(exc)(f"{what}: {exc}") from None


def trial_config(base: Dict[str, Any], values: Dict[str, Any], what: str = "trial"):
    """The run config of one trial: ``base`` (a config as a dict) with dotted ``values``."""
    raw = copy.deepcopy(base)
    try:
        apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values.items()])
        return build_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def trial_values(config: Dict[str, Any], variants: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A Tune trial's config -> the dotted overrides it trains with."""
    if VARIANT in config:
        return dict(variants[config[VARIANT]])
    return dict(config)


def sample_points(space: SweepSpace, trials: int, seed: int) -> List[Dict[str, Any]]:
    """The sweep's trials, drawn once: an ablation's rows in order; for a search, every
    combination of the ``grid`` parameters times ``trials`` draws of the others (Tune's
    num_samples x grid), from ``numpy.random.default_rng(seed)``."""
    import itertools

    import numpy as np

    if space.kind == "ablation":
        return [{VARIANT: name} for name in space.variants]
    rng = np.random.default_rng(seed)
    grid = {k: d["grid"] for k, d in space.params.items() if "grid" in d}
    points = []
    for combo in itertools.product(*grid.values()):
        for _ in range(trials):
            point = {}
            for key, dist in space.params.items():
                kind, args = next(iter(dist.items()))
                if kind == "uniform":
                    point[key] = float(rng.uniform(*args))
                elif kind == "loguniform":
                    point[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
                elif kind == "choice":
                    point[key] = args[int(rng.integers(len(args)))]
            point.update(zip(grid, combo))
            points.append({k: point[k] for k in space.params})
    return points


def trial_key(index: int) -> str:
    return f"t{index:03d}"
