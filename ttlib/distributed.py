"""Data-parallel training over several processes or devices (torch DDP).

``torchrun --nproc_per_node N -m ttlib train ...`` starts N ranks (gloo on CPUs, NCCL on
GPUs). Every rank draws the same full batch from the same generator and trains on its own
equal slice of it; DDP averages the gradients, so a step is the full batch's step (the loss is
a plain mean over the batch's tokens) and every rank keeps the same weights, optimiser state
and random streams. Rank 0 writes the checkpoints. Dropout masks come from a generator seeded
by (seed, step, rank), so the ranks drop different units and a run resumes bit-for-bit with
the same number of ranks. One process (no process group) is the ordinary single-rank run,
untouched.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ttlib.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one training run (rank 0 of 1: no DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def writes(self) -> bool:
        """Whether this rank writes the checkpoints (rank 0)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank (``cuda:LOCAL_RANK``); CPUs are shared."""
        if self.world == 1 or device.type != "cuda":
            return device
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
        torch.cuda.set_device(local)
        return local

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in training: DDP (gradients averaged over ranks) or ``model``."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        where = next(model.parameters()).device
        ids = [where] if where.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def shard(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's rows of a full batch: the ``rank``-th of ``world`` equal slices."""
        if self.world == 1:
            return batch
        n = len(batch[0]) // self.world
        return [t[self.rank * n : (self.rank + 1) * n] for t in batch]

    def step_rng(self, seed: int, step: int):
        """Context of a step's forward pass: with several ranks, dropout draws from a generator
        of (seed, step, rank), and the global stream (the checkpoint's) is left as it was."""
        if self.world == 1:
            return nullcontext()
        return _seeded((seed * 1_000_003 + step) * 1_009 + self.rank)

    def barrier(self) -> None:
        """Wait for every rank (rank 0 has then written its last checkpoint)."""
        if self.world > 1:
            dist.barrier()

    def mean(self, record: dict) -> dict:
        """``record``'s numbers averaged over the ranks (the loss of the full batch)."""
        if self.world == 1:
            return record
        keys = [k for k, v in record.items() if k.startswith("loss")]
        values = torch.tensor([float(record[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return record | {k: float(v) / self.world for k, v in zip(keys, values, strict=True)}


@contextmanager
def _seeded(seed: int):
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def ranks(device: torch.device, batch_size: int) -> Ranks:
    """The ranks this process trains among: an initialised process group, or the one torchrun
    describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...), or a single rank."""
    if not dist.is_available():
        return Ranks()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return Ranks()
    world = dist.get_world_size()
    if batch_size % world:
        raise ConfigError(
            f"batch size {batch_size} does not split over {world} processes; use a multiple "
            f"of {world}"
        )
    return Ranks(dist.get_rank(), world)
