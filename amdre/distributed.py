"""Data-parallel training over processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

    torchrun --standalone --nproc_per_node=N -m amdre.train --config configs/svhn.yaml

What each rank does (``amdre.train.Trainer`` reads ``world()`` and does the rest):

* **Batches.** Every rank draws the *same* global batches as one process would (same seed, same
  shuffling generator) and keeps a contiguous slice of each: rank r of W takes rows
  ``shard(n, r, W)`` of a global batch of n (``ShardedBatches``). The global batch is ``batch_size``.
* **Random numbers.** Every random draw of a step (posterior start, Langevin noise, prior noise) is
  made for the whole global batch and sliced to the rank's rows (``rows=(lo, hi, n)`` in
  ``amdre.langevin``), so a rank's chains are exactly the chains one process would run for those rows.
* **Gradients.** The generator and the current stage's ratio net are wrapped in
  DistributedDataParallel, which averages gradients over ranks; each rank's loss is its row mean
  times ``W * n_rank / n``, so the average is the gradient of the global-batch mean (also for an
  uneven last batch). Per-batch statistics are all-reduced the same way, so every rank logs, and
  stops on a NaN, identically.
* **Memory bank.** Each rank reads and writes the bank rows of the examples in its shard of each
  batch. In a stage's last epoch every row is written exactly once by one rank; the written rows
  are merged into every rank's copy at the end of that epoch (one all-reduce of N x nz floats per
  stage, ~29 MB for SVHN). The bank itself is replicated: it is small next to the images.
* **Files.** Rank 0 writes checkpoints, logs, grids and metrics; every rank resumes from ``last.pt``.

So a W-process run computes what one process computes with the same global batch, up to float
rounding (gradient sums in another order, other batch sizes in the convolutions): this is what
``tests/test_distributed.py`` asserts, with 2 gloo processes on a CPU.
"""
import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world() -> tuple:
    """(rank, world_size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    """This process's GPU index on its machine (torchrun's LOCAL_RANK; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def init(device: str) -> tuple:
    """Join the process group of a torchrun launch (NCCL for CUDA devices, gloo otherwise).

    Does nothing for a single process. Returns ``world()``.
    """
    if launched() and not (dist.is_available() and dist.is_initialized()):
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def cleanup() -> None:
    """Leave the process group (after a barrier, so rank 0 finishes writing before the others exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if world()[1] > 1:
        dist.barrier()


def shard(n: int, rank: int, world_size: int) -> tuple:
    """Rows lo:hi of a batch of n that ``rank`` takes: contiguous, sizes differ by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


class ShardedBatches(Sampler):
    """The batches of ``batch_sampler`` (identical on every rank), each cut to this rank's rows."""

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self):
        for batch in self.batch_sampler:
            lo, hi = shard(len(batch), self.rank, self.world_size)
            yield batch[lo:hi]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def all_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op for one process)."""
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def merge_rows_(bank: torch.Tensor, written: torch.Tensor) -> None:
    """Give every rank the rows of ``bank`` that some rank wrote (``written`` [N] bool, disjoint across ranks).

    Rows nobody wrote keep their value only if no rank wrote them, which cannot happen in a full epoch.
    """
    if world()[1] == 1:
        return
    total = torch.where(written[:, None], bank, torch.zeros((), dtype=bank.dtype, device=bank.device))
    count = written.to(torch.int32)
    dist.all_reduce(total)
    dist.all_reduce(count)
    if bool((count > 1).any()):
        raise RuntimeError("memory bank rows written by more than one rank: the shards overlap")
    bank.copy_(torch.where(count[:, None] > 0, total, bank))
