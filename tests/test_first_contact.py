"""The two failures of the first GPU run, shown on a CPU.

1. A prior with no stages must still know its device and dtype, so that a stage added after ``.to()`` lands
   there: on a GPU, ``EBMPrior(nz).to("cuda")`` then ``add_stage()`` left the stage on the CPU. The meta device
   and float64 show the same thing here.
2. A CUDA graph writes every replay's output into the same memory. The compiled posterior fed one replay's
   output to the next replay (an error on a GPU: "accessing tensor output of CUDAGraphs that has been
   overwritten by a subsequent run"). ``StaticOutputGraph`` below keeps that contract on a CPU: it returns its
   one output buffer, refuses an input that lives in that buffer, and so reproduces the failure.

And ``make gpu-check``'s script (benchmarks/gpu_check.py), dry-run with the CPU standing in for the GPU.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from amdre.accel import CompiledPosterior
from amdre.prior import EBMPrior
from amdre.samplers import sample_posterior, sample_sir
from conftest import tiny_model


def test_zero_stage_prior_follows_dtype_then_add_stage():
    prior = EBMPrior(3).double()
    stage = prior.add_stage()
    assert all(p.dtype == torch.float64 for p in stage.parameters())
    z = torch.randn(5, 3, dtype=torch.float64)
    log_p = prior.log_prob(z)
    assert log_p.dtype == torch.float64
    expected = stage(z) - 0.5 * (z * z).sum(1)                   # Eq. 6 with one stage, in float64
    torch.testing.assert_close(log_p, expected, rtol=0, atol=1e-12)
    assert sample_sir(prior, 4, 16, generator=torch.Generator().manual_seed(0)).dtype == torch.float64


def test_zero_stage_prior_follows_device_then_add_stage():
    prior = EBMPrior(3).to("meta")                               # a device other than the CPU, as "cuda" is
    first = prior.add_stage()
    second = prior.add_stage(torch.nn.Linear(3, 1))             # a given module is moved too
    assert {p.device.type for p in (*first.parameters(), *second.parameters())} == {"meta"}
    assert prior.log_prob(torch.empty(2, 3, device="meta")).device.type == "meta"
    assert "where" not in prior.state_dict()                      # checkpoints hold the stages only


class StaticOutputGraph:
    """What ``torch.compile(mode="reduce-overhead")`` gives on a GPU, on a CPU: every call writes its result into
    one output buffer and returns that buffer; an input that is the buffer (an output a later replay overwrites)
    is refused with CUDA graphs' own error."""

    def __init__(self, fn, **_):
        self.fn, self.out, self.calls = fn, None, 0

    def __call__(self, *args):
        if self.out is not None and any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr()
                                        == self.out.untyped_storage().data_ptr() for a in args):
            raise RuntimeError("Error: accessing tensor output of CUDAGraphs that has been overwritten by a "
                               "subsequent run.")
        result = self.fn(*args)
        self.out = torch.empty_like(result) if self.out is None else self.out
        self.out.copy_(result)
        self.calls += 1
        return self.out


def test_compiled_posterior_never_reads_an_overwritten_graph_output(monkeypatch):
    graphs = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: graphs.append(StaticOutputGraph(fn)) or graphs[-1])
    g, prior, x = tiny_model()
    x = x[:6]
    sampler = CompiledPosterior(g, prior, n_steps=8, step_size=0.01, sigma=0.3)
    z0 = torch.randn(6, 4)

    def noise(seed):
        gen = torch.Generator().manual_seed(seed)
        return lambda z: torch.randn(z.shape, generator=gen)

    first = sampler(x, z0, n_stages=2, randn=noise(1))
    assert sampler.failed is None and graphs[0].calls == 8          # every step ran as a graph replay
    kept = first.clone()
    second = sampler(x, z0, n_stages=2, randn=noise(2))             # called again: the first result stays valid
    assert torch.equal(first, kept) and not torch.equal(first, second)
    eager = sample_posterior(g, prior, x, z0, n_steps=8, step_size=0.01, sigma=0.3, n_stages=2, randn=noise(1))
    torch.testing.assert_close(first, eager, rtol=0, atol=1e-6)     # the graphs compute the eager chain
    assert (first - z0).abs().max() > 1e-2                          # and the chain moved


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler for torch.compile")
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """``make gpu-check``'s script, with the CPU standing in for the GPU: the tests pass and every table is written."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_check

    assert gpu_check.main(["--device", "cpu", "--presets", "svhn", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [t["outcome"] for t in result["tests"]["results"]] == ["passed"] * 5
    assert {m: len(result["bench"]["results"][m]) for m in ("langevin", "train", "memory")} == \
        {"langevin": 1, "train": 1, "memory": 1}
    assert "speedup_vs_lebm" in (tmp_path / "gpu_check.md").read_text()
