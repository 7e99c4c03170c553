"""``train.batch_threads``: one step's batch split over threads of one process.

The split must be invisible in what is learnt (the same update as the whole batch, up to
float rounding), run each shard on its own thread with its share of the torch threads, and
refuse the setups where a split would change the result."""
import threading

import pytest
import torch

from raygan.platform.core.config import load_config
from raygan.platform.core.errors import ConfigError
from raygan.platform.engine import GANEngine, resolve_batch_threads

from test_engine import CONFIGS, batch, params, tiny_cfg


def per_sample_discriminator(engine):
    """D's BatchNorm on its (initial) running statistics, so that D scores each sample alone:
    then a split batch is exactly the whole one. (BatchNorm in training mode sees each
    shard's statistics, as each worker's under DDP.)"""
    for m in engine.discriminator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return engine


def trained(threads, steps=3, n=5):
    torch.manual_seed(0)
    eng = per_sample_discriminator(GANEngine(tiny_cfg(f"train.batch_threads={threads}", f"data.batch={n}")))
    logs = [eng.train_step(batch(seed, n=n)) for seed in range(steps)]  # 1 L1 step, then GAN steps
    return eng, logs


def test_a_split_batch_learns_what_the_whole_batch_learns():
    # 5 samples in shards of 2 and 3: each shard's mean loss must count for its share of the
    # batch (an equal 1/2 each would move every parameter differently)
    torch.set_num_threads(2)
    whole, whole_logs = trained(1)
    split, split_logs = trained(2)
    assert split_logs[0]["pretraining"] == 1.0 and split_logs[-1]["pretraining"] == 0.0
    for model in ("generator", "discriminator"):
        for a, b in zip(params(getattr(whole, model)), params(getattr(split, model))):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(whole_logs, split_logs):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(params(whole.ema.model), params(split.ema.model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_each_shard_runs_on_its_own_thread_with_its_share_of_the_torch_threads():
    torch.set_num_threads(2)
    eng = GANEngine(tiny_cfg("train.batch_threads=2", "data.batch=4"))
    seen = []
    eng.generator.register_forward_pre_hook(
        lambda module, args: seen.append((threading.get_ident(), torch.get_num_threads(), args[0].shape[0])))
    eng.train_step(batch(n=4))
    eng.train_step(batch(1, n=4))  # the threads live on: the same two again
    threads = {ident for ident, _, _ in seen}
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert {(count, n) for _, count, n in seen} == {(1, 2)}
    assert torch.get_num_threads() == 2  # the caller keeps every core between the shards
    seen.clear()
    eng.train_step(batch(2, n=3))  # fewer than 2 samples a shard: one shard, this thread
    assert [(ident, n) for ident, _, n in seen] == [(threading.get_ident(), 3)]


def test_an_error_in_a_shard_is_raised_by_the_step():
    eng = GANEngine(tiny_cfg("train.batch_threads=2", "data.batch=4"))
    bad = batch(n=4)
    bad["target"][3] = float("nan")  # the second shard's loss
    with pytest.raises(FloatingPointError, match="loss is nan"):
        eng.train_step(bad)
    eng.train_step(batch(n=4))  # and the threads still serve the next step


def test_zero_batch_threads_is_refused():
    with pytest.raises(ConfigError, match="train.batch_threads: must be > 0"):
        tiny_cfg("train.batch_threads=0")


def test_a_split_is_made_only_where_it_is_safe_and_has_cores():
    # what the driver records and the worker prints, and what the engine does
    assert resolve_batch_threads(2, workers=1, threads=2, use_gpu=False, batch=8) == 2
    assert resolve_batch_threads(4, workers=1, threads=2, use_gpu=False, batch=8) == 2  # a thread each
    assert resolve_batch_threads(4, workers=1, threads=8, use_gpu=False, batch=5) == 2  # 2 samples each
    assert resolve_batch_threads(2, workers=2, threads=1, use_gpu=False, batch=8) == 1  # DDP
    assert resolve_batch_threads(2, workers=1, threads=8, use_gpu=True, batch=8) == 1
    # and the engine: one torch thread has nothing to split over
    torch.set_num_threads(1)
    try:
        eng = GANEngine(tiny_cfg("train.batch_threads=2", "data.batch=4"))
        seen = []
        eng.generator.register_forward_pre_hook(lambda module, args: seen.append(threading.get_ident()))
        eng.train_step(batch(n=4))
        assert seen == [threading.get_ident()]
    finally:
        torch.set_num_threads(2)


def test_ddp_workers_step_their_batch_whole(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        eng = GANEngine(tiny_cfg("train.batch_threads=2", "data.batch=4"), wrap_model=lambda m, parallel_strategy_kwargs: DDP(m, **parallel_strategy_kwargs))
        assert eng.batch_threads == 1
        eng.train_step(batch(n=4))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("config, layer", [("dequantizer_cpu.yaml", "BatchNorm2d"), ("pan_sr_cpu.yaml", "Dropout")])
def test_a_generator_that_batch_norms_or_drops_out_is_refused(config, layer):
    cfg = load_config(CONFIGS / config, ["train.batch_threads=2", "ray.workers=1", "train.perceptual_weights=random",
                                         "train.lpips_weights=off"])
    with pytest.raises(ConfigError, match=f"generator's .*{layer}.*use 1"):
        GANEngine(cfg)
