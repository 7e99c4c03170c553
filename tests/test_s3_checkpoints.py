"""train.init_from with the checkpoint in S3 (the S3 API over HTTP: moto's server)."""
from pathlib import Path

import torch

from raygan.platform import storage
from raygan.platform.checkpoint import save_checkpoint
from raygan.platform.config import to_dict
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
