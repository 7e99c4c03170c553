"""DDP is correct, not just running: 2 Ray Train workers (gloo, fp32) against one process.

One TorchTrainer run on a private local Ray (127.0.0.1) does, on each of 2 workers:
1. 3 generator-only steps on its half of fixed global batches (per-rank batch b = 2), then
   saves G: one process taking the whole batch 2b = 4 must reach the same weights;
2. 3 GAN steps more, then saves G and D: every rank must hold identical weights;
3. validation over the val split, split by rank and summed over ranks: it must equal the same
   images scored in one process;
4. one backward with fp16 and bf16 all-reduce compression next to an uncompressed one: the
   gradients differ, but only within 16-bit precision.
"""
import json
from pathlib import Path


import pytest
import torch
from safetensors.torch import load_file, save_file

from raygan.datasets.pipeline import make_val_loader, resolve_data
from raygan.datasets.samples import DEMO_VAL
from raygan.platform.core.config import load_config, to_dict
from raygan.platform.engine import GANEngine

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "data.patch=16",
        "train.perceptual_weights=random", "train.lpips_weights=off", "train.ema_decay=0",
        "loss.perceptual=0", "train.pretrain_steps=3", "optim.lr_g=1e-3", "optim.lr_d=1e-3",
        "data.val_crop=32", "data.val_max_images=5", "train.device=cpu"]
PRETRAIN, GAN = 3, 3
PER_RANK = 2


def global_batch(step: int, n: int = 2 * PER_RANK):
    g = torch.Generator().manual_seed(1000 + step)
    target = torch.rand(n, 3, 16, 16, generator=g)
    return {"input": (target + 0.1 * torch.randn(n, 3, 16, 16, generator=g)).clamp(0, 1), "target": target}


def half(batch, rank):
    return {k: v[rank * PER_RANK:(rank + 1) * PER_RANK] for k, v in batch.items()}


def ddp_worker(config):
    """Runs on each Ray Train worker (pickled by value)."""
    import ray.train
    import ray.train.torch

    from raygan.platform.core.config import build_config

    cfg = build_config(config["cfg"])
    out = Path(config["out"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    eng = GANEngine(cfg, wrap_model=ray.train.torch.prepare_model)
    for step in range(PRETRAIN):
        eng.train_step(half(global_batch(step), rank))
    save_file({k: v.contiguous() for k, v in eng.generator.state_dict().items()}, str(out / f"g_pre_{rank}.safetensors"))
    for step in range(PRETRAIN, PRETRAIN + GAN):
        eng.train_step(half(global_batch(step), rank))
    save_file({k: v.contiguous() for k, v in eng.generator.state_dict().items()}, str(out / f"g_end_{rank}.safetensors"))
    save_file({k: v.contiguous() for k, v in eng.discriminator.state_dict().items()}, str(out / f"d_end_{rank}.safetensors"))

    plan = resolve_data(cfg.data, cfg.storage, cfg.workdir)
    val = eng.validate(make_val_loader(plan, cfg.data, rank, world))

    grads = {}
    for kind in ("none", "fp16", "bf16"):
        torch.manual_seed(0)
        probe = GANEngine(build_config(dict(config["cfg"], train=dict(config["cfg"]["train"], ddp_compression=kind))),
                          wrap_model=ray.train.torch.prepare_model)
        b = half(global_batch(99), rank)
        loss, _ = probe.family.content_loss(probe.G(b["input"]), b)
        loss.backward()
        grads[kind] = {n: p.grad.clone() for n, p in probe.generator.named_parameters()}
        if kind == "none":  # this rank's own gradient, before any all-reduce (no DDP)
            probe.generator.zero_grad()
            loss, _ = probe.family.content_loss(probe.generator(b["input"]), b)
            loss.backward()
            save_file({n: p.grad.contiguous() for n, p in probe.generator.named_parameters()},
                      str(out / f"grad_local_{rank}.safetensors"))
    if rank == 0:
        for kind in ("fp16", "bf16"):
            save_file({n: g.contiguous() for n, g in grads[kind].items()}, str(out / f"grad_{kind}.safetensors"))
        save_file({n: g.contiguous() for n, g in grads["none"].items()}, str(out / "grad_none.safetensors"))
        (out / "val.json").write_text(json.dumps({"metrics": val["metrics"], "count": val["count"]}))
    ray.train.report({"rank_done": rank})


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, demo_shards):
    import ray
    from ray import cloudpickle  # Ray's own copy pickles the train function
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raygan.platform.distributed import LoopbackTorchConfig

    import test_ddp

    out = tmp_path_factory.mktemp("ddp")
    cfg = load_config(ROOT / "models" / "configs" / "wcdgan.yaml",
                      TINY + [f"data.train={demo_shards}", f"workdir={out}"])
    cloudpickle.register_pickle_by_value(test_ddp)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        TorchTrainer(ddp_worker, train_loop_config={"cfg": to_dict(cfg), "out": str(out)},
                     scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                     torch_config=LoopbackTorchConfig(backend="gloo"),
                     run_config=RunConfig(name="ddp", storage_path=str(out / "ray"))).fit()
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(test_ddp)
    return cfg, out


def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(ddp_run):
    cfg, out = ddp_run
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    single = GANEngine(cfg)
    for step in range(PRETRAIN):
        single.train_step(global_batch(step))
    ranks = [load_file(str(out / f"g_pre_{r}.safetensors")) for r in range(2)]
    for name, p in single.generator.state_dict().items():
        for r in range(2):
            torch.testing.assert_close(ranks[r][name], p, rtol=1e-4, atol=1e-6, msg=f"{name} rank {r}")
    # the comparison is not vacuous: the weights moved from their initial values
    torch.manual_seed(0)
    init = GANEngine(cfg).generator.state_dict()
    assert max((ranks[0][n] - init[n]).abs().max().item() for n in init) > 1e-3


def test_weights_are_identical_on_every_rank(ddp_run):
    _, out = ddp_run
    for what in ("g_end", "d_end"):
        a, b = (load_file(str(out / f"{what}_{r}.safetensors")) for r in range(2))
        assert a.keys() == b.keys()
        for name in a:
            if what == "d_end" and "running_" in name or name.endswith("num_batches_tracked"):
                # D is wrapped with broadcast_buffers=False (engine docstring): its BatchNorm
                # running statistics stay per rank and are never used (D always trains).
                continue
            assert torch.equal(a[name], b[name]), f"{what} {name} differs between ranks"


def test_validation_summed_over_ranks_equals_one_process(ddp_run):
    cfg, out = ddp_run
    reported = json.loads((out / "val.json").read_text())
    single = GANEngine(cfg)
    g = load_file(str(out / "g_end_0.safetensors"))
    single.generator.load_state_dict(g)
    plan = resolve_data(cfg.data, cfg.storage, cfg.workdir)
    val = single.validate(make_val_loader(plan, cfg.data, 0, 1))
    assert reported["count"] == val["count"] == len(DEMO_VAL)  # chelsea and coffee, one per rank
    assert reported["metrics"].keys() == val["metrics"].keys()
    for key, value in val["metrics"].items():
        assert reported["metrics"][key] == pytest.approx(value, rel=1e-9), key


# (unit roundoff, spacing of the smallest subnormals): fp16 has 10 mantissa bits and a
# subnormal floor of 2^-24; bf16 has 7 mantissa bits and fp32's exponent range
PRECISION = {"fp16": (2 ** -11, 2 ** -24), "bf16": (2 ** -8, 2 ** -133)}


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_compressed_all_reduce_changes_gradients_only_within_its_precision(ddp_run, kind):
    _, out = ddp_run
    exact = load_file(str(out / "grad_none.safetensors"))
    compressed = load_file(str(out / f"grad_{kind}.safetensors"))
    local = [load_file(str(out / f"grad_local_{r}.safetensors")) for r in range(2)]
    u, floor = PRECISION[kind]
    changed = False
    for name, g in exact.items():
        c = compressed[name]
        torch.testing.assert_close((local[0][name] + local[1][name]) / 2, g)  # DDP averages
        # each rank's gradient is rounded to 16 bits, divided by the world size and summed in
        # 16 bits: a few roundings of the per-rank magnitudes, plus the subnormal spacing
        bound = 4 * u * (local[0][name].abs() + local[1][name].abs()) / 2 + 4 * floor
        excess = ((c - g).abs() - bound).max().item()
        assert excess <= 0, f"{kind} {name}: off by {excess:.3g} beyond {kind} precision"
        changed |= not torch.equal(c, g)
    assert changed, f"{kind} compression was not applied"
