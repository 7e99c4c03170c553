"""The GAN engine: one training step and one validation pass for every registered family.

The engine runs the same way under Ray Train (``wrap_model=ray.train.torch.prepare_model``)
and as a plain single process (the default identity wrap), so it can be tested and
benchmarked without Ray. Per iteration, after optional generator-only pretraining:

1. ``out = G(x)`` through the (DDP-)wrapped generator;
2. D step: D's parameters trainable, ``family.discriminator_loss`` on the detached output,
   through the DDP-wrapped D (real and fake forwards, one backward);
3. G step: D frozen (``requires_grad=False``) and called *unwrapped*, so DDP never sees a
   forward without a matching backward of its own parameters; gradients reach G only.

Learning-rate schedules (``optim.lr_schedule``, ``optim.lr_schedule_start``) count the steps
they train in: D's the adversarial steps only; G's, by default, too (G enters the
adversarial phase at ``optim.lr_g``, constant through generator-only pretraining), or every
step from step 0 with ``lr_schedule_start: pretraining``.

BatchNorm under DDP: D is wrapped with ``broadcast_buffers=False`` (its running statistics
are never used, D is always in train mode), so no in-place buffer broadcast can invalidate
a saved activation between the real and the fake forward. G keeps DDP's default buffer
broadcast so every rank validates with rank 0's statistics.
"""

from __future__ import annotations

import copy
import queue
import random
import threading
import weakref
from concurrent.futures import Future, wait
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import raygan.datasets.tasks  # noqa: F401  (registers the built-in data tasks)
import raygan.models  # noqa: F401  (registers the built-in families)
from raygan.models.base import GANFamily
from raygan.platform.core import metrics as M
from raygan.platform.core.config import RunConfigSpec
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.registry import FAMILIES
from raygan.platform.plan import Schedule, iteration_schedule

WrapFn = Callable[..., nn.Module]


def _identity_wrap(model: nn.Module, **_: Any) -> nn.Module:
    return model


def unwrap(model: Optional[nn.Module]) -> Optional[nn.Module]:
    return getattr(model, "module", model) if model is not None else None


def count_parameters(model: Optional[nn.Module]) -> int:
    return 0 if model is None else sum(p.numel() for p in model.parameters())


def resolve_device(spec: str) -> torch.device:
    if spec == "cuda" or (spec == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def build_family(cfg: RunConfigSpec) -> GANFamily:
    family = FAMILIES.get(cfg.family)(cfg.model, cfg.loss, cfg.data)
    family.perceptual_weights = cfg.train.perceptual_weights
    return family


class EMA:
    """Exponential moving average of G with a warm-up: decay_t = min(decay, (1+t)/(10+t)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the
    average usable in short runs, where a flat 0.999 would still be mostly initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def _set_requires_grad(model: Optional[nn.Module], flag: bool) -> None:
    if model is not None:
        for p in model.parameters():
            p.requires_grad_(flag)


def _make_optimizer(params, optim_cfg, lr: float) -> torch.optim.Optimizer:
    """Adam as one fused kernel over all parameters on CPU and CUDA (PyTorch's default on CPU
    is a Python loop of small ops per parameter: 8 % of the demo's step); RMSprop as
    multi-tensor (foreach) ops. The same update either way, up to float rounding."""
    params = list(params)
    if optim_cfg.optimizer == "adam":
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.Adam(params, lr=lr, betas=tuple(optim_cfg.betas),
                                weight_decay=optim_cfg.weight_decay, fused=fused or None)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=optim_cfg.weight_decay, foreach=True)


def _make_scheduler(opt: torch.optim.Optimizer, optim_cfg, steps: int, lr_step: int):
    """``optim.lr_schedule``: the papers' step decay (x ``lr_gamma`` every ``lr_step``
    iterations), or a cosine from lr to 0 over ``steps``: the iterations the scheduler counts
    (D's adversarial phase, and G's too unless ``optim.lr_schedule_start: pretraining``)."""
    if optim_cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return torch.optim.lr_scheduler.StepLR(opt, lr_step, optim_cfg.lr_gamma)


#: the fewest samples a shard of a split batch holds: one sample's BatchNorm statistics in D
#: are degenerate (at 1 x 1 pixels, an error), and a thread is not worth less
MIN_SHARD = 2


def resolve_batch_threads(batch_threads: int, workers: int, threads: int, use_gpu: bool, batch: int) -> int:
    """The threads a worker splits each step's batch over (``train.batch_threads``): a lone
    CPU worker's, at most one per torch thread and one per :data:`MIN_SHARD` samples; DDP
    workers and GPUs step their batch whole."""
    if workers > 1 or use_gpu:
        return 1
    return max(1, min(batch_threads, threads, batch // MIN_SHARD))


class ShardThreads:
    """``count`` long-lived threads that each run torch ops on their own share of the
    process's intra-op threads (``torch.get_num_threads() // count`` when made, at least 1).

    Why threads that live: a thread's OpenMP thread count is fixed when it first runs a
    parallel op, so each of these sets its own once, and the calling thread keeps every
    core for what runs between the shards (the optimizer, validation). Setting the count
    around every step instead clears oneDNN's cache of compiled convolutions each time
    (measured: slower than not splitting at all)."""

    def __init__(self, count: int):
        self.count = count
        outer = torch.get_num_threads()
        inner = max(1, outer // count)
        ready = threading.Barrier(count + 1)
        self._inboxes: List["queue.SimpleQueue"] = [queue.SimpleQueue() for _ in range(count)]

        def serve(inbox: "queue.SimpleQueue") -> None:
            torch.set_num_threads(inner)
            torch.get_num_threads()  # this thread's count is fixed from here on
            ready.wait()
            while True:
                job = inbox.get()
                if job is None:
                    return
                fn, future = job
                try:
                    future.set_result(fn())
                except BaseException as exc:  # raised on the calling thread by run()
                    future.set_exception(exc)

        self._threads = [threading.Thread(target=serve, args=(inbox,), name=f"raygan-shard-{i}", daemon=True)
                         for i, inbox in enumerate(self._inboxes)]
        for t in self._threads:
            t.start()
        ready.wait()
        torch.set_num_threads(outer)  # the process's (and this thread's) count, as it was
        self._closed = weakref.finalize(self, ShardThreads._stop, self._inboxes, self._threads)

    @staticmethod
    def _stop(inboxes: List["queue.SimpleQueue"], threads: List[threading.Thread]) -> None:
        for inbox in inboxes:
            inbox.put(None)
        for t in threads:
            t.join(timeout=10)

    def run(self, fns: List[Callable[[], Any]]) -> List[Any]:
        """``fn()`` of each of ``fns`` (at most ``count``) on its own thread, in parallel;
        their results in order, or the first one's exception."""
        futures = []
        for inbox, fn in zip(self._inboxes, fns):
            future: Future = Future()
            inbox.put((fn, future))
            futures.append(future)
        wait(futures)
        return [f.result() for f in futures]

    def close(self) -> None:
        self._closed()


class GANEngine:
    """Builds a family's G and D, their optimizers and schedulers, and trains them."""

    def __init__(self, cfg: RunConfigSpec, device: Optional[torch.device] = None,
                 wrap_model: Optional[WrapFn] = None, schedule: Optional[Schedule] = None):
        """``schedule``: the run plan's (:func:`raygan.platform.plan.resolve_schedule`); an
        engine built without one follows ``cfg``'s iteration-valued keys."""
        self.cfg = cfg
        self.schedule = schedule if schedule is not None else iteration_schedule(cfg)
        self.device = device or resolve_device(cfg.train.device)
        wrap = wrap_model or _identity_wrap
        self.family = build_family(cfg)

        g = self.family.build_generator().to(self.device)
        d = self.family.build_discriminator()
        d = d.to(self.device) if d is not None else None
        # channels-last weights (and inputs, _to_device): faster convolutions on GPUs with
        # tensor cores; state_dict keys and values are unchanged
        self.channels_last = cfg.train.channels_last
        if self.channels_last:
            g = g.to(memory_format=torch.channels_last)
            d = d.to(memory_format=torch.channels_last) if d is not None else None
        self.ema = EMA(g, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        if cfg.train.compile:  # in place (nn.Module.compile): same module, same state_dict keys
            g.compile()
            if d is not None:
                d.compile()

        find_unused = getattr(self.family, "find_unused_parameters", False)
        self.G = wrap(g, parallel_strategy_kwargs={"find_unused_parameters": find_unused})
        self.D = (wrap(d, parallel_strategy_kwargs={"broadcast_buffers": False,
                                                    "find_unused_parameters": find_unused})
                  if d is not None else None)

        self.batch_threads = cfg.train.batch_threads
        self._shard_threads: Optional[ShardThreads] = None  # made by the first split step
        self._check_batch_threads()
        if cfg.train.ddp_compression != "none":
            self._compress_gradients(cfg.train.ddp_compression)

        o, s = cfg.optim, self.schedule
        # a schedule that steps in the adversarial phase only spans that phase
        g_span = s.steps if self.g_schedule_counts_pretraining else s.adversarial_steps
        self.opt_g = _make_optimizer(unwrap(self.G).parameters(), o, o.lr_g)
        self.sched_g = _make_scheduler(self.opt_g, o, g_span, s.lr_step)
        self.opt_d = self.sched_d = None
        if self.D is not None:
            self.opt_d = _make_optimizer(unwrap(self.D).parameters(), o, o.lr_d)
            self.sched_d = _make_scheduler(self.opt_d, o, s.adversarial_steps, s.lr_step)

        amp = cfg.train.amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))
        self.family.setup(self.device)
        self.step = 0
        self.pretrain_steps = s.pretrain_steps

    # ----------------------------------------------------------------------- helpers
    def _compress_gradients(self, kind: str) -> None:
        """Cast gradients to 16 bits for the all-reduce (DDP comm hook); no-op without DDP."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel as DDP

        hook = {"fp16": default_hooks.fp16_compress_hook, "bf16": default_hooks.bf16_compress_hook}[kind]
        for model in (self.G, self.D):
            if isinstance(model, DDP):
                model.register_comm_hook(None, hook)

    @property
    def generator(self) -> nn.Module:
        return unwrap(self.G)

    @property
    def discriminator(self) -> Optional[nn.Module]:
        return unwrap(self.D)

    def eval_generator(self) -> nn.Module:
        """The generator that is validated and shipped: the EMA if enabled."""
        return self.ema.model if self.ema is not None else self.generator

    @property
    def g_schedule_counts_pretraining(self) -> bool:
        """Whether G's scheduler steps during generator-only pretraining
        (``optim.lr_schedule_start: pretraining``); by default it starts with the first
        adversarial step, so G enters that phase at ``optim.lr_g``."""
        return self.cfg.optim.lr_schedule_start == "pretraining"

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        def move(v):
            v = v.to(self.device, non_blocking=True)
            return v.contiguous(memory_format=torch.channels_last) if self.channels_last and v.dim() == 4 else v

        return {k: (move(v) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()) and not self.scaler.is_enabled():
            # (fp16: an overflow is GradScaler's to handle: it skips the step, lowers the scale)
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.step}: lower the learning rate, "
                "check the data, or try train.amp=none")

    def _step(self, opt: torch.optim.Optimizer, model: nn.Module) -> None:
        """The optimizer step on the gradients the shards' backward passes added up."""
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(unwrap(model).parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(opt)

    # ------------------------------------------------------------ batch-split threads
    def _check_batch_threads(self) -> None:
        """The split ``train.batch_threads`` asks for, where it is safe and has cores
        (:func:`resolve_batch_threads`; DDP workers step their batch whole).
        A model the split would change is refused: Dropout (two threads' draws would
        interleave, so a run could not be repeated exactly) and BatchNorm in G (its running
        statistics, used at validation, would be updated by two threads at once). BatchNorm
        in D is allowed: D always trains, its running statistics are never used, and its
        batch statistics are each shard's, as they are each worker's under DDP."""
        ddp = self.G is not unwrap(self.G) or (self.D is not None and self.D is not unwrap(self.D))
        self.batch_threads = resolve_batch_threads(self.batch_threads, 2 if ddp else 1, torch.get_num_threads(),
                                                   self.device.type != "cpu", self.cfg.data.batch)
        if self.batch_threads == 1:
            return
        refused = {"generator": (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd),
                   "discriminator": (nn.modules.dropout._DropoutNd,)}
        for name, model in (("generator", self.generator), ("discriminator", self.discriminator)):
            for module_name, module in (model.named_modules() if model is not None else ()):
                if isinstance(module, refused[name]):
                    raise ConfigError(
                        f"train.batch_threads > 1 splits each step's batch over threads of one "
                        f"process, and the {name}'s {module_name} ({type(module).__name__}) would be "
                        "shared by threads that update its statistics or draw random numbers: use 1")

    def _shards(self, batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        """``batch`` in ``self.batch_threads`` parts along its first axis (fewer for a batch
        of fewer than :data:`MIN_SHARD` samples a part); values that are not per-sample (not
        of the batch's length) go to every part."""
        n = batch["input"].shape[0]
        k = max(1, min(self.batch_threads, n // MIN_SHARD))
        if k == 1:
            return [batch]
        bounds = np.linspace(0, n, k + 1).round().astype(int)

        def part(v, i):
            if (torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n) or (isinstance(v, list) and len(v) == n):
                return v[bounds[i]:bounds[i + 1]]
            return v

        return [{key: part(v, i) for key, v in batch.items()} for i in range(k)]

    def _each_shard(self, fn: Callable[[int, Dict[str, Any], float], Any],
                    shards: List[Dict[str, Any]], weights: List[float]) -> List[Any]:
        """``fn(i, shard, weight)`` for every shard, each on a thread of its own with its share
        of the torch threads (:class:`ShardThreads`); ``weight`` is the shard's fraction of
        the batch (mean losses times it add up to the whole batch's gradient). One shard:
        just ``fn(0, batch, 1.0)`` on this thread. An exception in any shard is raised here."""
        if len(shards) == 1:
            return [fn(0, shards[0], 1.0)]
        if self._shard_threads is None or self._shard_threads.count < len(shards):
            if self._shard_threads is not None:
                self._shard_threads.close()
            self._shard_threads = ShardThreads(len(shards))
        return self._shard_threads.run([(lambda i=i: fn(i, shards[i], weights[i])) for i in range(len(shards))])

    @staticmethod
    def _mean_logs(parts: List[Dict[str, float]], weights: List[float]) -> Dict[str, float]:
        return {k: sum(w * p[k] for p, w in zip(parts, weights)) for k in parts[0]}

    # -------------------------------------------------------------------- training step
    @property
    def pretraining(self) -> bool:
        return self.step < self.pretrain_steps

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        """One iteration: generator-only while pretraining, else one D and one G step.

        With ``train.batch_threads`` k > 1 the batch is split in k shards, each run forward
        and backward on its own thread; their gradients add up in the parameters' ``.grad``
        (each shard's mean loss weighted by its share of the batch, so the sum is the whole
        batch's gradient) and each optimizer steps once, as for the whole batch."""
        self.G.train()
        batch = self._to_device(batch)
        fam = self.family
        pretraining = self.pretraining  # of the step being taken
        shards = self._shards(batch)
        weights = [s["input"].shape[0] / batch["input"].shape[0] for s in shards]  # of the batch

        def backward(loss: torch.Tensor, weight: float) -> None:
            self._check_finite(loss)
            self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()

        outs: List[Any] = [None] * len(shards)  # the adversarial phase's G outputs, per shard

        def generator_step(i, shard, weight):
            out = outs[i]
            with self._autocast():
                if out is None:
                    out = fam.generator_forward(self.G, shard)
                loss, logs = (fam.content_loss(out, shard) if pretraining
                              else fam.generator_loss(self.discriminator, out, shard))
            backward(loss, weight)
            return {**logs, "g_total": float(loss.detach())}

        logs: Dict[str, float] = {}
        if pretraining:
            self.opt_g.zero_grad(set_to_none=True)
            logs.update(self._mean_logs(self._each_shard(generator_step, shards, weights), weights))
            self._step(self.opt_g, self.G)
        else:
            if self.D is not None:
                _set_requires_grad(self.discriminator, True)

                def discriminator_step(i, shard, weight):
                    with self._autocast():
                        out = fam.generator_forward(self.G, shard)
                        loss, d_logs = fam.discriminator_loss(self.D, fam.restored(out).detach(), shard)
                    backward(loss, weight)
                    outs[i] = out
                    return {**d_logs, "d_total": float(loss.detach())}

                self.opt_d.zero_grad(set_to_none=True)
                d_parts = self._each_shard(discriminator_step, shards, weights)
                self._step(self.opt_d, self.D)
                _set_requires_grad(self.discriminator, False)
                logs.update(self._mean_logs(d_parts, weights))
            self.opt_g.zero_grad(set_to_none=True)
            logs.update(self._mean_logs(self._each_shard(generator_step, shards, weights), weights))
            self._step(self.opt_g, self.G)
        self.scaler.update()
        # Schedules count the steps they train in: D's the adversarial ones; G's those too
        # unless optim.lr_schedule_start is "pretraining" (then every step from step 0).
        if not pretraining or self.g_schedule_counts_pretraining:
            self.sched_g.step()
        if self.sched_d is not None and not pretraining:
            self.sched_d.step()
        if self.ema is not None:
            self.ema.update(self.generator)
        self.step += 1
        logs["lr_g"] = self.opt_g.param_groups[0]["lr"]
        logs["pretraining"] = float(pretraining)  # the step just taken
        return logs

    # ---------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, batches: Iterable[Dict[str, Any]], lpips: Optional[M.LPIPSMetric] = None,
                 grid_images: int = 0) -> Dict[str, Any]:
        """PSNR/SSIM (RGB and Y) of the model and of the degraded input, summed over ranks.

        Returns ``{"metrics": {...means...}, "count": n, "grid": [(degraded, output, target)]}``.
        """
        model = self.eval_generator()
        was_training = model.training
        model.eval()
        border = self.cfg.train.val_border
        sums: Dict[str, float] = {}
        count = 0
        grid: List[Any] = []
        for batch in batches:
            batch = self._to_device(batch)
            with self._autocast():  # any image size: padded to what G needs, cropped back
                upscale = max(1, batch["target"].shape[-1] // batch["input"].shape[-1])
                out = self.family.restore_any_size(model, batch["input"], upscale)
            out = out.float().clamp(0, 1)
            target = batch["target"].float()
            degraded = batch["input"].float()
            if degraded.shape[-2:] != target.shape[-2:]:
                degraded = F.interpolate(degraded, size=target.shape[-2:], mode="bicubic",
                                         align_corners=False).clamp(0, 1)
            if degraded.shape[1] != target.shape[1]:
                degraded = degraded.mean(1, keepdim=True).expand_as(target)
            for name, img in (("", out), ("input_", degraded)):
                vals = M.score(img, target, border, lpips)
                if lpips is None or not lpips.available:
                    del vals["lpips"]
                for k, v in vals.items():
                    sums[name + k] = sums.get(name + k, 0.0) + float(v.double().sum())
            count += target.shape[0]
            if len(grid) < grid_images:
                for i in range(min(target.shape[0], grid_images - len(grid))):
                    grid.append((degraded[i].cpu(), out[i].cpu(), target[i].cpu()))
        if was_training:
            model.train()
        keys = sorted(sums)
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64)
            dist.all_reduce(t)
            sums = dict(zip(keys, t[:-1].tolist()))
            count = int(t[-1].item())
        means = {k: v / max(count, 1) for k, v in sums.items()}
        return {"metrics": means, "count": count, "grid": grid}

    # ----------------------------------------------------------------------- state
    def state_dicts(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """Model weights, for safetensors files."""
        out = {"generator": self.generator.state_dict()}
        if self.discriminator is not None:
            out["discriminator"] = self.discriminator.state_dict()
        if self.ema is not None:
            out["generator_ema"] = self.ema.model.state_dict()
        return out

    def training_state(self) -> Dict[str, Any]:
        """Everything else needed to resume exactly (loadable with weights_only=True)."""
        np_state = np.random.get_state()
        state = {
            "step": self.step,
            "pretrain_steps": self.pretrain_steps,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                          int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": list(random.getstate()),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
            state["sched_d"] = self.sched_d.state_dict()
        return state

    def load_state(self, weights: Dict[str, Dict[str, torch.Tensor]], state: Optional[Dict[str, Any]]) -> None:
        self.generator.load_state_dict(weights["generator"])
        if self.discriminator is not None and "discriminator" in weights:
            self.discriminator.load_state_dict(weights["discriminator"])
        if self.ema is not None:
            self.ema.model.load_state_dict(weights.get("generator_ema", weights["generator"]))
        if state is None:
            return
        self.step = int(state["step"])
        self.pretrain_steps = int(state["pretrain_steps"])
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.opt_d is not None and "opt_d" in state:
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        name, keys, pos, has_gauss, cached = state["rng_numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = state["rng_python"]
        random.setstate((version, tuple(internal), gauss))
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
