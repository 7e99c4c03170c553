"""The GPU check (`make gpu-check`): what can run without a GPU runs here, on the CPU.

The check's steps take a device, so each one (AMP steps, CPU-vs-accelerator losses, timed
throughput with channels-last and torch.compile, the GPU-hours from a measured rate) runs here
on tiny configs with device="cpu"; the argument handling, the peak table, the utilisation
arithmetic and the no-GPU path (one line, exit 0, status "skipped"; exit 3 with --require-gpu)
are pinned as they are. NCCL DDP needs 2 GPUs and is not run here.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raygan.platform import gpu_check as G
from raygan.platform.budget import estimate, gpu_hours

ROOT = Path(__file__).resolve().parent.parent
TINY_WCDGAN = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
               "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "data.patch=32", "data.batch=2",
               "loss.perceptual=0"]


def test_no_gpu_is_one_line_and_skipped_not_passed(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check runs for real")
    proc = subprocess.run([sys.executable, "jobs/gpu_check.py", "--json", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines[0] == "gpu-check: skipped: no GPU: torch.cuda.is_available() is False"
    assert json.loads(lines[-1])["gpu_check"] == "skipped"
    assert json.loads((tmp_path / "r.json").read_text())["gpu_check"] == "skipped"
    strict = subprocess.run([sys.executable, "jobs/gpu_check.py", "--require-gpu"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert strict.returncode == 3


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--warmup", "-1"], ["--families", "nope"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        G.parse_args(argv)
    assert exit_.value.code == 2


def test_peaks_and_utilisation_by_hand():
    assert G.bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert G.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert G.bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert G.bf16_peak("NVIDIA L40S") == 362.0 and G.bf16_peak("NVIDIA L40") == 181.0
    assert G.bf16_peak("Some Future GPU") is None
    # 10 iterations of 2 TFLOP in 0.5 s = 40 TFLOP/s, on a 400 TFLOP/s peak: 10 %
    assert G.mfu(2e12, 10, 0.5, 400.0) == pytest.approx(0.10)
    assert G.mfu(2e12, 10, 0.5, None) is None


def test_paper_runs_name_real_configs_and_hours_follow_the_rate():
    from raygan.platform.core.config import load_config

    for family, (config, _) in G.PAPER_RUNS.items():
        assert load_config(config, G.COMMON).family == family
    r10 = estimate("dequantizer_gimel.yaml", [], "DequantizerNet's 8,000 training images", 10.0)
    r20 = estimate("dequantizer_gimel.yaml", [], "DequantizerNet's 8,000 training images", 20.0)
    assert r10["iterations"] == 25_000 and r10["gpu_hours"] == pytest.approx(2 * r20["gpu_hours"])
    by_hand = gpu_hours(r10["gflop_adversarial"] * 1e9, 25_000, 10.0)
    assert r10["gpu_hours"] == pytest.approx(by_hand)


def test_the_steps_of_the_check_run_on_the_cpu():
    amp = G.amp_steps("wcdgan", device="cpu", extra=TINY_WCDGAN)
    assert amp["ok"] and amp["nonfinite"] == [] and "d_total" in amp["losses"]
    close = G.cpu_vs_gpu("wcdgan", 0.1, device="cpu", extra=TINY_WCDGAN)  # bf16 autocast vs fp32
    assert close["ok"] and 0 < close["worst_relative_difference"] <= 0.1, close
    strict = G.cpu_vs_gpu("wcdgan", 0.0, device="cpu", extra=TINY_WCDGAN)  # the tolerance can fail
    assert not strict["ok"]
    t = G.throughput("wcdgan", False, steps=2, warmup=1, peak=1.0, device="cpu", extra=TINY_WCDGAN)
    assert t["images_per_s"] > 0 and t["batch"] == 2 and t["patch"] == 32 and 0 < t["mfu"] < 1


@pytest.mark.slow
def test_compiled_and_channels_last_steps_match_eager():
    """train.compile (torch.compile in place, gcc on the CPU) and train.channels_last give the
    eager step's losses, and the compiled G keeps its state_dict keys."""
    from raygan.platform.core.config import load_config
    from raygan.platform.engine import GANEngine

    logs, keys = {}, {}
    for name, extra in (("eager", []), ("channels_last", ["train.channels_last=true"]),
                        ("compiled", ["train.compile=true"])):
        cfg = load_config("wcdgan.yaml", G.COMMON + TINY_WCDGAN + extra + ["train.device=cpu"])
        torch.manual_seed(0)
        engine = GANEngine(cfg)
        batch = G._batch(cfg, 2)
        logs[name] = [engine.train_step(batch) for _ in range(2)][-1]
        keys[name] = sorted(engine.generator.state_dict())
    for name in ("channels_last", "compiled"):
        assert keys[name] == keys["eager"]
        for k, v in logs["eager"].items():
            assert logs[name][k] == pytest.approx(v, rel=1e-3, abs=1e-5), (name, k)


def test_the_check_imports_and_runs_without_ray_or_mlflow():
    """GPU machines may have neither: the single-process check must not need them."""
    code = ("import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
            "from raygan.platform import gpu_check as G\n"
            f"print(G.amp_steps('wcdgan', device='cpu', extra={TINY_WCDGAN!r})['ok'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("True"), proc.stderr[-2000:]
