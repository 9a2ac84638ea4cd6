"""A training run's checkpoints: where a run continues from, what may continue it, and how a file is read back.

* ``save(state, folder, stage, last_good)``: ``last.pt`` (and ``stage{k}.pt`` at a stage's end), written atomically;
* ``start_from(folder, resume, init_from)``: the checkpoint a new Trainer continues (``last.pt``), starts from
  (``init_from``) or None; a folder that holds another run is refused with what to do;
* ``check(state, cfg, data, path, new_run)``: a checkpoint may continue only the same configuration (``RUN``
  fields) on the same data (a fingerprint of the images); ``init_from`` needs only the same networks;
* ``read_checkpoint(path)``: ``torch.load`` with clear errors for a missing or damaged file (naming the newest
  intact ``stage{k}.pt`` beside it and the commands that continue from there);
* ``load_checkpoint(path)``: (generator, prior, cfg, history) for evaluation;
* ``healthy(path)``: whether a checkpoint can be trained on (for the advice after a divergence).
"""
import hashlib
import math
from pathlib import Path

import torch

from . import config as config_module
from .files import atomic_save
from .nets import generator as make_generator
from .prior import EBMPrior

# What every Trainer checkpoint holds (``amdre.train.Trainer.state_dict``).
KEYS = ("cfg", "epoch", "generator", "prior", "n_stages", "opt_g", "opt_ebm", "bank", "history", "rng")
# Fields a run started from another run's checkpoint (``init_from``) must share with it: the networks and schedule.
ARCHITECTURE = ("generator", "nz", "ngf", "n_stages", "stage_every", "adaptive", "prior_sampling")


class DamagedCheckpoint(RuntimeError):
    """A checkpoint file that torch.load cannot read; the message names it and the intact ones beside it."""


def checkpoints(folder) -> list:
    """The Trainer checkpoints in ``folder``, newest first: ``last.pt``, then ``stage{k}.pt`` from the highest k."""
    def rank(p):
        digits = p.stem[5:] if p.stem.startswith("stage") else ""
        return int(digits) if digits.isdigit() else 10**9 if p.name == "last.pt" else -1
    return sorted((p for p in Path(folder).glob("*.pt") if rank(p) >= 0), key=rank, reverse=True)


def save(state: dict, folder: Path, stage: int = None, last_good=None) -> Path:
    """Write ``state`` to ``folder/last.pt`` (and first to ``stage{k}.pt`` when a stage ends), atomically."""
    if stage is not None:
        atomic_save(state, folder / f"stage{stage}.pt", last_good=last_good)
    return atomic_save(state, folder / "last.pt", last_good=last_good)


def start_from(folder: Path, resume: bool, init_from=None) -> tuple:
    """(checkpoint, new_run) a Trainer in ``folder`` begins from: (``last.pt``, False) to continue (``resume``),
    (``init_from``, True) to start a new run from another run's state, or (None, False) for a fresh start. A folder
    that already holds a run is refused (FileExistsError, nothing changed) unless it is continued."""
    held = [p.name for p in checkpoints(folder)] if folder.is_dir() else []
    if "last.pt" in held and resume:
        return folder / "last.pt", False
    if held:
        start = f"train into another out_dir (init_from={folder / held[0]} starts there from its state)"
        why = ("no last.pt to resume from. Nothing was changed. Continue it from its newest stage: cp "
               f"{folder / held[0]} {folder / 'last.pt'}; or {start}" if resume else
               f"{'init_from' if init_from else 'resume=False'} would start a new run in it. Nothing was "
               f"changed. Continue it with resume=True, {start}")
        raise FileExistsError(f"{folder} already holds a run ({', '.join(held)}) and {why}, or delete "
                              f"{folder} to start over.")
    return (None, False) if init_from is None else (Path(init_from), True)


def fingerprint(data) -> dict:
    """What identifies a training set: its name, size, image shape and a hash of (a sample of) its pixels."""
    images = getattr(data, "images", None)
    out = {"name": getattr(data, "name", type(data).__name__), "n": len(data),
           "source": getattr(data, "source", "")}
    if isinstance(images, torch.Tensor):
        flat = images.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 1_000_000)].float().cpu().numpy().tobytes()
        out.update(shape=list(images.shape[1:]), sha1=hashlib.sha1(sample).hexdigest())
    return out


def check(state: dict, cfg, data, path, new_run: bool = False) -> None:
    """Refuse (ValueError, nothing changed) a checkpoint that cannot continue this run: another configuration, other
    data, more epochs than asked for; with ``new_run`` (init_from), other networks or a bank of another size."""
    saved = state["cfg"]
    config_module.from_saved(saved, path)
    names = ARCHITECTURE if new_run else config_module.RUN
    if changed := config_module.diff(saved, cfg, names):
        how = ("init_from needs the same networks and stage schedule" if new_run else "use the run's own parameters "
               f"to continue it, or train into another out_dir (to continue its training there with other learning "
               f"rates or step sizes: init_from={str(path)!r})")
        raise ValueError(f"cannot {'start from' if new_run else 'resume from'} {path}: the configuration differs in "
                         f"{'; '.join(changed)}. Nothing was changed: {how}.")
    if new_run and state["bank"] is not None and len(state["bank"]) != len(data):
        raise ValueError(f"cannot start from {path}: its memory bank holds one latent for each of its "
                         f"{len(state['bank'])} training images, this run has {len(data)}: use the same data.")
    was, now = state.get("data"), fingerprint(data)
    if not new_run and was is not None and (was["n"], was.get("sha1")) != (now["n"], now.get("sha1")):
        what = "other images" if was["n"] == now["n"] else f"{now['n']} images, not {was['n']}"
        raise ValueError(f"cannot resume {path}: it was trained on {was['n']} images of {was['name']} (from "
                         f"{was['source'] or 'memory'}), and this run's training set has {what} (from "
                         f"{now['source'] or 'memory'}). Nothing was changed. Resume with the data it was started "
                         f"with (the same dataset, n_train and data_root), or train into another out_dir.")
    if state["epoch"] > cfg.epochs:
        raise ValueError(f"{path} has trained {state['epoch']} epochs, more than epochs={cfg.epochs}. Nothing "
                         f"was changed: set epochs >= {state['epoch']} to continue it (or to evaluate it as it is).")


def _load(path, device="cpu") -> dict:
    """``torch.load`` of a Trainer checkpoint; raises ValueError (not a checkpoint) or the loader's own error."""
    state = torch.load(path, map_location=device, weights_only=True)
    missing = [k for k in KEYS if k not in state] if isinstance(state, dict) else list(KEYS)
    if missing:
        raise ValueError(f"not a checkpoint of amdre's Trainer (no {', '.join(missing)})")
    return state


def _intact_stage(path: Path):
    """(stage file, its epoch) of the newest stage{k}.pt beside ``path`` that loads, or None."""
    for candidate in checkpoints(path.parent):
        if candidate.name != "last.pt" and candidate != path:
            try:
                return candidate, _load(candidate)["epoch"]
            except Exception:                                 # damaged as well: try the one before
                continue
    return None


def read_checkpoint(path, device="cpu") -> dict:
    """``torch.load(path)`` of a Trainer checkpoint, with clear errors for a missing or damaged file.

    A damaged file (truncated, overwritten, not a checkpoint) raises DamagedCheckpoint naming it, the newest
    intact ``stage{k}.pt`` beside it, and the commands that continue the run from there. A file that is not a
    checkpoint at all (a YAML preset, an image) is named as such, and no command to move it aside is given.
    """
    path = Path(path)
    if not path.is_file():
        hint = (f"; did you mean {path / 'last.pt'}?" if (path / "last.pt").is_file() else
                ": give a checkpoint file written by amdre's Trainer (a run folder's last.pt or stage{k}.pt)")
        raise FileNotFoundError(f"no checkpoint at {path}{hint}")
    try:
        return _load(path, device)
    except Exception as err:                                  # truncated zip, bad pickle, empty file, ...
        if path.suffix != ".pt":
            raise DamagedCheckpoint(f"{path} is not a checkpoint: give a run folder's last.pt or stage{{k}}.pt "
                                    f"(written by amdre's Trainer). Nothing was changed.") from None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        reason = "the file is empty" if path.stat().st_size == 0 else reason
        what = reason if isinstance(err, ValueError) else f"damaged and cannot be read ({reason})"
        found = _intact_stage(path)
        aside = "; ".join(f"mv {p} {p}.damaged" for p in ([path] if found else [path, *(
            p for p in checkpoints(path.parent) if p != path)]))
        if found and path.name != "last.pt":
            hint = f"Use the newest intact stage checkpoint beside it instead: {found[0]} (after epoch {found[1]})."
        elif found:
            hint = (f"The newest intact stage checkpoint beside it is {found[0].name} (saved after epoch {found[1]}). "
                    f"To continue from there: {aside}; cp {found[0]} {path}; then run the same command again.")
        else:
            hint = (f"There is no intact stage checkpoint beside it. To start that run over: {aside}, then run the "
                    f"same command again (or choose another out_dir).")
        raise DamagedCheckpoint(f"the checkpoint {path} is {what}. Nothing was changed. {hint}") from None


def load_checkpoint(path, device: str = "cpu"):
    """(generator, prior, cfg, history) from a checkpoint file or run folder (``last.pt``), frozen, in eval mode."""
    path = Path(path)
    file = path / "last.pt" if path.is_dir() else path
    state = read_checkpoint(file, device)
    cfg = config_module.from_saved(state["cfg"], file)
    g = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(device)
    g.load_state_dict(state["generator"])
    prior = EBMPrior.with_stages(cfg.nz, state["n_stages"], state["prior"]).to(device)
    return g.eval().requires_grad_(False), prior.eval().requires_grad_(False), cfg, state["history"]


# A ratio stage whose log-ratio reaches this many nats at N(0, I) draws or at its memory bank has broken down: NCE's
# optimum is log q_k / p_k, a few nats to a few tens for the densities a stage compares (notebooks 01, 04).
BROKEN_LOG_RATIO = 1e3


def healthy(path) -> tuple:
    """(True, "") when the checkpoint at ``path`` can be trained on; else (False, why): unreadable, non-finite
    weights or losses in its last epoch, or a ratio stage whose log-ratio has exploded."""
    try:
        state = _load(path)
    except Exception as err:                                  # noqa: BLE001 - any unreadable file is unhealthy
        return False, f"it cannot be read ({type(err).__name__})"
    tensors = [*state["generator"].values(), *state["prior"].values()]
    if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
        return False, "it holds non-finite weights"
    h = state["history"]
    last = [i for i, e in enumerate(h.get("epoch", [])) if e == state["epoch"] - 1]
    bad = [k for k in ("gen_loss", "nce_loss") if any(not math.isfinite(h[k][i]) for i in last if i < len(h[k])
                                                      and h[k][i] is not None)]
    if bad:
        return False, f"its last epoch's {' and '.join(bad)} are not finite"
    cfg = config_module.from_saved(state["cfg"], path)
    prior = EBMPrior.with_stages(cfg.nz, state["n_stages"], state["prior"]).eval()
    z = torch.randn(512, cfg.nz, generator=torch.Generator().manual_seed(0))
    if state["bank"] is not None:
        z = torch.cat([z, state["bank"][:512].float().cpu()])
    with torch.no_grad():
        worst = prior.stage_log_ratios(z).abs().max().item() if prior.n_stages else 0.0
    if not worst < BROKEN_LOG_RATIO:
        return False, f"a ratio stage reaches |log r| = {worst:.3g} nats (a broken classifier)"
    return True, ""


def rng_state(*generators: torch.Generator) -> list:
    """The states of the run's own random generators (the noise, the batch order), for a checkpoint."""
    return [g.get_state() for g in generators]


def set_rng_state(states, *generators: torch.Generator) -> None:
    """Restore what ``rng_state`` saved (a generator's state is a CPU byte tensor, also for a GPU's generator).
    A checkpoint of amdre 0.2 saved torch's global state (and the batch order): its noise stream continues here."""
    if isinstance(states, dict):
        noise = states["cuda"][0] if generators[0].device.type == "cuda" and states.get("cuda") else states["torch"]
        states = [noise, states["loader"]]
    for g, s in zip(generators, states):
        g.set_state(s.cpu())


def newest_healthy(folder) -> tuple:
    """((path, epoch), "") of the newest checkpoint in ``folder`` that ``healthy`` accepts, else (None, why not)."""
    reasons = []
    for path in checkpoints(folder):
        ok, why = healthy(path)
        if ok:
            return (path, torch.load(path, map_location="cpu", weights_only=True)["epoch"]), ""
        reasons.append(f"{path.name}: {why}")
    return None, "; ".join(reasons)
