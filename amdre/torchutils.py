"""Small torch helpers the other modules share: the device a run asks for, frozen parameters, private random state.

* ``device(name)``: ``torch.device(name)``, with a clear error for a CUDA device on a machine without one;
* ``frozen(*modules)``: eval mode and no parameter gradients inside a block (Langevin differentiates in z only);
* ``seeded(seed, device)``: seed torch's random numbers inside a block and restore the caller's state after it,
  so that no function of amdre changes the user's random state behind their back;
* ``module_device(*modules)``: where a model lives.
"""
import contextlib

import torch
import torch.nn as nn

NO_GPU = ("device={device!r} asks for a CUDA GPU, but torch sees none (torch.cuda.is_available() is False). "
          "Set device='cpu' (papermill: -p device cpu; command line: --device cpu), or run on a machine with a GPU.")


def device(name) -> torch.device:
    """``torch.device(name)`` for 'cpu', 'cuda' or 'cuda:N', with a clear error when that GPU is not there."""
    try:
        d = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}") from err
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(NO_GPU.format(device=name))
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif d.type not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}")
    return d


@contextlib.contextmanager
def frozen(*modules):
    """Eval mode and requires_grad=False on every parameter inside the block, restored afterwards.

    Langevin then differentiates with respect to z only: no gradient ever reaches the parameters.
    """
    modules = [m for m in modules if isinstance(m, nn.Module)]
    params = [p for m in modules for p in m.parameters()]
    flags, modes = [p.requires_grad for p in params], [m.training for m in modules]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in modules:
            m.eval()
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        for m, t in zip(modules, modes):
            m.train(t)


@contextlib.contextmanager
def seeded(seed: int, where="cpu"):
    """Seed torch's RNG (the CPU's, and that of ``where`` if it is a GPU) inside the block; the caller's random
    state is restored afterwards."""
    where = torch.device(where)
    with torch.random.fork_rng(devices=[where] if where.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def module_device(*modules) -> torch.device:
    """Device of the first parameter or buffer found among ``modules`` (CPU if there is none)."""
    for m in modules:
        if isinstance(m, nn.Module):
            for t in (*m.parameters(), *m.buffers()):
                return t.device
    return torch.device("cpu")
