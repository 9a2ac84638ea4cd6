"""Data-parallel training over processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

    torchrun --standalone --nproc_per_node=N -m amdre --config configs/svhn.yaml

A W-process run computes what one process computes with the same global batch, up to float rounding;
``tests/test_distributed.py`` asserts it with 2 gloo processes on a CPU. ``DataParallelTrainer`` is the
``amdre.train.Trainer`` with its four data-parallel methods overridden; the step itself is the Trainer's:

* **Batches** (``batches``). Every process draws the same global batches as one process would (same seed, same
  shuffling) and keeps a contiguous slice of each: rank r of W takes rows ``shard(n, r, W)``.
* **Random numbers** (``noise``). Each draw is made for all n rows of the global batch from the run's generator,
  and the process keeps its rows: a process's chains are exactly the chains one process would run for them.
* **Gradients and statistics** (``sum_over_processes``). After both backward passes, each process's gradients
  and batch statistics are scaled by its share of the batch (n_rank / n) and summed over the processes in one
  all-reduce: the sum is the gradient of the global-batch mean, also for an uneven last batch, and every process
  sees the same statistics (so all stop together on a NaN).
* **Memory bank** (``write_bank``). Each process's posterior samples are gathered, so every process writes
  every row of the global batch into its copy of the bank.
* **Files.** Rank 0 writes checkpoints, logs, grids and metrics; every process resumes from ``last.pt``.
"""
import os

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler

from .train import Trainer


def world() -> tuple:
    """(rank, world_size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def init(device: str) -> tuple:
    """Join the process group of a torchrun launch (NCCL for CUDA devices, gloo otherwise); returns ``world()``.
    On GPUs each process uses the GPU of its LOCAL_RANK (a bare "cuda" then means that GPU)."""
    if launched() and not (dist.is_available() and dist.is_initialized()):
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def cleanup() -> None:
    """Leave the process group (after a barrier, so rank 0 finishes writing before the others exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (a no-op for one process)."""
    if world()[1] > 1:
        dist.barrier()


def shard(n: int, rank: int, world_size: int) -> tuple:
    """Rows lo:hi of a batch of n that ``rank`` takes: contiguous, sizes differ by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


class ShardedBatches(Sampler):
    """The batches of ``batch_sampler`` (identical on every process), each cut to this process's rows."""

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self):
        for batch in self.batch_sampler:
            lo, hi = shard(len(batch), self.rank, self.world_size)
            yield batch[lo:hi]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class _Counted:
    """A loader's batches, announcing each batch's index to ``begin(i)`` just before the batch is used (a worker
    process may prefetch, but the trainer meets batch i only after begin(i))."""

    def __init__(self, loader, begin):
        self.loader, self.begin = loader, begin

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            self.begin(i)
            yield batch


def gather_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of a global batch of n from every process's shard ``t`` ([n_rank, ...] -> [n, ...], in rank order)."""
    w = world()[1]
    if w == 1:
        return t
    size = max(hi - lo for lo, hi in (shard(n, r, w) for r in range(w)))
    padded = t.new_zeros(size, *t.shape[1:])
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:hi - lo] for p, (lo, hi) in zip(parts, (shard(n, r, w) for r in range(w)))])


class DataParallelTrainer(Trainer):
    """``amdre.train.Trainer`` for a torchrun launch: this process trains on its rows of every global batch (see
    the module docstring); rank 0 writes the files. With one process it is the Trainer."""

    def __init__(self, cfg, data, out_dir, resume: bool = True, init_from=None):
        self.rank, self.world_size = world()
        self.writes_files = self.rank == 0
        self.rows = (0, cfg.batch_size, cfg.batch_size)            # lo, hi, n of the global batch being trained
        last = len(data) - cfg.batch_size * (-(-len(data) // cfg.batch_size) - 1)
        if last < self.world_size:
            raise ValueError(f"{self.world_size} processes cannot split the last batch of {last} examples "
                             f"({len(data)} examples, batch_size {cfg.batch_size}): change n_train or batch_size")
        super().__init__(cfg, data, out_dir, resume=resume, init_from=init_from)

    def _begin(self, i: int) -> None:
        n = min(self.cfg.batch_size, len(self.data) - i * self.cfg.batch_size)
        self.rows = (*shard(n, self.rank, self.world_size), n)

    def batches(self):
        whole = BatchSampler(RandomSampler(self.data, generator=self.loader_gen), self.cfg.batch_size, drop_last=False)
        loader = DataLoader(self.data, batch_sampler=ShardedBatches(whole, self.rank, self.world_size),
                            generator=self.loader_gen, num_workers=self.cfg.num_workers)  # draws as one process does
        return _Counted(loader, self._begin)

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi, n = self.rows
        if len(t) != hi - lo:
            raise ValueError(f"noise for {len(t)} rows, but this process holds rows {lo}:{hi} of the batch")
        return torch.randn((n, *t.shape[1:]), generator=self.rng, device=t.device, dtype=t.dtype)[lo:hi]

    def sum_over_processes(self, stats: dict) -> dict:
        lo, hi, n = self.rows
        grads = [p.grad for m in (self.generator, self.ratio) if m is not None for p in m.parameters()
                 if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.stack(list(stats.values())).float()])
        flat.mul_((hi - lo) / n)
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return dict(zip(stats, flat[offset:]))

    def write_bank(self, idx, z) -> None:
        n = self.rows[2]
        self.bank[gather_rows(idx, n)] = gather_rows(z, n)
