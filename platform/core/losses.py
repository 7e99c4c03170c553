"""Loss functions shared by the GAN families: adversarial, total variation, perceptual (VGG19)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from raygan.platform.core.perceptual import vgg19_features

GAN_KINDS = ("lsgan", "vanilla", "bce", "hinge")

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


def gan_loss(kind: str, logits: Logits, real: bool, for_discriminator: bool = True) -> torch.Tensor:
    """Adversarial loss of raw discriminator outputs ``logits``.

    * ``"lsgan"``: mean squared error to 1 (``real``) or 0 (fake);
    * ``"vanilla"`` / ``"bce"``: BCE-with-logits against 1 or 0; the generator calls it with
      ``real=True`` (the non-saturating form);
    * ``"hinge"``: discriminator ``mean(relu(1 - x))`` for real, ``mean(relu(1 + x))`` for
      fake; generator ``-mean(x)`` (``real`` is then ignored).

    ``logits`` may be a list of tensors (multi-scale discriminators): the result is the mean
    of the per-tensor losses. Computed in float32 so AMP outputs do not lose precision.
    """
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss kind {kind!r}; expected one of {', '.join(GAN_KINDS)}")
    if isinstance(logits, (list, tuple)):
        if not logits:
            raise ValueError("gan_loss: empty list of discriminator outputs")
        return torch.stack([gan_loss(kind, x, real, for_discriminator) for x in logits]).mean()
    x = logits.float()
    if kind == "lsgan":
        return F.mse_loss(x, torch.full_like(x, 1.0 if real else 0.0))
    if kind in ("vanilla", "bce"):
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, 1.0 if real else 0.0))
    if not for_discriminator:
        return -x.mean()
    return F.relu(1.0 - x).mean() if real else F.relu(1.0 + x).mean()


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation of (B, C, H, W) images.

    The mean absolute difference between vertical neighbours plus the mean absolute
    difference between horizontal neighbours (each averaged over its own element count, so
    the value does not depend on the image size).
    """
    dh = (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().mean()
    dw = (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().mean()
    return dh + dw


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """Distance between frozen torchvision VGG19 ``features[:layer+1]`` of two images.

    Layer indices follow torchvision's ``vgg19().features``: 34 is conv5_4 before its ReLU
    (WCDGAN's "last conv"), 35 is relu5_4 (SRGAN/DAGAN "VGG54", DequantizerNet's index 35).
    Inputs are images in [0, 1] with 1 or 3 channels (1 channel is replicated to 3), then
    normalised with the ImageNet mean/std. ``weights`` is a spec for
    :func:`raygan.platform.core.perceptual.resolve_weights` ("auto", a path, or "random");
    ``self.init`` records what was loaded: ``"pretrained:<path>"`` or ``"random"``.
    """

    def __init__(self, layer: int, weights: str = "auto", criterion: str = "l1",
                 key: str = "train.perceptual_weights"):
        super().__init__()
        if criterion not in ("l1", "mse"):
            raise ValueError(f"perceptual criterion must be 'l1' or 'mse', got {criterion!r}")
        self.layer = layer
        self.criterion = criterion
        self.features, self.init = vgg19_features(weights, layer, key)
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # always frozen, in eval mode

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"PerceptualLoss expects (B, 1|3, H, W) images, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.features(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._features(x)
        with torch.no_grad():
            fy = self._features(y.detach())
        fn = F.l1_loss if self.criterion == "l1" else F.mse_loss
        return fn(fx.float(), fy.float())


__all__ = ["GAN_KINDS", "PerceptualLoss", "gan_loss", "tv_loss"]
