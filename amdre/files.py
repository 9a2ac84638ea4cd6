"""Writing and reading run files so that nothing already written is lost, and every failure says what to do.

* ``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file beside ``path``, which then replaces
  ``path`` in one ``os.replace``. A crash, a full disk or a read-only folder leaves the old file as it was.
  Checkpoints, figures, json files and caches all go through it; a failure is a ``WriteError`` that says
  which file, why (disk full, read-only), what is intact and what to do. ``ensure_dir`` raises a
  ``FolderError`` for a folder that cannot exist (a file in the way, no permission).
* ``read_checkpoint(path)``: ``torch.load`` of a Trainer checkpoint; a damaged one raises ``DamagedCheckpoint``
  naming the file, the newest intact ``stage{k}.pt`` beside it and the commands that continue from there.
* ``checkpoints(folder)``: a run folder's Trainer checkpoints, newest first.
* ``seed_all``, ``rng_state`` / ``set_rng_state``: the random state a checkpoint carries, so a resumed run is exact.
"""
import errno
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


class WriteError(OSError):
    """A file could not be written; the message says where, why, that the old file is intact, and what to do."""


class FolderError(WriteError):
    """A folder cannot exist (a file is in the way) or cannot be created there; nothing was written."""


def ensure_dir(folder) -> Path:
    """Create ``folder`` (and its parents), or raise a FolderError that says why it cannot exist."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        raise FolderError(f"cannot create the folder {folder}: {blocker or err.filename} is a file, not a folder. "
                          f"Nothing was written. Choose another folder (out_dir), or move that file away.") from err
    except OSError as err:
        parent = next((p for p in folder.parents if p.is_dir()), folder.anchor)
        raise FolderError(f"cannot create the folder {folder}: {err.strerror or err}. Nothing was written. Choose "
                          f"a folder you can write to (out_dir), or make {parent} writable.") from err
    return folder


# What a full disk looks like when torch.save (C++) hits it: iostream / zip-writer errors, raised as RuntimeError.
_WRITE_FAILURES = ("iostream", "unexpected pos", "PytorchStreamWriter", "file write failed", "No space")


def _diagnosis(err, folder: Path) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({free})"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{folder} is read-only"
    return f"is the disk full ({free}), or {folder} read-only?"


def atomic_write(path, write, last_good=None) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and ``os.replace``: the old ``path`` survives any failure.

    On failure (disk full, read-only folder, ...) the temporary file is removed and a WriteError names the
    file, the reason, and ``last_good`` (what is still intact; default: the old ``path`` if there is one).
    Other errors of ``write`` (a bug, not the disk) pass through unchanged, the old file intact as well.
    """
    path = Path(path)
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(s in str(err) for s in _WRITE_FAILURES):
            raise
        intact = last_good or (path if path.exists() else None)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise WriteError(f"could not write {path}: {reason} ({_diagnosis(err, path.parent)}). "
                         + (f"Nothing was lost: {intact} is intact. " if intact else "")
                         + f"Free some space or make {path.parent} writable, then run the same command again "
                           f"(a training run resumes from its last checkpoint).") from err
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def atomic_save(obj, path, last_good=None) -> Path:
    """``torch.save(obj, path)`` through ``atomic_write``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), last_good)


def write_json(obj, path) -> Path:
    """``obj`` as indented json at ``path``, through ``atomic_write``."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_yaml(path, hint: str = ""):
    """The YAML at ``path`` (None when empty); malformed YAML raises a ValueError naming the file and the line."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        raise ValueError(f"{path} is not valid YAML ({where}: {getattr(err, 'problem', None) or err}). {hint}") from err


def read_json(path):
    """The json at ``path``, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


class DamagedCheckpoint(RuntimeError):
    """A checkpoint file that torch.load cannot read; the message names it and the intact ones beside it."""


# What every Trainer checkpoint holds (``amdre.train.Trainer.state_dict``).
CHECKPOINT_KEYS = ("cfg", "epoch", "generator", "prior", "n_stages", "opt_g", "opt_ebm", "bank", "history", "rng")


def _load(path, device="cpu") -> dict:
    """``torch.load`` of a Trainer checkpoint; raises ValueError (not a checkpoint) or the loader's own error."""
    state = torch.load(path, map_location=device, weights_only=True)
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise ValueError(f"not a checkpoint of amdre's Trainer (no {', '.join(missing)})")
    return state


def checkpoints(folder) -> list:
    """The Trainer checkpoints in ``folder``, newest first: ``last.pt``, then ``stage{k}.pt`` from the highest k."""
    def rank(p):
        digits = p.stem[5:] if p.stem.startswith("stage") else ""
        return int(digits) if digits.isdigit() else 10**9 if p.name == "last.pt" else -1
    return sorted((p for p in Path(folder).glob("*.pt") if rank(p) >= 0), key=rank, reverse=True)


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
    intact ``stage{k}.pt`` beside it, and the commands that continue the run from there.
    """
    path = Path(path)
    if not path.is_file():
        hint = (f"; did you mean {path / 'last.pt'}?" if (path / "last.pt").is_file() else
                ": give a checkpoint file written by amdre's Trainer (a run folder's last.pt or stage{k}.pt)")
        raise FileNotFoundError(f"no checkpoint at {path}{hint}")
    try:
        return _load(path, device)
    except Exception as err:                                  # truncated zip, bad pickle, empty file, ...
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
        raise DamagedCheckpoint(f"the checkpoint {path} is {what}. Nothing was changed. {hint}") from err


def seed_all(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(loader_gen: torch.Generator) -> dict:
    """Every random state a training run depends on (torch, CUDA, numpy, Python, the batch shuffler), for a checkpoint."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "python": random.getstate(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    """Restore what ``rng_state`` saved: a resumed run then draws the numbers the uninterrupted one would."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    loader_gen.set_state(state["loader"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
