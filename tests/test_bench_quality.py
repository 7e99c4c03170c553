"""jobs/bench_quality.py trains each variant in its preset's own layout: a preset of 2 Ray
workers as 2 DDP processes over gloo (the cores shared among them), a one-worker preset in
one process with every core; both score the whole photos with rank 0's clock stopped."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "data.patch=16",
        "data.batch=2", "data.shuffle_buffer=8", "data.loader_workers=0", "train.ema_decay=0"]


@pytest.fixture
def bench_quality(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    import bench_quality

    return bench_quality


@pytest.mark.parametrize("workers, processes", [(2, 2), (1, 1)])
def test_a_variant_trains_in_its_presets_layout_and_scores_on_a_clock(bench_quality, demo_shards, tmp_path,
                                                                       workers, processes):
    overrides = TINY + [f"ray.workers={workers}", f"data.train={demo_shards}", "train.steps=6"]
    result = bench_quality.run_variant("v", "wcdgan_cpu_demo_v2.yaml", overrides, minutes=5,
                                       eval_every=0.0001, sets=[demo_shards], workdir=str(tmp_path))
    assert result["processes"] == processes and result["steps"] == 6
    # scored before training and after every step (eval-every is shorter than a step), the
    # clock rising and stopped at the last step
    steps = [p["step"] for p in result["curve"]]
    assert steps == list(range(7)), result["curve"]
    minutes = [p["minutes"] for p in result["curve"]]
    assert minutes == sorted(minutes) and 0 < minutes[-1] < 5
    assert all(isinstance(p["gain_y"], float) and isinstance(p["gain_rgb"], float) for p in result["curve"])
