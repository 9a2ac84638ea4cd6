"""Data-parallel training (amdre.distributed): 2 gloo processes on a CPU learn what one process learns.

"Learns like one process" is asserted in its strongest form: with the same global batch (50 = 25 + 25 rows, and an
uneven last batch of 45 = 22 + 23), the 2-process run ends with the parameters, memory bank and per-batch losses of
the 1-process run up to float rounding, because every process draws the random numbers of the whole batch and keeps
its rows, and the processes' gradients are weighted by their share so that their sum is the global mean's. Observed:
the generator agrees to 6e-8; the ratio nets to 1.4e-5 in a single weight each, one whose gradient is ~1e-7, where
Adam's normalised step magnifies rounding (hence atol 1e-4). A run with another seed differs by 1e-2 or more, so the
tolerance is not vacuous.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amdre import distributed
from amdre.__main__ import main

REPO = Path(__file__).resolve().parents[1]

# 295 digits in batches of 50 (the last of 45, split 22 + 23), 3 epochs, 2 stages: the memory bank is written
# (and merged across ranks) at the end of both stages, and each stage's ratio net is trained through DDP.
ARGS = ["--config", "ci", "--n-train", "295", "--epochs", "3", "--stage-every", "1", "--no-eval", "--progress", "false"]


def test_shards_cover_each_batch_once():
    assert [distributed.shard(45, r, 2) for r in range(2)] == [(0, 22), (22, 45)]
    batches = [list(range(i, min(i + 50, 295))) for i in range(0, 295, 50)]
    per_rank = [list(distributed.ShardedBatches(batches, r, 3)) for r in range(3)]
    for b, *parts in zip(batches, *per_rank):
        assert sum(parts, []) == b and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert len(distributed.ShardedBatches(batches, 0, 3)) == 6 and distributed.world() == (0, 1)


def _load(d):
    return torch.load(d / "last.pt", weights_only=True)


def _max_diff(a, b, key):
    return max((a[key][k] - b[key][k]).abs().max().item() for k in a[key])


@pytest.mark.slow
def test_two_gloo_processes_learn_like_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "amdre", *ARGS, "--out-dir", str(tmp_path / "two")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    torch.set_num_threads(1)
    assert main(ARGS + ["--out-dir", str(tmp_path / "one")]) == 0       # meanwhile, one process
    assert main(ARGS + ["--out-dir", str(tmp_path / "seed1"), "--seed", "1"]) == 0
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    one, two, other = _load(tmp_path / "one"), _load(tmp_path / "two"), _load(tmp_path / "seed1")
    assert one["epoch"] == two["epoch"] == 3 and one["n_stages"] == two["n_stages"] == 2
    for key in ("generator", "prior"):
        assert _max_diff(one, two, key) < 1e-4, (key, _max_diff(one, two, key))
        assert _max_diff(one, other, key) > 1e-2
    assert (one["bank"] - two["bank"]).abs().max() < 1e-4 < (one["bank"] - other["bank"]).abs().max()
    for key in ("gen_loss", "mse", "nce_loss", "nce_acc"):                 # per-batch global-batch means
        assert torch.allclose(torch.tensor(one["history"][key]), torch.tensor(two["history"][key]),
                              rtol=1e-5, atol=1e-6), key
    log = (tmp_path / "two" / "train.log").read_text()                   # rank 0 alone writes the files
    assert "over 2 process(es)" in log and log.count("epoch 3/3") == 1
