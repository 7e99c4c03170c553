"""Sweeps: Ray Tune over loss weights and over the papers' ablations (``jobs/sweep.py``).

    python jobs/sweep.py --family pan --space ablation --config pan_edges_cpu.yaml
    python jobs/sweep.py --family dagan --space losses --trials 8 --promote

**Spaces.** A family declares its weight searches (``search_spaces``) and its paper's
ablation (``ablations``) beside its model (``raygan.models.<family>``). ``--space`` takes
names (``losses``, ``lr``, ``losses,lr``; ``ablation``) or a YAML file::

    family: dagan                 # optional: refused when it is not --family
    params:                       # a weight search ...
      loss.perceptual: {uniform: [0.0, 1.0]}
      loss.adversarial: {loguniform: [1.0e-4, 1.0e-1]}
      loss.gan_kind: {choice: [hinge, vanilla]}
      optim.lr_g: {grid: [1.0e-4, 2.0e-4]}
    variants:                     # ... or an ablation (one of the two)
      full: {}
      no attention: {model.self_attention: false}

Every parameter is a dotted config key; each end of a range, each choice and each variant is
built into a full run config before any trial starts, so an unknown key, an empty range, a
value the family refuses or missing VGG19 weights fail at once, naming the problem.

**Trials.** Each trial is a Tune function trainable (:func:`sweep_trial`) that builds the
run's TorchTrainer (:func:`raygan.platform.trainer.build_torch_trainer`, the same as a
training job) with ``TuneReportCallback``; the trial's driver takes :data:`TRIAL_DRIVER_CPU`
of a CPU and its workers what fits (:func:`size_trials`). Weight searches sample
``--trials`` points and stop poor ones early with ASHA on ``step``; ablations run each
variant once (a grid, no early stopping). Checkpoints go to the sweep's storage, local or
S3, under ``<storage>/<sweep>/trial_runs/trial_<key>``.

**Resume without unpickling.** The sweep's points are drawn once, up front, from a seeded
generator (the trials of a search, the rows of an ablation) and saved with the plan as JSON
(``raygan_sweep.json``); each trial has a stable key (``t000``...). When a trial ends, the
driver writes its record (``trials/<key>.json``: status and last metrics) at once. A
killed sweep's ``--resume`` reads those JSON files and runs a new Tuner over the keys that
have no record (or failed); an unfinished trial's TorchTrainer has the same run name, so it
continues from its last checkpoint. Tune's own ``tuner.pkl`` (cloudpickle) is never read
back: nothing is unpickled from storage. (ASHA's rung history of the killed attempt is not
carried over; the resumed trials are compared among themselves.)

**Out.** One MLflow parent run per sweep, one child per trial (params, curves, grids);
an ablation table (markdown + CSV) or a ranked trial table and a metric-vs-weight plot,
printed, written to ``<workdir>/sweeps/<sweep>/`` and logged to the parent; with
``--promote``, the best trial's best checkpoint registered under the family/task model name
with alias ``champion``.

**Rooms** (read in this order; each imports only the ones above it)::

    space.py   SweepSpace, load_space, check_space, trial_config/trial_values, sample_points
    plan.py    SweepPlan, plan_sweep, load_plan, the trials' records, the MLflow tags
    trial.py   size_trials, TRIAL_DRIVER_CPU, sweep_trial (one trial's TorchTrainer)
    report.py  table_rows, markdown/CSV, plot_search, report_sweep, best_trial, promote_champion
    run.py     run_sweep (Ray, the parent run, the Tuner)
    cli.py     build_parser, sweep_main (``raygan sweep``, ``jobs/sweep.py``)
"""

from __future__ import annotations

from raygan.platform.sweep.space import (DISTRIBUTIONS, VARIANT, SweepSpace, check_space,
                                         load_space, lr_space, sample_points, trial_config,
                                         trial_key, trial_values)
from raygan.platform.sweep.plan import (KIND_TAG, METRICS, RECORDED, SPEC_FILE, SWEEP_TAG,
                                        TRIAL_TAG, SweepPlan, latest_file, load_plan, plan_sweep,
                                        read_records, spec_uri, trial_recorder)
from raygan.platform.sweep.trial import TRIAL_DRIVER_CPU, size_trials, sweep_trial
from raygan.platform.sweep.report import (INPUT_COLUMNS, SCORE_COLUMNS, best_trial, markdown,
                                          plot_search, promote_champion, report_sweep, table_rows,
                                          to_csv)
from raygan.platform.sweep.run import run_sweep
from raygan.platform.sweep.cli import build_parser, sweep_main

__all__ = [
    "DISTRIBUTIONS", "INPUT_COLUMNS", "KIND_TAG", "METRICS", "RECORDED", "SCORE_COLUMNS",
    "SPEC_FILE", "SWEEP_TAG", "SweepPlan", "SweepSpace", "TRIAL_DRIVER_CPU", "TRIAL_TAG", "VARIANT",
    "best_trial", "build_parser", "check_space", "latest_file", "load_plan", "load_space",
    "lr_space", "markdown", "plan_sweep", "plot_search", "promote_champion", "read_records",
    "report_sweep", "run_sweep", "sample_points", "size_trials", "spec_uri", "sweep_main",
    "sweep_trial", "table_rows", "to_csv", "trial_config", "trial_key", "trial_recorder",
    "trial_values",
]
