"""Sweeps (raygan.platform.sweep, jobs/sweep.py): spaces, checks, tables, and real sweeps on a
Ray head on 127.0.0.1 with 2 CPUs: an ablation killed and resumed (trial state in moto's S3
over HTTP), a weight search with parent and child runs, and --promote moving ``champion``."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import job_env, ray_head_on_loopback, wait_cluster_idle

from raygan.platform.core.config import load_config
from raygan.platform.engine import build_family
from raygan.platform.core.errors import ConfigError, WeightsNotFoundError
from raygan.platform.core.registry import FAMILIES
from raygan.platform.sweep import (SweepSpace, load_space, size_trials, sweep_main, table_rows,
                                   trial_config, trial_values)
from raygan.platform.core.config import to_dict

ROOT = Path(__file__).resolve().parent.parent

#: every family's paper ablation, by the papers' row names (issue 9)
PAPER_ROWS = {
    "dagan": ["DAGAN (full)", "DAGAN* (no attention)", "DA-net (no discriminator)", "MSE only",
              "VGG only", "1 DenseResAtt module", "2 DenseResAtt modules", "3 DenseResAtt modules"],
    "wcdgan": ["WCDGAN (full)", "w/o mixed convolution (standard conv)", "w/o mixed attention",
               "w/o perceptual loss and GAN"],
    "pan": ["PAN (full)", "w/o conditioning", "w/o high-frequency loss", "w/o low-frequency loss"],
    "dequantizer": ["Alef (R=5, q=1)", "Gimel (R=10, q=1)", "Beta (R=5, q=50)",
                    "R=10, q=50 (Phi from scratch)"],
    "facesr": ["method 1 (CNN)", "method 2 (GAN)"],
}
#: the searched weights (issue 9)
PAPER_WEIGHTS = {
    "dagan": {"loss.pixel", "loss.perceptual", "loss.adversarial", "loss.gan_kind"},
    "wcdgan": {"loss.pixel", "loss.perceptual", "loss.adversarial", "loss.tv"},
    "dequantizer": {"loss.adversarial", "loss.perceptual"},
    "facesr": {"loss.prior", "loss.perceptual", "loss.adversarial"},
    "pan": {"loss.adversarial", "loss.adversarial_low", "loss.perceptual", "loss.pixel"},
}
PAPER_CONFIG = {"dagan": "dagan.yaml", "wcdgan": "wcdgan.yaml", "pan": "pan_sr.yaml",
                "dequantizer": "dequantizer.yaml", "facesr": "facesr_gan.yaml"}


def paper_cfg(family, *overrides):
    # the paper configs' VGG19 loss: random init, asked for explicitly (no weights here)
    return load_config(PAPER_CONFIG[family], ["train.perceptual_weights=random", *overrides])


@pytest.mark.parametrize("family", sorted(PAPER_ROWS))
def test_declared_spaces_build_for_every_family(family):
    cfg = paper_cfg(family)
    ablation = load_space("ablation", cfg)
    assert list(ablation.variants) == PAPER_ROWS[family] and ablation.kind == "ablation"
    search = load_space("losses,lr", cfg)
    assert set(search.params) == PAPER_WEIGHTS[family] | {"optim.lr_g", "optim.lr_d"}
    built = [json.dumps(to_dict(trial_config(to_dict(cfg), o)), sort_keys=True)
             for o in ablation.variants.values()]
    assert len(set(built)) == len(built)  # no two rows train the same configuration


def test_ablation_rows_change_what_the_paper_says():
    cfg = paper_cfg("dagan")
    rows = load_space("ablation", cfg).variants
    built = {name: trial_config(to_dict(cfg), o) for name, o in rows.items()}
    assert built["DAGAN* (no attention)"].model.self_attention is False
    assert built["DA-net (no discriminator)"].model.discriminator is False
    assert [built[f"{n} DenseResAtt module{'s' if n > 1 else ''}"].model.modules for n in (1, 2, 3)] == [1, 2, 3]
    pan = load_space("ablation", paper_cfg("pan")).variants
    assert pan["w/o conditioning"] == {"model.conditional": False}
    assert pan["w/o high-frequency loss"] == {"loss.adversarial": 0.0}


#: small model sizes on each paper config: the rows' names and switches are unchanged
ABLATION_TINY = {
    "dagan": ["model.features=8", "model.groups=2", "model.d_features=8", "model.d_fc=16", "data.patch=16"],
    "wcdgan": ["model.features=8", "model.blocks=2", "model.mixed_width=4", "model.d_features=8",
               "model.d_max_features=8", "model.d_fc=8", "model.d_pool=1", "data.patch=16"],
    "pan": ["model.ngf=4", "model.ndf=4", "model.num_downs=5", "model.d_layers=1",
            "loss.layer_weights=[5.0,1.5]", "data.patch=32"],
    "dequantizer": ["model.features=8", "model.d_features=8", "model.d_fc=16", "data.patch=16"],
    "facesr": ["model.nf=8", "model.n_blocks=2", "model.prior_nf=8", "model.prior_depth=2",
               "model.d_nf=8", "data.patch=32"],
}


def _count(module, cls):
    return sum(isinstance(m, cls) for m in module.modules())


def _batch(fam, cfg):
    """A batch of 2 at the row's patch size (SR-like tasks: the input is scale x smaller)."""
    g = torch.Generator().manual_seed(0)
    p, c = cfg.data.patch, fam.channels
    target = torch.rand(2, c, p, p, generator=g)
    small = cfg.data.task in ("sr", "face_sr")
    inp = torch.nn.functional.avg_pool2d(target, cfg.data.scale) if small else target.clone()
    batch = {"input": inp, "target": target}
    if cfg.data.task == "face_sr":
        batch["parsing"] = (torch.rand(2, 11, p, p, generator=g) > 0.7).float()
    return batch


def _g_logs(fam, cfg, with_d=True):
    """The generator loss's logs of the built row (its G, and its D when it has one)."""
    torch.manual_seed(0)
    g, d = fam.build_generator(), (fam.build_discriminator() if with_d else None)
    batch = _batch(fam, cfg)
    out = fam.generator_forward(g, batch)
    loss, logs = fam.generator_loss(d, out, batch)
    return loss, logs


def _check_wcdgan(name, fam, cfg, base):
    from raygan.models.wcdgan import MixedAttention, MixedConv

    g, blocks = fam.build_generator(), cfg.model.blocks
    conv, att = _count(g, MixedConv), _count(g, MixedAttention)
    lc = cfg.loss
    if name == "WCDGAN (full)":
        assert (conv, att) == (4 * blocks, blocks)
        assert lc.perceptual > 0 and lc.adversarial > 0 and fam.perceptual_spec() is not None
    elif name == "w/o mixed convolution (standard conv)":
        assert (conv, att) == (0, blocks)
    elif name == "w/o mixed attention":
        assert (conv, att) == (4 * blocks, 0)
    elif name == "w/o perceptual loss and GAN":
        assert (conv, att) == (4 * blocks, blocks)
        assert lc.perceptual == 0 and lc.adversarial == 0 and fam.perceptual_spec() is None
        loss, logs = _g_logs(fam, cfg)  # with its discriminator: no adversarial term
        assert set(logs) == {"g_pixel", "g_tv"}, logs
        assert loss.item() == pytest.approx(lc.pixel * logs["g_pixel"] + lc.tv * logs["g_tv"], rel=1e-5)
    else:
        return False
    return True


def _check_dagan(name, fam, cfg, base):
    from raygan.models.dagan import DenseResAtt, SelfAttention

    g, d = fam.build_generator(), fam.build_discriminator()
    modules, attention = _count(g, DenseResAtt), _count(g, SelfAttention)
    full_modules = base.model.modules
    if name == "DAGAN (full)":
        assert modules == full_modules and attention > 0 and d is not None
        assert cfg.loss.pixel > 0 and cfg.loss.perceptual > 0 and cfg.loss.adversarial > 0
    elif name == "DAGAN* (no attention)":
        assert modules == full_modules and attention == 0
        assert d is not None and _count(d, SelfAttention) == 0
    elif name == "DA-net (no discriminator)":
        assert modules == full_modules and attention > 0
        assert d is None and not fam.adversarial_enabled
    elif name in ("MSE only", "VGG only"):
        assert modules == full_modules and d is not None
        mse = name == "MSE only"
        assert (fam.perceptual_spec() is None) == mse
        _, logs = fam.content_loss(torch.rand(2, 3, 16, 16), {"target": torch.rand(2, 3, 16, 16)})
        assert set(logs) == ({"g_pixel"} if mse else {"g_perceptual"}), logs
    else:
        m = re.fullmatch(r"(\d+) DenseResAtt modules?", name)
        if not m:
            return False
        assert modules == int(m.group(1)) < full_modules
        assert len(g.body) == int(m.group(1))
    return True


def _check_pan(name, fam, cfg, base):
    d = fam.build_discriminator()
    first = d.high[0].blocks[0][0]
    if name == "w/o conditioning":
        assert first.in_channels == fam.channels  # the high-frequency Ds see the output only
        y, c1, c2 = torch.rand(3, 1, fam.channels, 32, 32)
        torch.testing.assert_close(d(y, c1)["high"][0][0], d(y, c2)["high"][0][0])
        return True
    assert first.in_channels == 2 * fam.channels  # conditional
    if name not in ("PAN (full)", "w/o high-frequency loss", "w/o low-frequency loss"):
        return False
    _, logs = _g_logs(fam, cfg)
    adv = {k for k in logs if k.startswith("g_adversarial")}
    assert adv == {"PAN (full)": {"g_adversarial", "g_adversarial_low"}, "w/o high-frequency loss": {"g_adversarial_low"},
                   "w/o low-frequency loss": {"g_adversarial"}}[name], logs
    if name == "w/o low-frequency loss":
        assert len(d.low) == 0
    return True


def _check_dequantizer(name, fam, cfg, base):
    from raygan.models.dequantizer import ResidualBlock

    m = re.search(r"R=(\d+), q=(\d+)", name)
    if not m:
        return False
    assert _count(fam.build_generator(), ResidualBlock) == int(m.group(1))
    assert cfg.data.quality == fam.data_cfg.quality == int(m.group(2))
    return True


def _check_facesr(name, fam, cfg, base):
    d = fam.build_discriminator()
    if name == "method 1 (CNN)":
        assert d is None
        _, logs = _g_logs(fam, cfg, with_d=False)
        assert not {"g_adversarial", "g_perceptual"} & set(logs), logs
    elif name == "method 2 (GAN)":
        assert d is not None and cfg.loss.adversarial > 0
    else:
        return False
    return True


ROW_CHECKS = {"wcdgan": _check_wcdgan, "dagan": _check_dagan, "pan": _check_pan,
              "dequantizer": _check_dequantizer, "facesr": _check_facesr}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_ablation_row_switches_off_what_its_name_says(family):
    """Every family's ablation rows, each built (config, G, D, losses) from the family's
    paper config at small sizes: what a row's name says is off really is off in the built
    model, not only in the override dict."""
    if not FAMILIES.get(family).ablations:
        return
    assert family in ROW_CHECKS, f"family {family!r} has an ablation: add its rows' checks here"
    base = paper_cfg(family, *ABLATION_TINY[family])
    rows = load_space("ablation", base).variants
    assert list(rows) == PAPER_ROWS[family]
    for name, overrides in rows.items():
        cfg = trial_config(to_dict(base), overrides)
        assert ROW_CHECKS[family](name, build_family(cfg), cfg, base), f"{family}: no check for row {name!r}"


@pytest.mark.parametrize("space,message", [
    ("params: {loss.nope: {uniform: [0, 1]}}", "unknown config key loss.nope"),
    ("params: {loss.pixel: {uniform: [0.5, 0.5]}}", "empty range uniform [0.5, 0.5]"),
    ("params: {loss.adversarial: {loguniform: [0, 1]}}", "loguniform needs low > 0"),
    ("params: {loss.pixel: {uniform: [-1, 2]}}", "loss.pixel: weight must be >= 0, got -1"),
    ("params: {loss.pixel: {normal: [0, 1]}}", "space parameter loss.pixel: expected one of"),
    ("params: {loss.gan_kind: {choice: []}}", "choice needs a non-empty list"),
    ("params: {model.modules: {uniform: [1, 4]}}", "model.modules: expected an integer"),
    ("family: wcdgan\nparams: {loss.pixel: {uniform: [0.1, 1]}}", "written for family 'wcdgan'"),
    ("variants: {full: {}, broken: {model.nope: 1}}", "variant 'broken': unknown config key model.nope"),
    ("params: {loss.pixel: {uniform: [0, 1]}}\nvariants: {full: {}}", "either params"),
    ("trials: 3", "unknown key 'trials'"),
])
def test_bad_space_files_fail_naming_the_problem(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    with pytest.raises(ConfigError) as err:
        load_space(str(path), paper_cfg("dagan"))
    assert message in str(err.value)


def test_bad_space_names_and_variants():
    cfg = paper_cfg("pan")
    with pytest.raises(ConfigError, match=r"declares no space 'weights'; declared: losses, lr, ablation"):
        load_space("weights", cfg)
    with pytest.raises(ConfigError, match="no variant 'w/o pyramid'"):
        load_space("ablation", cfg, ["PAN (full)", "w/o pyramid"])
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_space("losses,ablation", cfg)


def test_space_checks_the_loss_networks_before_any_trial():
    """A searched weight that switches the VGG19 term on fails at once without its weights."""
    cfg = load_config("wcdgan_cpu_demo.yaml", ["train.perceptual_weights=/nowhere/vgg19.pth"])
    load_space("ablation", cfg, ["WCDGAN (full)", "w/o mixed attention"])  # perceptual 0: fine
    with pytest.raises((WeightsNotFoundError, FileNotFoundError), match="space parameter loss.perceptual=0.1"):
        load_space("losses", cfg)


def test_bad_sweeps_exit_before_ray_starts(tmp_path, capsys):
    import ray

    for argv, message in [
        (["--family", "pan", "--space", "weights"], "declares no space 'weights'"),
        (["--family", "pan", "--config", "dagan_cpu.yaml"], "is a dagan config, not pan"),
        (["--family", "gan9"], "unknown family 'gan9'"),
        (["--family", "pan", "--steps-per-trial", "0"], "--steps-per-trial must be >= 1"),
        (["--family", "pan", "--resume"], "no earlier pan sweep recorded"),
    ]:
        assert sweep_main(argv + ["--workdir", str(tmp_path)]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not ray.is_initialized()


def test_size_trials_fits_the_cluster():
    assert size_trials(2, 2, 1.0, None) == (1, 0.99)   # 2 workers + a trial driver on 2 CPUs
    assert size_trials(2, 1, 1.0, 2) == (2, 0.99)
    assert size_trials(16, 2, 1.0, None) == (7, 1.0)
    assert size_trials(16, 2, 2.0, None) == (3, 2.0)
    with pytest.raises(ConfigError, match="do not fit the cluster's 2 CPUs"):
        size_trials(2, 300, 1.0, 1)


def test_tables_rank_and_order():
    trials = [
        {"trial_id": "a", "config": {"loss.pixel": 1.0}, "status": "done",
         "metrics": {"val_psnr": 20.0, "val_lpips": 0.3, "step": 8}},
        {"trial_id": "b", "config": {"loss.pixel": 2.0}, "status": "failed", "metrics": {}},
        {"trial_id": "c", "config": {"loss.pixel": 3.0}, "status": "stopped early at 4",
         "metrics": {"val_psnr": 22.0, "val_lpips": 0.2, "step": 4}},
    ]
    space = SweepSpace("s", params={"loss.pixel": {"uniform": [1, 3]}})
    header, rows = table_rows(space, trials, "val_psnr", "max")
    assert [r[1] for r in rows] == ["c", "a", "b"] and header[:3] == ["rank", "trial", "loss.pixel"]
    assert "LPIPS" in header and "SSIM" not in header  # columns nobody reported are left out
    _, rows = table_rows(space, trials, "val_lpips", "min")
    assert [r[1] for r in rows] == ["c", "a", "b"]
    ablation = SweepSpace("a", variants={"full": {}, "w/o x": {"loss.pixel": 0.0}})
    rows = table_rows(ablation, [{"trial_id": "t2", "config": {"variant": "w/o x"}, "status": "done",
                                  "metrics": {"val_psnr": 30.0}},
                                 {"trial_id": "t1", "config": {"variant": "full"}, "status": "done",
                                  "metrics": {"val_psnr": 29.0}}], "val_psnr", "max")[1]
    assert [r[0] for r in rows] == ["full", "w/o x"]  # the paper's row order, not the ranking
    assert trial_values({"variant": "w/o x"}, ablation.variants) == {"loss.pixel": 0.0}


def test_steps_per_trial_keeps_the_adversarial_share(demo_shards, tmp_path):
    from raygan.platform.sweep import build_parser, plan_sweep

    args = build_parser().parse_args(["--family", "wcdgan", "--config", "wcdgan_cpu_demo.yaml",
                                      "--space", "ablation", "--steps-per-trial", "50", "--reports", "5",
                                      "--data", demo_shards, "--workdir", str(tmp_path)])
    plan = plan_sweep(args)
    train = plan.base["train"]
    from raygan.platform.core.config import load_config

    preset = load_config("wcdgan_cpu_demo.yaml").train  # its L1-only share, kept at 50 steps
    share = round(50 * preset.pretrain_steps / preset.steps)
    assert 0 < share < 50
    assert (train["steps"], train["pretrain_steps"], train["val_every"]) == (50, share, 10)
    assert plan.sweep_space().kind == "ablation" and plan.scheduler == "fifo"
    assert plan.data["train"]["uri"] == demo_shards and plan.data["train"]["shards"]
    assert plan.points == {"t000": {"variant": "WCDGAN (full)"},
                           "t001": {"variant": "w/o mixed convolution (standard conv)"},
                           "t002": {"variant": "w/o mixed attention"},
                           "t003": {"variant": "w/o perceptual loss and GAN"}}


def test_search_points_are_drawn_once_from_the_seed():
    from raygan.platform.sweep import sample_points

    space = SweepSpace("s", params={"loss.pixel": {"uniform": [0.2, 0.4]},
                                    "loss.adversarial": {"loguniform": [1e-4, 1e-1]},
                                    "loss.gan_kind": {"choice": ["hinge", "vanilla"]},
                                    "optim.lr_g": {"grid": [1e-4, 2e-4]}})
    points = sample_points(space, 3, seed=5)
    assert points == sample_points(space, 3, seed=5) != sample_points(space, 3, seed=6)
    assert len(points) == 6 and [p["optim.lr_g"] for p in points] == [1e-4] * 3 + [2e-4] * 3
    assert all(0.2 <= p["loss.pixel"] <= 0.4 and 1e-4 <= p["loss.adversarial"] <= 1e-1
               and p["loss.gan_kind"] in ("hinge", "vanilla") for p in points)
    assert len({p["loss.pixel"] for p in points}) == 6


# ------------------------------------------------------------------------ real sweeps

TINY_PAN = ["--config", "pan_edges_cpu.yaml", "--steps-per-trial", "6", "--reports", "2",
            "--workers-per-trial", "1", "data.batch=2", "data.val_crop=64", "data.val_max_images=2",
            "data.shuffle_buffer=8", "data.loader_workers=0", "train.log_every=2",
            "train.lpips_weights=off"]


@pytest.fixture(scope="module")
def sweep_head(s3_server):
    with ray_head_on_loopback(num_cpus=2) as head:
        yield head


def _sweep(args, env, timeout=420):
    proc = subprocess.run([sys.executable, "jobs/sweep.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith('{"sweep"')][-1]), out


def _champion(client, name):
    try:
        return client.get_model_version_by_alias(name, "champion")
    except Exception:
        return None


@pytest.fixture
def kill_head(s3_server):
    """A head of its own for the test that SIGKILLs a sweep's driver: whatever Ray keeps of
    the killed job cannot hold the CPUs of the tests after it."""
    with ray_head_on_loopback(num_cpus=2) as head:
        yield head


@pytest.mark.slow
def test_ablation_killed_then_resumed_then_promoted(kill_head, s3_server, s3_bucket, demo_shards, tmp_path):
    """Two PAN rows, one at a time, trial state in S3. The driver is killed (SIGKILL) while the
    second row trains; --resume finishes it without redoing the first, prints the table in
    the paper's row order, and --promote registers the best row as ``champion``."""
    import boto3
    from mlflow import MlflowClient

    env = job_env({"RAY_ADDRESS": kill_head["gcs"]})
    work = tmp_path / "work"
    common = ["--family", "pan", "--workdir", str(work), "--storage", f"s3://{s3_bucket}/sweeps",
              "--endpoint-url", s3_server]
    args = common + ["--space", "ablation", "--variants", "PAN (full),w/o conditioning", "--name", "abl",
                     "--data", demo_shards, "--max-concurrent", "1", *TINY_PAN]
    s3 = boto3.client("s3", endpoint_url=s3_server)

    def state():
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="sweeps/abl/")
                .get("Contents", [])]
        recorded = {k.split("/")[-1][:-5] for k in keys if k.startswith("sweeps/abl/trials/")}
        started = {k.split("/")[3] for k in keys if k.startswith("sweeps/abl/trial_runs/")}
        return recorded, started

    proc = subprocess.Popen([sys.executable, "jobs/sweep.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline, killed = time.time() + 400, False
    while time.time() < deadline and proc.poll() is None:
        recorded, started = state()
        if recorded == {"t000"} and "trial_t001" in started:  # first row ended, second training
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    out = proc.communicate(timeout=60)[0]
    assert killed, f"the sweep ended before it could be killed:\n{out[-4000:]}"
    # Ray releases the killed driver's trial, controller and workers on its own time; the
    # resumed trial would otherwise wait for them (and a busy machine takes minutes). A
    # placement group orphaned by the kill is not waited for: the resume removes it (below).
    wait_cluster_idle(kill_head["gcs"], orphans_reclaimed=True)

    summary, out = _sweep(common + ["--resume", "--promote"], env)
    assert summary["sweep"] == "abl" and summary["kind"] == "ablation" and summary["failed"] == 0
    table = Path(summary["table"]).read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:]] == ["PAN (full)", "w/o conditioning"]
    assert all("| 6 | done |" in row for row in table[2:]), table

    client = MlflowClient(summary["mlflow_tracking_uri"])
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["raygan.sweep"] == "abl" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2  # the resumed trial kept its child run
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_psnr")]
        # the first row was not trained again after the resume (a redo logs its steps twice)
        assert steps == [3, 6] if child.data.tags["raygan.trial"] == "t000" else steps[-1] == 6, steps
    assert "ablation.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    champion = summary["champion"]
    version = client.get_model_version_by_alias(champion["registered_model"], "champion")
    assert str(version.version) == champion["version"] and version.tags["raygan.sweep"] == "abl"
    assert version.tags["raygan.metric"] == "val_psnr"
    assert json.loads(version.tags["raygan.config"])["variant"] in ("PAN (full)", "w/o conditioning")


def test_only_placement_groups_of_ended_jobs_are_reclaimed():
    """What an attached driver removes at start (trainer.reclaim_orphaned_placement_groups): a
    CI run once saw a placement group stay CREATED for 240 s after the kill, every actor of the
    killed job dead, holding the CPU the resumed trial needed."""
    from raygan.platform.trainer import orphaned_placement_groups

    jobs = [{"job_id": "01000000", "status": "JobStatus.SUCCEEDED"},  # the killed driver
            {"job_id": "02000000", "status": "RUNNING"}, {"job_id": "03000000", "status": "STOPPED"}]
    pg = lambda i, job, state="CREATED", detached=False: {  # noqa: E731
        "placement_group_id": i, "creator_job_id": job, "state": state, "is_detached": detached}
    groups = [pg("a", "01000000"), pg("b", "02000000"), pg("c", "01000000", detached=True),
              pg("d", "01000000", state="REMOVED"), pg("e", "03000000", state="PENDING"),
              pg("f", "04000000"), pg("g", "01000000", detached=None), pg("h", "03000000")]
    # a replica of a detached controller the ended job 03 created lives in "h"
    actors = [{"placement_group_id": "h", "state": "ALIVE"}, {"placement_group_id": "a", "state": "DEAD"},
              {"placement_group_id": None, "state": "ALIVE"}]
    # live jobs' groups, detached ones, removed ones, groups with a live actor, unknown jobs
    # and unknown lifetimes stay
    assert orphaned_placement_groups(groups, jobs, actors) == ["a", "e"]
    assert orphaned_placement_groups(groups, jobs, actors[:1] + [{"placement_group_id": "a", "state": "ALIVE"}]) == ["e"]


@pytest.mark.slow
def test_weight_search_logs_runs_plots_and_moves_the_champion(sweep_head, demo_shards, tmp_path):
    from mlflow import MlflowClient

    env = job_env({"RAY_ADDRESS": sweep_head["gcs"]})
    work = tmp_path / "work"
    common = ["--family", "pan", "--workdir", str(work), "--data", demo_shards, *TINY_PAN]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    first, _ = _sweep(common + ["--space", "losses", "--trials", "1", "--name", "one", "--promote"], env)
    model = first["champion"]["registered_model"]
    assert str(_champion(client, model).version) == first["champion"]["version"]

    summary, out = _sweep(common + ["--space", "losses", "--trials", "2", "--max-concurrent", "2",
                                    "--name", "search", "--promote", "--metric", "ssim"], env)
    assert summary["kind"] == "search" and summary["trials"] == 2 and summary["metric"] == "val_ssim"
    parent = client.get_run(summary["mlflow_parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert {"sweep.loss.adversarial", "sweep.loss.adversarial_low", "sweep.loss.pixel",
                "loss.adversarial"} <= set(child.data.params)
        assert float(child.data.params["sweep.loss.adversarial"]) == float(child.data.params["loss.adversarial"])
        assert client.get_metric_history(child.info.run_id, "val_ssim"), "no curves in the child run"
        grids = [a.path for a in client.list_artifacts(child.info.run_id, "val")]
        assert any(p.endswith(".png") for p in grids), "no validation grid in the child run"
        assert child.info.status == "FINISHED"
    assert {"trials.md", "trials.csv", "ssim_vs_weights.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    rows = Path(summary["table"]).read_text().splitlines()[2:]
    values = [float(r.split("|")[8]) for r in rows]  # the SSIM column, ranked best first
    assert values == sorted(values, reverse=True) and len(rows) == 2
    # --promote moved the alias from the first sweep's version to this sweep's best trial
    moved = _champion(client, model)
    assert str(moved.version) == summary["champion"]["version"] != first["champion"]["version"]
    assert moved.tags["raygan.sweep"] == "search" and moved.tags["raygan.trial_id"] == summary["best_trial"]
    assert float(moved.tags["raygan.value"]) == pytest.approx(summary["best_value"], rel=1e-5)
