"""Writing and reading run files so that nothing already written is lost, and every failure says what to do.

* ``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file beside ``path``, which then replaces
  ``path`` in one ``os.replace``. A crash, a full disk or a read-only folder leaves the old file as it was.
  Checkpoints, figures, json files and caches all go through it; a failure is a ``WriteError`` that says
  which file, why (disk full, read-only), what is intact and what to do. ``ensure_dir`` raises a
  ``FolderError`` for a folder that cannot exist (a file in the way, no permission).
* ``write_json``, ``read_json``, ``read_yaml``: run files, with errors that name the file.

A training run's checkpoints (what continues a run, a damaged file) are ``amdre.checkpoint``'s.
"""
import errno
import json
import os
import shutil
from pathlib import Path

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
    """The json at ``path``, or None when there is no such file; a damaged file raises a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged: it is not valid JSON ({err}). Nothing was changed. Move it aside "
                         f"(mv {path} {path}.damaged) and run the same command again: amdre writes it anew.") from None
