"""Writing and reading run files so that nothing already written is lost, and every failure says what to do.

* ``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file beside ``path``, which then replaces
  ``path`` in one ``os.replace``. A crash, a full disk or a read-only folder leaves the old file as it was.
  Checkpoints, figures, json files and caches all go through it; a failure is a ``WriteError`` that says
  which file, why (disk full, read-only), what is intact and what to do. ``ensure_dir`` raises a
  ``FolderError`` for a folder that cannot exist (a file in the way, no permission).
* ``write_json``, ``read_json``, ``read_yaml``: run files, with errors that name the file.
* ``lock_folder(folder)`` / ``unlock_folder(folder)``: one process at a time in a run folder (``.lock``, an OS lock
  held by the process, with its pid, host, start time and command for the message another process gets);
  ``remove_stale_temps(folder)``: the temporary files of writers that died mid-write (a kill during a checkpoint).

A training run's checkpoints (what continues a run, a damaged file) are ``amdre.checkpoint``'s.
"""
import atexit
import datetime
import errno
import json
import os
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:                                           # Windows: the lock file's pid is checked instead
    fcntl = None

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


# What a full disk or a read-only folder looks like when torch.save (C++) hits it: iostream / zip-writer errors and
# failures to open the file ("open file failed because of errno 13 on fopen", "File ... cannot be opened."), raised
# as RuntimeError.
_WRITE_FAILURES = ("iostream", "unexpected pos", "PytorchStreamWriter", "file write failed", "No space",
                   "open file failed", "cannot be opened")
_READ_ONLY = ("errno 13", "errno 30", "Permission denied", "Read-only file system")


def _diagnosis(err, folder: Path) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and "No space" in str(err)):
        return f"the disk is full ({free})"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or (code is None and any(s in str(err) for s in _READ_ONLY)):
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
        reason = re.sub(r"^\[enforce fail at [^\]]*\][ .]*", "", reason)          # torch's C++ prefix
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


# ------------------------------------------------------------------------------------------ one process per folder
LOCK_NAME = ".lock"
_HELD = {}                       # folder -> (descriptor of its lock file, whether taking the lock created the folder)


class FolderLocked(RuntimeError):
    """Another process works in the folder (it holds its lock); the message names it and what to do."""


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                                   # another user's process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _holder(text: str) -> str:
    """'pid 12, host h, started T, running `cmd`' of a lock file's json."""
    try:
        who = json.loads(text)
        return (f"pid {who['pid']} on host {who['host']}, started {who['started']}, running "
                f"`{who['command']}`")
    except (ValueError, TypeError, KeyError):
        return "a process that is just starting"


def lock_folder(folder, command: str = None) -> str:
    """Take ``folder``'s lock (``folder/.lock``) for this process, creating the folder if needed; nothing else is
    written. Holding it already is fine. Returns '' or, when the lock of a process that is no longer running on this
    host was left behind (killed), a note saying it was taken over.

    The lock is an OS lock (``flock``) on the file, held until ``unlock_folder`` or the end of the process (also
    a crash: the OS lets go), so two processes never both hold it; the file records pid, host, start time and command
    for the message a second process gets (FolderLocked, nothing changed). A lock recorded by another host is not
    taken over (its process may be running there): the message says to delete it if not.
    """
    folder = Path(folder).resolve()
    if folder in _HELD:
        return ""
    created, path = not folder.exists(), folder / LOCK_NAME
    ensure_dir(folder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if path.exists() and os.fstat(fd).st_ino == path.stat().st_ino:
                break                                         # else its holder removed it meanwhile: take the new one
        except BlockingIOError:
            holder = os.read(fd, 1 << 16).decode(errors="replace")
            os.close(fd)
            raise FolderLocked(f"{folder} is in use by another amdre process ({_holder(holder)}). Nothing was "
                               f"changed. Wait for it to end (a notebook's kernel holds its run folder until the "
                               f"kernel is shut down) or stop it, then run again; or choose another out_dir.") from None
        os.close(fd)
    old = os.read(fd, 1 << 16).decode(errors="replace")
    note = _stale(folder, old)
    if isinstance(note, FolderLocked):
        os.close(fd)
        raise note
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or shlex.join(sys.argv),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _HELD[folder] = (fd, created)
    return note


def _stale(folder: Path, old: str):
    """'' (no lock was left here), a note that a dead process's lock is taken over, or the FolderLocked to raise."""
    try:
        who = json.loads(old)
        pid, host = int(who["pid"]), who["host"]
    except (ValueError, TypeError, KeyError):
        return ""
    if pid == os.getpid() and host == socket.gethostname():
        return ""
    if host != socket.gethostname():
        return FolderLocked(f"{folder} is locked by {_holder(old)}, another host, which this host cannot check. "
                            f"Nothing was changed. If that process is no longer running, delete {folder / LOCK_NAME} "
                            f"and run again; or choose another out_dir.")
    if fcntl is None and alive(pid):
        return FolderLocked(f"{folder} is in use by another amdre process ({_holder(old)}). Nothing was changed. "
                            f"Wait for it to end, then run again; or choose another out_dir.")
    return f"took over the lock of {folder} left by {_holder(old)}, which is no longer running"


def unlock_folder(folder) -> None:
    """Let go of ``folder``'s lock (if this process holds it): the lock file goes, and so does the folder when taking
    the lock created it and nothing else was written there."""
    folder = Path(folder).resolve()
    fd, created = _HELD.pop(folder, (None, False))
    if fd is None:
        return
    try:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        if created:
            folder.rmdir()
    except OSError:
        pass                                                  # not empty: a run was written there
    finally:
        os.close(fd)


def holds_lock(folder) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return Path(folder).resolve() in _HELD


@atexit.register
def _release_all() -> None:
    """At the end of the process (a notebook kernel that took a run folder's lock in ``prepare_run``): let go."""
    for folder in list(_HELD):
        unlock_folder(folder)


_TEMP = re.compile(r"^\..+\.tmp(\d+)(\.[^.]*)?$")                # atomic_write's .{stem}.tmp{pid}{suffix}


def remove_stale_temps(folder) -> list:
    """Remove the temporary files ``atomic_write`` left in ``folder`` when its process died mid-write (killed during a
    checkpoint write); a running process's file is never touched. Returns the names removed."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp*")):
        match = _TEMP.match(path.name)
        if match and path.is_file() and not alive(int(match.group(1))):
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass
    return removed
