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

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

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

    from raygan.platform.plan import with_settings

    batch_size = int(cfg.data.batch)
    cfg = with_settings(cfg, **{"data.batch": 1, "train.perceptual_weights": "random",
                                "train.ema_decay": 0.0, "train.amp": "none"})
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


#: assumed training sets: name -> [(width, height, count)]. DIV2K's 800 training images are
#: 2040 px on the long side with varying short sides; 2040x1356 is the most common size and
#: stands for all (real counts, from the manifest at run start, differ by a few per cent).
DATASETS = {
    "DIV2K train (800, ~2040x1356)": [(2040, 1356, 800)],
    "DequantizerNet's 8,000 training images": [(500, 375, 8000)],
    "CelebA train split (162,770, 178x218)": [(178, 218, 162_770)],
}

#: (row, config, overrides, data set or None for configs given in iterations)
ROWS = [
    ("WCDGAN Table 1 (Y), q5 / q10 / q20, each", "wcdgan_y_q10.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("WCDGAN Table 2 (RGB), q5 / q10, each", "wcdgan_rgb_q10.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("DAGAN k=4 / k=6, each", "dagan.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("DequantizerNet Alef / Beta (R=5), each", "dequantizer_alef.yaml", [], "DequantizerNet's 8,000 training images"),
    ("DequantizerNet Gimel / Phi (R=10), each", "dequantizer_gimel.yaml", [], "DequantizerNet's 8,000 training images"),
    ("Face SR method 1 (CNN)", "facesr_cnn.yaml", [], None),
    ("Face SR method 2 (GAN)", "facesr_gan.yaml", [], None),
    ("PAN SR x4 (full; each ablation row at most this)", "pan_sr.yaml", [], None),
    ("PAN inpainting", "pan_inpaint.yaml", [], "CelebA train split (162,770, 178x218)"),
]


class _Sizes:
    """What resolve_schedule reads of a ShardSet: the count and the image sizes."""

    def __init__(self, sizes):
        self.image_sizes = [tuple(s) for s in sizes]
        self.count = sum(n for _, _, n in sizes)
        self.uri, self.manifest, self.split = "(assumed)", {}, "train"


def estimate(config: str, overrides, dataset: Optional[str], tflops: float) -> Dict[str, Any]:
    """A paper config's iterations (resolved from the assumed ``dataset`` of :data:`DATASETS`,
    or given in iterations when None), FLOPs per iteration and GPU-hours at ``tflops``."""
    import raygan.datasets.tasks  # noqa: F401  (the registries the config names)
    import raygan.models  # noqa: F401
    from raygan.platform.core.config import load_config
    from raygan.platform.plan import resolve_schedule

    cfg = load_config(config, ["train.init_from=null", *overrides])
    shards = _Sizes(DATASETS[dataset]) if dataset else None
    s = resolve_schedule(cfg, 1, shards)
    pre = min(s.pretrain_steps, s.steps)
    flops = flops_per_iteration(cfg)
    hours = gpu_hours(flops["adversarial"], s.steps - pre, tflops, flops["pretrain"], pre)
    return {"iterations": s.steps, "pretrain_iterations": pre, "iterations_per_epoch": s.steps_per_epoch,
            "gflop_pretrain": flops["pretrain"] / 1e9, "gflop_adversarial": flops["adversarial"] / 1e9,
            "gpu_hours": hours}


__all__ = ["ASSUMED_GPU", "DATASETS", "GPU", "ROWS", "estimate", "flops_per_iteration", "format_hours",
           "gpu_hours", "implied_tflops"]
