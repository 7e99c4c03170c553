"""Resume equivalence, measured: a CPU preset (default: DAGAN's, 4-bit de-quantization) on
the embedded demo shards, one worker, in one process, run three ways with the same steps:

* uninterrupted (seed 0);
* interrupted at step K (a killed worker's restart point) and resumed from that checkpoint;
* uninterrupted with seed 1: the noise scale a resumed run is compared against.

A resumed run reseeds its data stream (it must not replay the samples it already saw), so it
sees other crops after K: it cannot be bit-identical, only within the seed-to-seed noise.
Prints the final validation PSNR of each and the mean relative difference of the training
loss curve (g_total, logged every 10 steps) after K.

    .venv/bin/python docs/resume_equivalence.py [STEPS K [CONFIG.yaml] [key=value ...]]

The figures of docs/resume_equivalence.md: ``docs/resume_equivalence.py 200 100``
(dagan_cpu.yaml, 180 MSE-only steps then 20 adversarial). The previous WCDGAN demo preset
(wcdgan_cpu_demo_v1.yaml) was a poor subject here: in one process its first few hundred
steps moved the model by less than the 8-bit rounding the metrics apply, so every leg
scored exactly its JPEG input.
"""
import json
import sys
import tempfile

import numpy as np

import raygan.datasets.tasks  # noqa: F401  (register the built-in tasks and families)
import raygan.models  # noqa: F401
from raygan.datasets.samples import ensure_demo_shards
from raygan.platform.core.config import load_config
from raygan.platform.trainer import run_loop

STEPS, K = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (200, 100)
CONFIG = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3].endswith(".yaml") else "dagan_cpu.yaml"
EXTRA = [a for a in sys.argv[3:] if a != CONFIG]
work = tempfile.mkdtemp(prefix="raygan-resume-")
shards = ensure_demo_shards(work)


class Curve:  # the run's MLflow logger interface, kept in memory
    def __init__(self):
        self.g_total = {}

    def metrics(self, values, step):
        if "train_g_total" in values:
            self.g_total[step] = values["train_g_total"]

    def image(self, *args):
        pass


def run(seed, steps, restore=None, tag=""):
    # the preset's schedule for STEPS (90 % content-only), whatever `steps` this leg stops at
    cfg = load_config(CONFIG, [
        f"data.train={shards}", f"train.steps={steps}", f"seed={seed}", f"workdir={work}",
        f"train.pretrain_steps={int(STEPS * 0.9)}", "train.log_every=10", f"train.val_every={K}",
        "ray.workers=1", "data.loader_workers=0", "train.lpips_weights=off", *EXTRA])
    curve = Curve()
    metrics = run_loop(cfg, restore_dir=restore, logger=curve, checkpoint_root=f"{work}/{tag}")
    print(f"{tag}: step {metrics['step']}, val PSNR {metrics['val_psnr']:.4f} "
          f"(input {metrics['val_input_psnr']:.4f})", flush=True)
    return metrics["val_psnr"], curve.g_total


full, g_full = run(0, STEPS, tag="uninterrupted")
run(0, K, tag="until_k")
resumed, g_resumed = run(0, STEPS, restore=f"{work}/until_k/checkpoint_{K:08d}", tag="resumed")
other, g_other = run(1, STEPS, tag="seed1")
after = [s for s in g_full if s > K]


def rel(curve):
    return float(np.mean([abs(curve[s] - g_full[s]) / g_full[s] for s in after]))


print(json.dumps({"steps": STEPS, "k": K, "psnr_uninterrupted": full, "psnr_resumed": resumed,
                  "psnr_seed1": other, "resumed_minus_uninterrupted_db": resumed - full,
                  "seed1_minus_seed0_db": other - full, "loss_curve_rel_diff_resumed": rel(g_resumed),
                  "loss_curve_rel_diff_seed1": rel(g_other)}, indent=1))
