"""Weights of the frozen networks used by losses and metrics (VGG19, LPIPS' AlexNet).

Nothing is ever downloaded. A weights *spec* is one of

* ``"random"``: random initialisation, explicitly asked for (``None`` is returned; the VGG19
  is then drawn with a fixed seed so that every worker and every resume share it);
* a local path or ``file://`` URI: that file, which must exist;
* ``"auto"``: the torchvision file in the torch hub cache,
  ``torch.hub.get_dir()/checkpoints/<filename>`` (``$TORCH_HOME/hub/checkpoints``);
  when absent, :class:`WeightsNotFoundError` says which file to place where.

Files are read with ``torch.load(..., weights_only=True)`` or safetensors (``.safetensors``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from raygan.platform.core.errors import WeightsNotFoundError

VGG19_FILE = "vgg19-dcbbe1a2.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"




def hub_checkpoint_path(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_weights(spec: str, filename: str, what: str,
                    key: str = "train.perceptual_weights") -> Optional[str]:
    """Turn a weights spec into a local file path (``None`` for ``"random"``).

    ``what`` names the network in messages; ``key`` is the config key users set instead.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{key}: expected a path, 'auto' or 'random', got {spec!r}")
    spec = spec.strip()
    if spec == "random":
        return None
    if spec == "auto":
        path = hub_checkpoint_path(filename)
        if path.is_file():
            return str(path)
        raise WeightsNotFoundError(
            f"{what}: pretrained weights {filename} are not in the torch hub cache and are "
            f"never downloaded. Place the torchvision file at {path} "
            f"(i.e. $TORCH_HOME/hub/checkpoints/{filename}), or set {key}=<path to the file>, "
            f"or {key}=random to train with a randomly initialised network."
        )
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    elif "://" in spec:
        raise ValueError(f"{key}: {spec!r} is not a local path; only local files, 'auto' "
                         f"and 'random' are supported (weights are never downloaded)")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {what} weights file {path} does not exist")
    return str(path)


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict safely (``weights_only=True`` or safetensors)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated files, ...
            raise ValueError(f"cannot read weights file {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _features_state(state: Dict[str, torch.Tensor], path: str, what: str,
                    expected: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Pick ``features.*`` entries matching ``expected`` (keys relative to ``features``)."""
    # accept full torchvision dicts ("features.0.weight") and features-only ones ("0.weight")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing = [k for k in expected if k not in state]
    if missing:
        sample = ", ".join(sorted(state)[:5]) or "none"
        raise ValueError(
            f"{what}: weights file {path} does not match torchvision's layout: missing "
            f"features.{missing[0]} (and {len(missing) - 1} more); its keys start with {sample}"
        )
    for k, ref in expected.items():
        if state[k].shape != ref.shape:
            raise ValueError(f"{what}: weights file {path}: features.{k} has shape "
                             f"{tuple(state[k].shape)}, expected {tuple(ref.shape)}")
    return {k: state[k] for k in expected}


#: seed of "random" VGG19 weights: every worker and every resumed run must see the same
#: frozen network (it is not checkpointed), and building it must not move the global RNG
RANDOM_INIT_SEED = 0


def _vgg19_feature_stack(seed: int = RANDOM_INIT_SEED) -> nn.Sequential:
    """``vgg19(weights=None).features`` (torchvision's init, fixed seed), no classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_layers(cfgs["E"], batch_norm=False)
        for m in net.modules():  # torchvision's VGG initialisation of its convolutions
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return net


def vgg19_features(spec: str, layer: int, key: str = "train.perceptual_weights"):
    """``torchvision`` VGG19 ``features[:layer+1]`` with weights from ``spec``.

    Returns ``(module, init)`` where ``init`` is ``"pretrained:<path>"`` or ``"random"``;
    random weights are drawn with the fixed seed ``RANDOM_INIT_SEED`` (same network on
    every worker and after a resume; the global RNG is left untouched).
    """
    net = _vgg19_feature_stack()
    if not 0 <= layer < len(net):
        raise ValueError(f"VGG19 feature layer must be in 0..{len(net) - 1}, got {layer}")
    features = net[: layer + 1]
    path = resolve_weights(spec, VGG19_FILE, "VGG19 perceptual loss", key)
    if path is None:
        return features, "random"
    expected = features.state_dict()
    features.load_state_dict(_features_state(load_state_dict_file(path), path, "VGG19", expected))
    return features, f"pretrained:{path}"


def build_lpips(spec: str, key: str = "train.lpips_weights") -> Optional[nn.Module]:
    """LPIPS (AlexNet, v0.1) with the AlexNet backbone from ``spec``; None when unavailable.

    ``"off"``: None. ``"auto"``: None when the AlexNet file is not in the hub cache (LPIPS
    is optional). A path: that file. The linear heads ship inside the ``lpips`` package.
    """
    if spec == "off":
        return None
    if spec == "random":
        raise ValueError(f"{key}: LPIPS needs pretrained AlexNet weights; use a path, "
                         f"'auto' or 'off'")
    try:
        path = resolve_weights(spec, ALEXNET_FILE, "LPIPS AlexNet backbone", key)
    except WeightsNotFoundError:
        return None
    import lpips

    with warnings.catch_warnings():  # torchvision's "pretrained=False" deprecation notice
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    # lpips' slices keep torchvision's layer indices as module names: slice1.0, slice2.3, ...
    targets = {}
    for slice_name, sl in model.net.named_children():
        for name, tensor in sl.state_dict().items():
            targets[name] = (slice_name, tensor)
    expected = {k: t for k, (_, t) in targets.items()}
    picked = _features_state(load_state_dict_file(path), path, "AlexNet", expected)
    model.net.load_state_dict({f"{targets[k][0]}.{k}": v for k, v in picked.items()})
    model.init = f"pretrained:{path}"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


__all__ = [
    "ALEXNET_FILE", "VGG19_FILE", "WeightsNotFoundError", "build_lpips", "hub_checkpoint_path",
    "load_state_dict_file", "resolve_weights", "vgg19_features",
]
