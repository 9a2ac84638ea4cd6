"""Data-parallel training over processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

    torchrun --standalone --nproc_per_node=N -m amdre --config configs/svhn.yaml

A W-process run computes what one process computes with the same global batch, up to float rounding;
``tests/test_distributed.py`` asserts it with 2 gloo processes on a CPU. The pieces (``amdre.accel``
puts them around the Trainer's step; the model and sampler code never sees them):

* **Batches.** Every rank draws the same global batches as one process would (same seed, same
  shuffling) and keeps a contiguous slice of each: rank r of W takes rows ``shard(n, r, W)``
  (``ShardedBatches``).
* **Random numbers.** ``shard_randn(lo, hi, n)`` is the samplers' noise source for a shard: it draws
  noise for all n rows of the global batch and keeps rows lo:hi, so a rank's chains are exactly the
  chains one process would run for those rows.
* **Gradients.** DDP sums the ranks' gradients through ``weighted_sum_hook``, each rank's scaled by
  its share of the batch (n_rank / n): the sum is the gradient of the global-batch mean, also for an
  uneven last batch. Batch statistics are reduced the same way, so every rank logs, and stops on a
  NaN, identically.
* **Memory bank.** Each rank's posterior samples are gathered (``gather_rows``), so every rank writes
  every row of the global batch into its copy of the bank.
* **Files.** Rank 0 writes checkpoints, logs, grids and metrics; every rank resumes from ``last.pt``.
"""
import os

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler


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
    """Join the process group of a torchrun launch (NCCL for CUDA devices, gloo otherwise); returns ``world()``."""
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


def loader(data, batch_size: int, generator: torch.Generator, num_workers: int = 0) -> DataLoader:
    """Shuffled batches of ``data`` drawn with ``generator``; under torchrun each global batch is cut to this
    rank's rows (every rank draws the same global batches as one process would)."""
    rank, w = world()
    if w == 1:
        return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers)
    last = len(data) - batch_size * (-(-len(data) // batch_size) - 1)
    if last < w:
        raise ValueError(f"{w} processes cannot split the last batch of {last} examples ({len(data)} examples, "
                         f"batch_size {batch_size}): change n_train or batch_size")
    batches = BatchSampler(RandomSampler(data, generator=generator), batch_size, drop_last=False)
    return DataLoader(data, batch_sampler=ShardedBatches(batches, rank, w), generator=generator,
                      num_workers=num_workers)


def shard_randn(lo: int, hi: int, n: int):
    """A noise source for rows lo:hi of a batch of n: ``randn(t)`` draws [n, ...] and returns rows lo:hi."""
    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, *t.shape[1:], dtype=t.dtype, device=t.device)[lo:hi]
    return randn


def all_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op for one process)."""
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def gather_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of a global batch of n from every rank's shard ``t`` ([n_rank, ...] -> [n, ...], in rank order)."""
    w = world()[1]
    if w == 1:
        return t
    size = max(hi - lo for lo, hi in (shard(n, r, w) for r in range(w)))
    padded = t.new_zeros(size, *t.shape[1:])
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:hi - lo] for p, (lo, hi) in zip(parts, (shard(n, r, w) for r in range(w)))])


def weighted_sum_hook(state: dict, bucket):
    """DDP communication hook: all-reduce SUM of the gradients times ``state["weight"]`` (this rank's n_rank / n)."""
    buf = bucket.buffer().mul_(state["weight"])
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda fut: fut.value()[0])
