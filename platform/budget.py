"""Training budgets, **estimated, not measured**: FLOPs per iteration x iterations / an
assumed sustained throughput.

* :func:`flops_per_iteration` counts the floating-point operations of one real training
  iteration of a run config (``torch.utils.flop_counter.FlopCounterMode`` around
  ``GANEngine.train_step`` on the CPU, at batch 1, times ``data.batch``: convolutions, matrix
  products and attention are counted, element-wise work such as normalisation and
  activations is not), for the generator-only pretraining step and the adversarial step.
* :func:`gpu_hours` is the arithmetic: ``(pretraining its x its FLOPs + adversarial its x
  its FLOPs) / (sustained TFLOP/s x 1e12) / 3600``.
* :data:`ASSUMED_GPU` names the GPU and the sustained throughput assumed. The number is an
  assumption until the scale-out GPU check measures a real throughput; every table that
  uses it says "estimated, not measured".

``jobs/estimate_budget.py`` prints the table of the paper configs (docs/reproduce.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict

import torch


@dataclass(frozen=True)
class GPU:
    """A GPU and the sustained training throughput assumed on it."""

    name: str
    #: dense peak of the precision the runs use, TFLOP/s (the vendor's figure)
    peak_tflops: float
    #: fraction of the peak assumed sustained by these networks (ours)
    utilization: float
    precision: str

    @property
    def sustained_tflops(self) -> float:
        return self.peak_tflops * self.utilization


#: Our assumption: the paper configs train in float32 (train.amp: none), whose convolutions
#: cuDNN runs as TF32 on an A100 by PyTorch's default (torch.backends.cudnn.allow_tf32); 156
#: TFLOP/s is NVIDIA's dense TF32 peak. These networks are narrow (64 channels) and small-
#: batch, far from the peak: we assume 20 % of it, 31 TFLOP/s sustained. Not measured.
ASSUMED_GPU = GPU("NVIDIA A100 80GB SXM", 156.0, 0.20, "TF32 (float32 runs, cuDNN default)")


def gpu_hours(adversarial_flops: float, adversarial_iterations: int, sustained_tflops: float,
              pretrain_flops: float = 0.0, pretrain_iterations: int = 0) -> float:
    """Hours of one GPU sustaining ``sustained_tflops`` for a run of ``pretrain_iterations``
    generator-only iterations of ``pretrain_flops`` each and ``adversarial_iterations`` of
    ``adversarial_flops``. Estimated, not measured."""
    if sustained_tflops <= 0:
        raise ValueError(f"sustained_tflops must be > 0, got {sustained_tflops}")
    if min(adversarial_flops, pretrain_flops, adversarial_iterations, pretrain_iterations) < 0:
        raise ValueError("FLOPs and iterations must be >= 0")
    total = pretrain_flops * pretrain_iterations + adversarial_flops * adversarial_iterations
    return total / (sustained_tflops * 1e12) / 3600.0


def implied_tflops(flops_per_iteration: float, iterations: int, seconds: float) -> float:
    """The sustained TFLOP/s that ``iterations`` of ``flops_per_iteration`` in ``seconds``
    imply (e.g. a paper's "about 2 hours per epoch")."""
    return flops_per_iteration * iterations / seconds / 1e12


def _synthetic_batch(cfg: Any) -> Dict[str, torch.Tensor]:
    """A batch of one with the shapes the run's task produces (values do not change FLOPs)."""
    d = cfg.data
    c, p = int(d.channels), int(d.patch)
    low = p // int(d.scale) if d.task in ("sr", "face_sr") else p
    g = torch.Generator().manual_seed(0)
    batch = {"target": torch.rand(1, c, p, p, generator=g),
             "input": torch.rand(1, c, low, low, generator=g)}
    if d.task == "face_sr":
        from raygan.models.facesr import N_PARSING

        batch["parsing"] = (torch.rand(1, N_PARSING, p, p, generator=g) > 0.5).float()
    return batch


def flops_per_iteration(cfg: Any) -> Dict[str, float]:
    """``{"pretrain": FLOPs, "adversarial": FLOPs}`` of one training iteration of ``cfg`` at
    its ``data.batch`` (counted at batch 1 on the CPU, times the batch). The perceptual
    network is built with random weights: the same FLOPs, no weight file needed."""
    from torch.utils.flop_counter import FlopCounterMode

    from raygan.platform.engine import GANEngine

    cfg = copy.deepcopy(cfg)
    batch_size = int(cfg.data.batch)
    cfg.data.batch = 1
    cfg.train.perceptual_weights = "random"
    cfg.train.ema_decay = 0.0
    cfg.train.amp = "none"
    torch.manual_seed(0)
    engine = GANEngine(cfg, device=torch.device("cpu"))
    out = {}
    for phase, pretrain_steps in (("pretrain", 1 << 40), ("adversarial", 0)):
        engine.pretrain_steps = pretrain_steps
        with FlopCounterMode(display=False) as counter:
            engine.train_step(_synthetic_batch(cfg))
        out[phase] = float(counter.get_total_flops()) * batch_size
    return out


def format_hours(hours: float) -> str:
    """``12.3 h`` / ``1,234 h``: hours to three significant figures."""
    if hours >= 100:
        return f"{hours:,.0f} h"
    return f"{hours:.{max(0, 2 - int(math.floor(math.log10(max(hours, 1e-9)))))}f} h"


__all__ = ["ASSUMED_GPU", "GPU", "flops_per_iteration", "format_hours", "gpu_hours", "implied_tflops"]
