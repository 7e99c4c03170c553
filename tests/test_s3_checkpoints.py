"""train.init_from with the checkpoint in S3 (the S3 API over HTTP: moto's server)."""
from pathlib import Path

import torch

from raygan.platform.core import storage
from raygan.platform.checkpoint import save_checkpoint
from raygan.platform.core.config import to_dict
from raygan.platform.engine import GANEngine
from raygan.platform.trainer import initialize_from
from test_engine import batch, tiny_cfg


def test_init_from_an_s3_checkpoint(tmp_path, s3_bucket, s3_storage_cfg):
    torch.manual_seed(0)
    cfg = tiny_cfg(f"workdir={tmp_path}", f"storage.endpoint_url={s3_storage_cfg.endpoint_url}")
    src = GANEngine(cfg)
    for i in range(2):
        src.train_step(batch(i))
    local = save_checkpoint(tmp_path / "ck", src, {"family": cfg.family, "step": 2, "config": to_dict(cfg)})
    uri = f"s3://{s3_bucket}/runs/src/checkpoint_00000002"
    for f in sorted(Path(local).iterdir()):
        storage.put_file(str(f), f"{uri}/{f.name}", s3_storage_cfg)

    cfg.train.init_from = uri
    fresh = GANEngine(cfg)
    assert any(not torch.equal(p, q) for p, q in zip(src.generator.parameters(), fresh.generator.parameters()))
    initialize_from(fresh, uri, cfg)
    assert fresh.step == 0  # weights only: a new run
    for p, q in zip(src.generator.parameters(), fresh.generator.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(src.discriminator.parameters(), fresh.discriminator.parameters()):
        assert torch.equal(p, q)


def test_resume_finds_the_newest_complete_checkpoint_folder(tmp_path, s3_bucket, s3_storage_cfg, capsys):
    """What a resume starts from when Ray's run record misses checkpoints: the newest
    folder in the run's storage whose files all load. Step 6 lost its training state to a
    cut upload and step 8 holds a truncated generator: both are skipped, naming the folder."""
    from raygan.platform.checkpoint import newest_complete_checkpoint, read_meta

    cfg = tiny_cfg(f"workdir={tmp_path}")
    engine = GANEngine(cfg)
    run = f"s3://{s3_bucket}/ray/run"
    for step in (2, 4, 6, 8):
        local = save_checkpoint(tmp_path / f"ck{step}", engine, {"step": step, "config": to_dict(cfg)})
        for f in sorted(Path(local).iterdir()):
            if step == 6 and f.name == "training_state.pt":
                continue
            data = f.read_bytes()
            if step == 8 and f.name == "generator.safetensors":
                data = data[: len(data) // 2]
            storage.write_bytes(f"{run}/checkpoint_{step:08d}/{f.name}", data, s3_storage_cfg)
    storage.write_bytes(f"{run}/checkpoint_manager_snapshot.json", b"{}", s3_storage_cfg)

    found = newest_complete_checkpoint(run, s3_storage_cfg, tmp_path / "dl")
    assert found is not None and found.name == "checkpoint_00000004" and read_meta(found)["step"] == 4
    out = capsys.readouterr().out
    assert "skipping incomplete checkpoint_00000008" in out and "skipping incomplete checkpoint_00000006" in out
    assert newest_complete_checkpoint(run, s3_storage_cfg, tmp_path / "dl2", after_step=4) is None
    assert newest_complete_checkpoint(f"s3://{s3_bucket}/ray/other", s3_storage_cfg, tmp_path / "dl3") is None
