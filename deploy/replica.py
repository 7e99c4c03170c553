"""One task's Serve deployment (``restore-<task>``): its generator, reloaded in place when the
user_config names another version, and the ``@serve.batch`` tile batcher."""


import asyncio
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from ray import serve

from raygan.deploy.settings import ServeSettings
from raygan.deploy.task_model import TaskModel
from raygan.platform.core import submitted_code


@serve.deployment(name="restore")
class RestoreDeployment:
    """One task's replica: its generator (reloaded in place when the user_config names
    another version) and the tile batcher."""

    def __init__(self, task: str, settings: Dict[str, Any]):
        submitted_code.check_running(os.environ.get(submitted_code.CODE_ENV))
        self.task, self.settings = task, ServeSettings(**settings)
        self.model: Optional[TaskModel] = None
        self.batches = {"batches": 0, "tiles": 0, "largest_batch": 0}  # what @serve.batch formed
        self.restore_tiles.set_max_batch_size(self.settings.max_batch_size)
        self.restore_tiles.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    def reconfigure(self, config: Dict[str, str]) -> None:
        if self.model is not None and self.model.ref.get("model") == config.get("model"):
            return
        # load and warm the new generator beside the old one, then swap: requests in
        # flight finish on the old one, none waits on a half-loaded model
        self.model = TaskModel(self.task, config, self.settings.tracking_uri, self.settings.warm_size,
                               forward_pixels=self.settings.forward_pixels)

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError(f"task {self.task}: no generator loaded")

    async def info(self) -> Dict[str, Any]:
        return {**self.model.info(), **self.batches, "code": submitted_code.fingerprint(),
                "replica": serve.get_replica_context().replica_id.unique_id}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def restore_tiles(self, tiles: List[np.ndarray]) -> List[Tuple[np.ndarray, str]]:
        model = self.model
        b = self.batches
        b.update(batches=b["batches"] + 1, tiles=b["tiles"] + len(tiles),
                 largest_batch=max(b["largest_batch"], len(tiles)))
        outs = await asyncio.to_thread(model.restore_batch, list(tiles))
        # float16 halves what crosses Ray's object store (error < 1/2000: below a uint8 level)
        return [(o.astype(np.float16), model.ref["version"]) for o in outs]

    async def degrade(self, rgb: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self.model.degrade, rgb)
