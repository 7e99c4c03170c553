"""Checkpoint folders without Ray or S3: what ``save_checkpoint`` writes and ``load_checkpoint``
restores (the exact weights, EMA, optimizer state and step, or the weights alone), which
``checkpoint_<step>`` folder names carry a step, what counts as a complete checkpoint when a
resume looks for the newest one (meta.json naming its step, weights and a training state that
load), that a training state is never unpickled (even where the environment relaxes torch's
default), and that a state written on a GPU machine resumes on a CPU-only one."""
import datetime as dt
import json
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.serialization

from raygan.platform.checkpoint import (checkpoint_step, generator_weights, load_checkpoint,
                                        newest_complete_checkpoint, read_meta, save_checkpoint)
from raygan.platform.core.config import to_dict
from raygan.platform.engine import GANEngine
from raygan.platform.core import storage
from raygan.platform.core.errors import CheckpointError, StorageError
from test_engine import batch, tiny_cfg

torch.set_num_threads(1)

FILES = {"generator.safetensors", "generator_ema.safetensors", "discriminator.safetensors",
         "training_state.pt", "meta.json"}


@pytest.fixture(scope="module")
def cfg():
    return tiny_cfg()


@pytest.fixture(scope="module")
def trained(cfg):
    """An engine after 3 steps: its EMA differs from the generator, its optimizers hold state."""
    torch.manual_seed(0)
    eng = GANEngine(cfg)
    for i in range(3):
        eng.train_step(batch(i))
    return eng


def _meta(cfg, step, **extra):
    return {"family": cfg.family, "step": step, "config": to_dict(cfg), **extra}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tensors(x):
    """Every tensor in a nested optimizer/scheduler state, in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for k in sorted(x, key=str) for t in _tensors(x[k])]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


class _Evil:
    def __reduce__(self):
        return (print, ("pwned: a checkpoint ran code",))


@contextmanager
def _saved_as_on_a_gpu():
    """torch.save inside tags every storage 'cuda:0', as a GPU training run writes them."""
    tag = lambda obj: "cuda:0"  # noqa: E731
    torch.serialization.register_package(0, tag, lambda obj, location: None)
    try:
        yield
    finally:
        torch.serialization._package_registry[:] = [
            e for e in torch.serialization._package_registry if e[1] is not tag]


def test_save_writes_the_documented_files_and_load_restores_them_exactly(cfg, trained, tmp_path):
    where = tmp_path / "runs" / "exp1" / "checkpoint_00000003"  # parents made as needed
    meta = _meta(cfg, trained.step, saved_at=dt.datetime(2026, 1, 2, 3, 4, 5), data=tmp_path / "shards")
    assert save_checkpoint(where, trained, meta) == where
    assert {f.name for f in where.iterdir()} == FILES
    # meta.json: plain JSON for people and tools; values JSON lacks are written as text
    text = (where / "meta.json").read_text()
    assert len(text.splitlines()) > len(meta)  # indented, one key per line
    back = read_meta(where)
    assert back["saved_at"] == "2026-01-02 03:04:05" and back["data"] == str(tmp_path / "shards")
    assert back["step"] == 3 and back["config"] == json.loads(json.dumps(to_dict(cfg)))

    torch.manual_seed(99)
    fresh = GANEngine(cfg)
    assert fresh.step == 0
    assert load_checkpoint(where, fresh) == back  # returns the checkpoint's meta
    assert _same(fresh.generator.state_dict(), trained.generator.state_dict())
    assert _same(fresh.ema.model.state_dict(), trained.ema.model.state_dict())
    assert not _same(fresh.ema.model.state_dict(), fresh.generator.state_dict())  # the EMA's own
    assert _same(fresh.discriminator.state_dict(), trained.discriminator.state_dict())
    assert fresh.step == trained.step == 3 and fresh.ema.updates == trained.ema.updates
    for mine, theirs in [(fresh.opt_g, trained.opt_g), (fresh.opt_d, trained.opt_d)]:
        a, b = _tensors(mine.state_dict()["state"]), _tensors(theirs.state_dict()["state"])
        assert a and len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert fresh.sched_g.state_dict() == trained.sched_g.state_dict()


def test_saving_again_into_the_same_folder_replaces_it(cfg, tmp_path):
    torch.manual_seed(1)
    eng = GANEngine(cfg)
    save_checkpoint(tmp_path / "ck", eng, _meta(cfg, 0))
    eng.train_step(batch(4))
    save_checkpoint(tmp_path / "ck", eng, _meta(cfg, 1))
    fresh = GANEngine(cfg)
    assert load_checkpoint(tmp_path / "ck", fresh)["step"] == 1 and fresh.step == 1
    assert _same(fresh.generator.state_dict(), eng.generator.state_dict())


def test_weights_only_loads_leave_the_training_state_alone(cfg, trained, tmp_path):
    """with_state=False (start a new run from a checkpoint), or a folder holding weights but
    no training_state.pt (an export): the weights come in, step and optimizers stay."""
    save_checkpoint(tmp_path / "ck", trained, _meta(cfg, 3))
    torch.manual_seed(5)
    fresh = GANEngine(cfg)
    opt_before = _tensors(fresh.opt_g.state_dict()["state"])
    assert load_checkpoint(tmp_path / "ck", fresh, with_state=False)["step"] == 3
    assert _same(fresh.generator.state_dict(), trained.generator.state_dict())
    assert fresh.step == 0 and _tensors(fresh.opt_g.state_dict()["state"]) == opt_before == []
    (tmp_path / "ck" / "training_state.pt").unlink()
    other = GANEngine(cfg)
    load_checkpoint(tmp_path / "ck", other)
    assert other.step == 0 and _same(other.ema.model.state_dict(), trained.ema.model.state_dict())


def test_generator_weights_prefer_the_ema_unless_asked_or_absent(cfg, trained, tmp_path):
    save_checkpoint(tmp_path / "ck", trained, _meta(cfg, 3))
    config, sd = generator_weights(tmp_path / "ck")
    assert config == json.loads(json.dumps(to_dict(cfg)))
    assert _same(sd, trained.ema.model.state_dict())
    assert _same(generator_weights(tmp_path / "ck", prefer_ema=False)[1], trained.generator.state_dict())
    (tmp_path / "ck" / "generator_ema.safetensors").unlink()  # a run without EMA
    assert _same(generator_weights(tmp_path / "ck")[1], trained.generator.state_dict())
    (tmp_path / "ck" / "generator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no generator.safetensors"):
        generator_weights(tmp_path / "ck")
    (tmp_path / "ck" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        generator_weights(tmp_path / "ck")


@pytest.mark.parametrize("name,step", [
    ("checkpoint_00000012", 12),
    ("checkpoint_7", 7),
    ("s3://bucket/ray/run/checkpoint_00000012", 12),
    ("/runs/a_1/checkpoint_00000040/", 40),  # a folder URI with its trailing slash
    ("runs/checkpoint_3/checkpoint_00000009", 9),
    ("s3://bucket/ray/run/checkpoint_manager_snapshot.json", -1),  # Ray's run record
    ("checkpoint_00000012.tmp", -1),
    ("checkpoint_12X", -1),
    ("checkpoint_", -1),
    ("checkpoint", -1),
    ("checkpoint_-3", -1),
    ("checkpoint_latest", -1),
    ("best_5", -1),
    ("Checkpoint_5", -1),
    ("run/checkpoint_5/X", -1),
    ("logs", -1),
    ("", -1),
])
def test_checkpoint_step_parses_only_checkpoint_folders(name, step):
    assert checkpoint_step(name) == step


def _upload(run: Path, step: int, source: Path, *, drop=(), cut=(), meta_step=None):
    """``source``'s files as ``run/checkpoint_<step>``, some left out or cut in half."""
    dst = run / f"checkpoint_{step:08d}"
    dst.mkdir(parents=True)
    for f in source.iterdir():
        if f.name in drop:
            continue
        data = f.read_bytes()
        if f.name in cut:
            data = data[: len(data) // 2]
        if f.name == "meta.json":
            data = json.dumps({**json.loads(data), "step": step if meta_step is None else meta_step}).encode()
        (dst / f.name).write_bytes(data)
    return dst


def test_resume_takes_the_newest_complete_checkpoint_folder(cfg, trained, tmp_path, capsys):
    """Step 10 holds a truncated generator, 8 lost its training state, 6 is another run's
    step 5 under a new name: all skipped, each named; 4 is complete and newest of the rest.
    Files beside the folders (Ray's run record, logs) are not checkpoints."""
    src = save_checkpoint(tmp_path / "src", trained, _meta(cfg, 0))
    run = tmp_path / "run"
    for step in (2, 4):
        _upload(run, step, src)
    _upload(run, 6, src, meta_step=5)
    _upload(run, 8, src, drop={"training_state.pt"})
    _upload(run, 10, src, cut={"generator.safetensors"})
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (run / "logs").mkdir()
    (run / "logs" / "checkpoint_00000099").write_text("not a folder")

    found = newest_complete_checkpoint(str(run), None, tmp_path / "dl")
    assert found == tmp_path / "dl" / "checkpoint_00000004"
    assert read_meta(found)["step"] == 4 and {f.name for f in found.iterdir()} == FILES
    out = capsys.readouterr().out
    for step in (10, 8, 6):
        assert f"skipping incomplete checkpoint_{step:08d} in {run}" in out
    assert "checkpoint_00000002" not in out
    # a restarted resume downloads into the same folder again
    assert newest_complete_checkpoint(str(run) + "/", None, tmp_path / "dl") == found
    # only folders newer than after_step count
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl2", after_step=1) == \
        tmp_path / "dl2" / "checkpoint_00000004"
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl3", after_step=4) is None
    shutil.rmtree(run / "checkpoint_00000004")
    shutil.rmtree(run / "checkpoint_00000002")
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl4") is None
    assert newest_complete_checkpoint(str(tmp_path / "nothing"), None, tmp_path / "dl5") is None


def test_a_file_gone_before_its_download_skips_the_folder_but_an_outage_stops_the_search(cfg, trained, tmp_path,
                                                                                      monkeypatch, capsys):
    """A file listed but gone when read (deleted by retention meanwhile) makes its folder
    incomplete: the one before is taken. A storage outage is no incomplete checkpoint: it
    stops the search rather than falling back to an older folder."""
    src = save_checkpoint(tmp_path / "src", trained, _meta(cfg, 0))
    run = tmp_path / "run"
    _upload(run, 2, src)
    _upload(run, 4, src)
    real = storage.read_bytes

    def gone(uri, storage_cfg=None):
        if "checkpoint_00000004" in uri and uri.endswith("meta.json"):
            raise StorageError(f"file not found: {uri}", missing=True)
        return real(uri, storage_cfg)

    monkeypatch.setattr(storage, "read_bytes", gone)
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl") == tmp_path / "dl" / "checkpoint_00000002"
    assert "skipping incomplete checkpoint_00000004" in capsys.readouterr().out

    def outage(uri, storage_cfg=None):
        if "checkpoint_00000004" in uri:
            raise StorageError(f"storage unreachable reading {uri}", transient=True)
        return real(uri, storage_cfg)

    monkeypatch.setattr(storage, "read_bytes", outage)
    with pytest.raises(StorageError, match="storage unreachable reading .*checkpoint_00000004"):
        newest_complete_checkpoint(str(run), None, tmp_path / "dl2")


def test_a_training_state_is_never_unpickled_even_where_the_environment_allows_it(cfg, trained, tmp_path,
                                                                                  monkeypatch, capsys):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns torch.load's default to full unpickling; raygan
    passes weights_only=True itself, so a state carrying an object is still refused."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ck = save_checkpoint(tmp_path / "ck", trained, _meta(cfg, 3))
    torch.save({**trained.training_state(), "evil": _Evil()}, ck / "training_state.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ck, GANEngine(cfg))
    run = tmp_path / "run"
    _upload(run, 2, save_checkpoint(tmp_path / "ok", trained, _meta(cfg, 0)))
    _upload(run, 4, ck)
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl") == tmp_path / "dl" / "checkpoint_00000002"
    out = capsys.readouterr().out
    assert "skipping incomplete checkpoint_00000004" in out and "pwned" not in out


def test_a_training_state_written_on_a_gpu_resumes_on_the_cpu(cfg, trained, tmp_path):
    ck = save_checkpoint(tmp_path / "ck", trained, _meta(cfg, 3))
    with _saved_as_on_a_gpu():
        torch.save(trained.training_state(), ck / "training_state.pt")
    fresh = GANEngine(cfg)
    load_checkpoint(ck, fresh)
    assert fresh.step == 3
    state = _tensors(fresh.opt_g.state_dict()["state"])
    assert state and all(t.device.type == "cpu" for t in state)
    run = tmp_path / "run"
    _upload(run, 2, ck)
    assert newest_complete_checkpoint(str(run), None, tmp_path / "dl") == tmp_path / "dl" / "checkpoint_00000002"
