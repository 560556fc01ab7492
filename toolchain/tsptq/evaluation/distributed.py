"""Scale-out over torch.distributed: ``tsptq eval`` launched by ``torchrun`` on one or many machines.

Rank 0 calibrates and quantizes; each method's runner is broadcast, every rank evaluates its contiguous share of the
batch grid (``tsptq.evaluation.shards``), and the per-image outputs are gathered back in rank order. Because every batch is
computed whole by one single-threaded process, the gathered outputs, and so the JSON rank 0 writes, are the same
as one process's. gloo on CPUs; nccl when the ranks run on GPUs (``--device cuda``).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from tsptq.errors import TsptqError


class Cluster:
    """This process's place among the ranks (a single process is rank 0 of 1)."""

    def __init__(self, rank: int = 0, world: int = 1, device: str = "cpu"):
        self.rank, self.world, self.device = rank, world, device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def share_result(self, make):
        """Rank 0 runs ``make()`` (calibration, quantization: the work only rank 0 does) and every rank gets its
        result; when it raises, every rank raises too, so none waits for a broadcast that will not come."""
        if self.world == 1:
            return make()
        if self.is_main:
            try:
                result = make()
            except BaseException as e:
                self.broadcast(("error", f"{type(e).__name__}: {e}"))
                raise
            return self.broadcast(("ok", result))[1]
        kind, value = self.broadcast(None)
        if kind == "error":
            raise TsptqError(f"rank 0 failed, so rank {self.rank} stops: {value}")
        return value

    def gather(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...] | None:
        """Every rank's arrays concatenated in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return arrays
        if dist.get_backend() == "nccl":  # gather_object wants a rank-local CUDA tensor under nccl: all-gather
            parts = [None] * self.world
            dist.all_gather_object(parts, arrays)
        else:
            parts = [None] * self.world if self.is_main else None
            dist.gather_object(arrays, parts, dst=0)
        if not self.is_main:
            return None
        # A rank with no share of the batch grid (more ranks than batches) sent empty placeholders: skip them.
        return tuple(np.concatenate([p[k] for p in parts if len(p[k])]) for k in range(len(arrays)))

    def share(self, n_batches: int) -> tuple[int, int]:
        """This rank's contiguous range of the batch grid."""
        return (n_batches * self.rank) // self.world, (n_batches * (self.rank + 1)) // self.world

    def _comm_device(self):
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str = "cpu") -> Cluster:
    """The cluster torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), joined here; a
    single-process cluster when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Cluster(device=device)
    rank = int(os.environ["RANK"])
    backend = "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TsptqError("--device cuda: no CUDA device is visible to this rank")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as e:
        raise TsptqError(f"cannot join the torch.distributed group (rank {rank} of {world}, {backend}): "
                         f"{str(e).splitlines()[0]}") from None
    return Cluster(rank, world, device)
