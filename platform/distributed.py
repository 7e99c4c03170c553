"""Ray Train's torch process group, with its rendezvous store listening on one address only.

torch's ``TCPStore`` server (rank 0's rendezvous, what ``init_process_group`` talks to first)
binds every interface (``::``) whatever ``MASTER_ADDR`` says: on a laptop or a CI runner that
is a port open to the network for the length of a run. :class:`LoopbackTorchConfig` is Ray's
``TorchConfig`` with one change: before the process group is set up, each worker makes rank
0 host the store on a socket bound to ``MASTER_ADDR`` itself (127.0.0.1 for a local Ray, the
node's cluster address on a real cluster) and hands that socket to torch
(``TCPStore(master_listen_fd=...)``). Everything else (backend choice, env vars, timeouts)
is Ray's. ``tests/test_ray_train.py`` samples the listeners of a local run to keep it so.

This wraps ``torch.distributed.rendezvous._create_c10d_store``, a private torch function
whose signature has been stable since torch 2.0; the listener test fails if it changes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def bind_store_to_master_addr() -> None:
    """In a Ray Train worker: rank 0's TCPStore server listens on the rendezvous host only."""
    import importlib

    import torch.distributed as dist

    # the module (torch.distributed.rendezvous the attribute is a function of the same name)
    rendezvous = importlib.import_module("torch.distributed.rendezvous")

    if getattr(rendezvous, "_raygan_bound_store", False):
        return
    create = rendezvous._create_c10d_store

    def create_bound(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or port == 0:
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((hostname, port))
        sock.listen(max(128, world_size))
        return dist.TCPStore(hostname, port, world_size, True, timeout,
                             master_listen_fd=sock.detach(), use_libuv=use_libuv)

    rendezvous._create_c10d_store = create_bound
    rendezvous._raygan_bound_store = True


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config) -> None:
        worker_group.execute(bind_store_to_master_addr)
        super().on_start(worker_group, backend_config)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """Ray's TorchConfig whose rendezvous store listens on MASTER_ADDR only (module docstring)."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
