"""Nothing lost, every failure explained (issue 11): figures, run folders, checkpoints, write failures, presets,
divergence, notebook parameters and images.

Each case checks two things: the message names what went wrong and what to do (and doing what it says then
works), and every file that was there before is still there, unchanged (sha256). The command-line runs train
60 digits for 1-3 epochs (about a second of CPU each, one thread); the papermill and pip-install cases are slow.
"""
import errno
import gzip
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import amdre.files as files
from amdre import params, paths, pipeline, sample_posterior
from amdre.__main__ import main
from amdre.checkpoint import DamagedCheckpoint, load_checkpoint, read_checkpoint
from amdre.config import Config
from amdre.data import load
from amdre.files import FolderError, WriteError, atomic_save, atomic_write
from amdre.train import Trainer, train

REPO = Path(__file__).resolve().parents[1]
# 60 digits in 2 batches, 2 stages of 1 epoch, a tiny generator, no evaluation: well under a second an epoch
TINY = ["--config", "ci", "--n-train", "60", "--n-test", "0", "--batch-size", "30", "--ld-steps", "2", "--ngf", "8",
        "--nz", "4", "--stage-every", "1", "--no-eval", "--progress", "false"]
CHECKPOINTS = ("last.pt", "stage0.pt", "stage1.pt")


# ------------------------------------------------------------------------------------------ helpers
def snapshot(folder) -> dict:
    """{relative path: sha256} of every file under ``folder``."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict, folder, appended=()) -> None:
    """Every file of ``before`` is still in ``folder`` with the same bytes; ``appended`` files (train.log) may have
    grown but start with their old bytes; run.json may have been rewritten but still holds the same run."""
    after = snapshot(folder)
    for name, digest in before.items():
        assert name in after, f"{name} was lost"
        if name in appended:
            continue
        if name == pipeline.RUN_FILE and after[name] != digest:
            assert json.loads((Path(folder) / name).read_text())["created"], "run.json was damaged"
            continue
        assert after[name] == digest, f"{name} changed"


def cli(capsys, out, *args, epochs=2):
    """``python -m amdre`` on the tiny run in ``out``: (exit status, stderr)."""
    capsys.readouterr()
    code = main(TINY + ["--out-dir", str(out), "--epochs", str(epochs), *map(str, args)])
    return code, capsys.readouterr().err


def follow(message: str) -> None:
    """Do the ``mv A B`` and ``cp A B`` steps a message asks for, in its order."""
    for op, a, b in re.findall(r"\b(mv|cp) (\S+) (\S+?)[;,)]?(?=\s|$)", message):
        (shutil.move if op == "mv" else shutil.copyfile)(a, b)


def epoch_of(ckpt) -> int:
    return torch.load(ckpt, weights_only=True)["epoch"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run (last.pt after epoch 2, stage0.pt after 1, stage1.pt after 2), trained once."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(TINY + ["--out-dir", str(out), "--epochs", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "run.json", "stage0.pt", "stage1.pt", "train.log"]
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture(scope="module")
def digits60():
    return load("digits", n=60)


def run_config(run, **changes) -> Config:
    """The Config of the run in ``run``, with ``changes``."""
    return Config(**{**torch.load(run / "stage0.pt", weights_only=True)["cfg"], **changes})


def saved_params(run) -> dict:
    """The parameters of the run in ``run`` (its run.json), for ``pipeline.prepare_run``."""
    return {**json.loads((run / pipeline.RUN_FILE).read_text())["params"], "out_dir": str(run)}


# ------------------------------------------------------------------------------------------ 1. figures/
@pytest.mark.slow
def test_a_failing_notebook_run_leaves_figures_untouched(monkeypatch, tmp_path):
    """papermill on notebook 01 with a sweep too short for its claim: it saves its figures, then its assert fails.
    The README's figures/ stays byte-identical; the figures went to runs/figures (no AMDRE_FIGURES set)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.delenv("AMDRE_FIGURES", raising=False)
    monkeypatch.delenv("AMDRE_ROOT", raising=False)
    nb = REPO / "notebooks/01_nce_2d.ipynb"
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    declared = params._assigned(cell.source)
    tiny = {"n_samples": 200, "steps": 20, "gaps": [1.0, 7.0], "close_gap": 1.0, "far_gap": 7.0, "n_threads": 1}
    tiny = {k: v for k, v in tiny.items() if k in declared or k == "steps"}
    before, start = snapshot(REPO / "figures"), time.time() - 1
    with pytest.raises(PapermillExecutionError, match="AssertionError"):
        papermill.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), parameters=tiny, cwd=str(REPO / "notebooks"),
                                   progress_bar=False)
    assert snapshot(REPO / "figures") == before
    written = [p for p in (REPO / "runs/figures").glob("01_*.png") if p.stat().st_mtime >= start]
    assert written, "the notebook saved no figure before failing: this test no longer tests anything"


def test_figures_default_away_from_the_readme_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("AMDRE_FIGURES", raising=False)
    monkeypatch.delenv("AMDRE_ROOT", raising=False)
    monkeypatch.chdir(REPO / "notebooks")
    assert paths.root() == REPO and paths.figures() == REPO / "runs" / "figures"
    monkeypatch.setenv("AMDRE_FIGURES", str(tmp_path / "stage"))
    assert paths.figures() == tmp_path / "stage"


# ------------------------------------------------------------------------------------------ 2. refusing to mix runs
def test_train_resume_false_refuses_a_finished_run(run, digits60):
    before = snapshot(run)
    with pytest.raises(FileExistsError) as err:
        train(run_config(run), digits60, run, resume=False)
    msg = str(err.value)
    for part in (f"{run} already holds a run (last.pt, stage1.pt, stage0.pt)",
                 "resume=False would start a new run in it. Nothing was changed", "Continue it with resume=True", f"init_from={run / 'last.pt'}", "delete"):
        assert part in msg, part
    assert_unchanged(before, run)
    assert train(run_config(run), digits60, run).epoch == 2          # what it says: resume=True


def test_stage_checkpoints_without_last_pt(run, digits60):
    (run / "last.pt").unlink()
    before = snapshot(run)
    with pytest.raises(FileExistsError) as err:
        Trainer(run_config(run), digits60, run)
    msg = str(err.value)
    assert "no last.pt to resume from" in msg and f"cp {run / 'stage1.pt'} {run / 'last.pt'}" in msg
    assert "resume=False" not in msg
    assert_unchanged(before, run)
    follow(msg)
    assert Trainer(run_config(run), digits60, run).epoch == 2


def test_resume_with_another_config_points_to_init_from(run, digits60, tmp_path):
    before = snapshot(run)
    with pytest.raises(ValueError) as err:
        Trainer(run_config(run, lr_g=1e-4), digits60, run)
    msg = str(err.value)
    assert "configuration differs in lr_g: 0.003 -> 0.0001" in msg and "Nothing was changed" in msg
    assert "resume=False" not in msg and f"init_from='{run / 'last.pt'}'" in msg
    assert_unchanged(before, run)
    t = Trainer(run_config(run, lr_g=1e-4, epochs=3), digits60, tmp_path / "new", init_from=run / "last.pt")
    assert t.epoch == 2 and t.opt_g.param_groups[0]["lr"] == 1e-4
    with pytest.raises(ValueError, match=r"same networks and stage schedule"):
        Trainer(run_config(run, ngf=16), digits60, tmp_path / "other", init_from=run / "last.pt")
    with pytest.raises(ValueError, match=r"memory bank holds one latent for each of its 60 training images, "
                                         r"this run has 30: use the same data"):
        Trainer(run_config(run), load("digits", n=30), tmp_path / "other", init_from=run / "last.pt")
    assert_unchanged(before, run)


@pytest.mark.parametrize("args, expected", [
    (["--sigma", "0.5"], ["already holds a run with other parameters (sigma: 0.3 -> 0.5)", "Nothing was changed",
                          "--init-from {run}/last.pt"]),
    (["--resume", "false"], ["resume=False would start it over", "Nothing was changed", "Set resume=True"]),
    (["--epochs", "1"], ["needs epochs >= 2", "only 1 stage(s) would be trained", "Set epochs >= 2"]),
])
def test_cli_refusals_change_nothing(run, capsys, args, expected):
    before = snapshot(run)
    code, err = cli(capsys, run, *args)
    assert code == 2 and err.startswith("error: ")
    for part in expected:
        assert part.format(run=run) in err, part
    assert_unchanged(before, run)


def test_fewer_epochs_than_trained_are_refused_by_the_trainer(run, digits60, tmp_path):
    before = snapshot(run)
    for kw in ({}, {"init_from": run / "last.pt"}):
        with pytest.raises(ValueError, match=r"needs epochs >= 2 .* Set epochs >= 2 or n_stages <= 1\. Nothing was "
                                             r"written"):
            Trainer(run_config(run, epochs=1), digits60, run if not kw else tmp_path / "new", **kw)
    assert_unchanged(before, run)


# ------------------------------------------------------------------------------------------ 4. damaged checkpoints
DAMAGE = {
    "truncated": lambda b: b[:len(b) // 2],
    "empty": lambda b: b"",
    "overwritten": lambda b: b"not a checkpoint\n" * 64,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_last_pt_through_the_cli(run, capsys, damage):
    (run / "last.pt").write_bytes(DAMAGE[damage]((run / "last.pt").read_bytes()))
    before = snapshot(run)
    code, err = cli(capsys, run)                                     # the same command as the one that trained it
    assert code == 2
    for part in (f"the checkpoint {run / 'last.pt'} is damaged and cannot be read (", "Nothing was changed",
                 "The newest intact stage checkpoint beside it is stage1.pt (saved after epoch 2)",
                 f"mv {run / 'last.pt'} {run / 'last.pt'}.damaged; cp {run / 'stage1.pt'} {run / 'last.pt'}",
                 "run the same command again"):
        assert part in err, part
    assert len(err.strip().splitlines()) == 1                       # one message, not torch's advice
    assert_unchanged(before, run)
    with pytest.raises(DamagedCheckpoint) as direct:                 # the same message from prepare_run
        pipeline.prepare_run(saved_params(run))
    assert f"error: {direct.value}" in err
    assert_unchanged(before, run)
    follow(err)                                                      # do what it says
    assert cli(capsys, run)[0] == 0 and "resuming after epoch 2 of 2" in (run / "train.log").read_text()
    assert snapshot(run)["last.pt.damaged"] == before["last.pt"]     # even the damaged file is kept


@pytest.mark.parametrize("stages", ["none", "damaged"])
def test_damaged_without_an_intact_stage_starts_over(run, capsys, stages):
    for name in CHECKPOINTS:
        if stages == "none" and name != "last.pt":
            (run / name).unlink()
        else:
            (run / name).write_bytes(b"")
    before = snapshot(run)
    code, err = cli(capsys, run)
    assert code == 2 and "There is no intact stage checkpoint beside it. To start that run over: mv " in err
    assert_unchanged(before, run)
    follow(err)
    assert cli(capsys, run)[0] == 0 and epoch_of(run / "last.pt") == 2
    assert all(snapshot(run)[f"{name}.damaged"] == before[name] for name in before if name.endswith(".pt"))


def test_damaged_checkpoint_names_the_newest_intact_stage(run):
    (run / "stage1.pt").write_bytes(b"x")
    (run / "last.pt").write_bytes(b"y")
    with pytest.raises(DamagedCheckpoint, match=r"newest intact stage checkpoint beside it is stage0\.pt "
                                                r"\(saved after epoch 1\)"):
        load_checkpoint(run)
    with pytest.raises(DamagedCheckpoint, match=rf"Use the newest intact stage checkpoint beside it instead: "
                                                rf"{re.escape(str(run / 'stage0.pt'))} \(after epoch 1\)"):
        read_checkpoint(run / "stage1.pt")
    torch.save({"weights": torch.zeros(2)}, run / "other.pt")
    with pytest.raises(DamagedCheckpoint, match=r"other\.pt is not a checkpoint of amdre's Trainer \(no cfg"):
        read_checkpoint(run / "other.pt")
    with pytest.raises(FileNotFoundError, match=rf"did you mean {re.escape(str(run / 'last.pt'))}"):
        read_checkpoint(run)


# ------------------------------------------------------------------------------------------ 5. write failures
def fail_torch_save(monkeypatch, message="basic_ios::clear: iostream error"):
    """torch.save writes some bytes, then fails as a full disk makes it fail."""
    real = torch.save

    def save(obj, f, *a, **kw):
        Path(f).write_bytes(b"partial")
        raise RuntimeError(message)
    monkeypatch.setattr(torch, "save", save)
    return real


def fail_replace(monkeypatch, code, suffix=".pt"):
    """os.replace of a ``suffix`` file fails with ``code`` (ENOSPC: disk full; EROFS: read-only file system)."""
    real = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst).endswith(suffix):
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(files.os, "replace", replace)


WRITE_FAILURES = {  # name: (monkeypatch setup, what the message says happened)
    "disk full in torch.save": (fail_torch_save, "basic_ios::clear: iostream error (is the disk full ("),
    "disk full (ENOSPC)": (lambda mp: fail_replace(mp, errno.ENOSPC), "No space left on device (the disk is full ("),
    "read-only (EROFS)": (lambda mp: fail_replace(mp, errno.EROFS), "Read-only file system ({run} is read-only)"),
}


@pytest.mark.parametrize("failure", sorted(WRITE_FAILURES))
def test_a_failed_checkpoint_write_stops_the_run_and_loses_nothing(run, capsys, monkeypatch, failure):
    setup, happened = WRITE_FAILURES[failure]
    before = snapshot(run)
    setup(monkeypatch)
    code, err = cli(capsys, run, epochs=3)                            # epoch 3 writes stage1.pt, then last.pt
    assert code == 1 and err.startswith("stopped: could not write ")
    for part in (f"could not write {run / 'stage1.pt'}: ", happened.format(run=run),
                 f"Nothing was lost: {run / 'last.pt'} is intact", f"make {run} writable",
                 "run the same command again"):
        assert part in err, part
    log = (run / "train.log").read_text().splitlines()
    assert log[-1].split(" ", 1)[1].startswith("STOPPED: could not write") and "resuming after epoch 2 of 3" in log[-2]
    assert_unchanged(before, run, appended=("train.log",))
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "a temporary file was left"
    monkeypatch.undo()
    assert cli(capsys, run, epochs=3)[0] == 0 and epoch_of(run / "last.pt") == 3     # the same command, resumed


def test_a_log_that_cannot_be_appended_to(run, capsys, monkeypatch):
    """The disk fills up after epoch 3's checkpoint, while its train.log line is written."""
    appends = []

    def full_open(file, mode="r", *a, **kw):
        if "a" in mode and len(appends) == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        appends.append(file) if "a" in mode else None
        return open(file, mode, *a, **kw)
    monkeypatch.setattr(pipeline, "open", full_open, raising=False)
    before = snapshot(run)
    code, err = cli(capsys, run, epochs=3)
    assert code == 1
    assert (f"stopped: could not append to {run / 'train.log'}: No space left on device (disk full, or the folder "
            f"read-only?). The checkpoints in {run} are intact: free some space and run the same command again.") in err
    assert_unchanged({k: v for k, v in before.items() if k not in CHECKPOINTS}, run, appended=("train.log",))
    assert epoch_of(run / "last.pt") == 3 and epoch_of(run / "stage0.pt") == 1
    monkeypatch.undo()
    assert cli(capsys, run, epochs=3)[0] == 0 and "resuming after epoch 3 of 3" in (run / "train.log").read_text()


def test_a_failed_figure_write_keeps_the_old_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from amdre import viz

    fig = plt.figure()
    old = viz.savefig(fig, "f.png", folder=tmp_path)
    before = snapshot(tmp_path)
    fail_replace(monkeypatch, errno.ENOSPC, ".png")
    with pytest.raises(WriteError, match=rf"could not write {re.escape(str(old))}: No space left on device \(the disk "
                                         rf"is full \(.* MB free\)\)\. "
                                         rf"Nothing was lost: {re.escape(str(old))} is intact"):
        viz.savefig(fig, "f.png", folder=tmp_path)
    assert snapshot(tmp_path) == before


def test_other_errors_while_writing_pass_through_unchanged(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def broken(tmp):
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("a bug in the writer")
    with pytest.raises(RuntimeError, match="^a bug in the writer$"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_out_dir_under_a_regular_file(tmp_path, capsys, digits60):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    before = snapshot(tmp_path)
    code, err = cli(capsys, blocker / "run")
    assert code == 2
    assert (f"cannot create the folder {blocker / 'run'}: {blocker} is a file, not a folder. Nothing was written. "
            "Choose another folder (out_dir), or move that file away.") in err
    with pytest.raises(FolderError, match="is a file, not a folder"):
        Trainer(Config(generator="digits", nz=4, ngf=8), digits60, blocker / "a" / "b")
    with pytest.raises(FolderError, match="is a file, not a folder"):
        atomic_save({}, blocker / "x.pt")
    assert snapshot(tmp_path) == before


def test_an_unwritable_folder_is_explained(tmp_path, monkeypatch):
    def mkdir(self, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(FolderError, match=rf"cannot create the folder {re.escape(str(tmp_path / 'x'))}: "
                                          rf"Permission denied\. Nothing was written\. .* make "
                                          rf"{re.escape(str(tmp_path))} writable"):
        files.ensure_dir(tmp_path / "x")


# ------------------------------------------------------------------------------------------ 6. presets
BAD_YAML = {  # case: (content, what the message must say)
    "unclosed list": ("epochs: [1, 2\nnz: 4\n", "line 2, column"),
    "tab": ("epochs: 2\n\tnz: 4\n", "line 2, column"),
    "two colons": ("epochs: 2\nnz: 4: 5\n", "line 2, column"),
    "a list": ("- epochs\n- nz\n", "must hold parameter names and values, 'name: value' lines"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_malformed_preset_names_file_and_line(tmp_path, capsys, case):
    content, expected = BAD_YAML[case]
    preset = tmp_path / "mine.yaml"
    preset.write_text(content)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["--config", str(preset), "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"error: {preset} " in err and expected in err and "configs/svhn.yaml" in err
    assert "Traceback" not in err and snapshot(tmp_path) == before


def test_unknown_preset_lists_the_presets(capsys, tmp_path, monkeypatch):
    assert main(["--config", "imagenet"]) == 2
    assert "no preset 'imagenet'" in capsys.readouterr().err
    monkeypatch.setenv("AMDRE_ROOT", str(tmp_path))
    monkeypatch.setattr(paths, "configs", lambda: tmp_path / "configs")     # an installed copy, no checkout here
    assert main(["--config", "ci"]) == 2
    assert f"presets: none, there is no configs/ folder in {tmp_path}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ 7. divergence, init_from
def test_init_from_through_the_cli(run, capsys, tmp_path):
    before, new = snapshot(run), tmp_path / "new"
    code, err = cli(capsys, new, "--init-from", run / "last.pt", "--lr-g", "1e-3", epochs=3)
    assert code == 0, err
    state = torch.load(new / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["cfg"]["lr_g"] == 1e-3 and state["init_from"] == str(run / "last.pt")
    assert json.loads((new / "run.json").read_text())["params"]["init_from"] == str(run / "last.pt")
    log = (new / "train.log").read_text()
    assert f"starting from {run / 'last.pt'}, after epoch 2 of 3" in log and "epoch 3/3" in log
    assert "epoch 1/" not in log
    assert_unchanged(before, run)
    again = snapshot(new)                                               # the same command again: resumes, done
    assert cli(capsys, new, "--init-from", run / "last.pt", "--lr-g", "1e-3", epochs=3)[0] == 0
    assert "resuming after epoch 3 of 3" in (new / "train.log").read_text()
    assert_unchanged(again, new, appended=("train.log",))
    code, err = cli(capsys, tmp_path / "x", "--init-from", tmp_path / "missing.pt")
    assert code == 2 and f"no checkpoint at {tmp_path / 'missing.pt'}" in err and not (tmp_path / "x").exists()


def diverge_in_epoch(monkeypatch, epoch):
    """Trainer.train_step returns NaN statistics from epoch ``epoch`` (counted from 1) on."""
    real = Trainer.sample_posterior

    def posterior(self, x, z0, n_stages, randn):
        z = real(self, x, z0, n_stages, randn)
        return z * float("nan") if self.epoch + 1 >= epoch else z
    monkeypatch.setattr(Trainer, "sample_posterior", posterior)


def test_divergence_advice_works_as_written(run, capsys, monkeypatch, tmp_path):
    before = snapshot(run)
    diverge_in_epoch(monkeypatch, 3)
    code, err = cli(capsys, run, epochs=3)
    assert code == 1 and err.startswith("training stopped: non-finite training values (gen_loss=nan, ")
    for part in ("in epoch 3 of 3, batch 1, stage 1; the broken state was not saved",
                 f"Last good checkpoint: {run / 'last.pt'} (after epoch 2)", "smaller ld_step_size or learning rates",
                 f"--init-from {run / 'last.pt'}", "new out_dir"):
        assert part in err, part
    assert "STOPPED: non-finite training values" in (run / "train.log").read_text().splitlines()[-1]
    assert_unchanged(before, run, appended=("train.log",))
    monkeypatch.undo()
    advised = re.search(r"--init-from (\S+?)\.?$", err.strip()).group(1)
    code, err = cli(capsys, tmp_path / "careful", "--init-from", advised, "--ld-step-size", "0.005", epochs=3)
    assert code == 0, err
    assert epoch_of(tmp_path / "careful" / "last.pt") == 3
    assert_unchanged(before, run, appended=("train.log",))


def test_divergence_before_any_checkpoint(tmp_path, capsys, monkeypatch):
    diverge_in_epoch(monkeypatch, 1)
    code, err = cli(capsys, tmp_path / "r")
    assert code == 1 and "in epoch 1 of 2, batch 1, stage 0" in err
    assert "No checkpoint was written yet: run again with a smaller ld_step_size or learning rates (the same " \
           "out_dir is fine)" in err
    assert not list((tmp_path / "r").glob("*.pt"))
    monkeypatch.undo()
    assert cli(capsys, tmp_path / "r", "--lr-g", "1e-3")[0] == 0          # what it says


def test_non_finite_weights_are_never_saved(run, digits60):
    t = Trainer(run_config(run, epochs=3), digits60, run)
    before = snapshot(run)
    with torch.no_grad():
        next(t.generator.parameters()).fill_(float("nan"))
    t.epoch = 3
    with pytest.raises(FloatingPointError, match=r"refusing to checkpoint non-finite model weights after epoch 3 of 3, "
                                                 r"stage 1; the broken state was not saved\. Last good checkpoint: "
                                                 r".*last\.pt \(after epoch 2\)"):
        t.save()
    assert_unchanged(before, run)


# ------------------------------------------------------------------------------------------ 3. where files go
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """amdre installed (not editable) into a folder of its own, from a copy of the sources, offline."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "amdre", src / "amdre", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(tmp / "site"), str(src)], check=True, cwd=src, capture_output=True)
    return tmp / "site"


WHERE = """
import json, amdre, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from amdre import paths, viz
saved = viz.savefig(plt.figure(), "where.png")
print(json.dumps({"module": amdre.__file__, "root": str(paths.root()), "runs": str(paths.runs()),
                  "figures": str(paths.figures()), "saved": str(saved)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("place", ["checkout copy", "unrelated folder"])
def test_an_installed_amdre_writes_where_you_work(installed, tmp_path, place):
    if place == "checkout copy":
        work = tmp_path / "checkout"
        (work / "notebooks").mkdir(parents=True)
        shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
        cwd = work / "notebooks"                                   # where papermill / nbval start kernels
    else:
        work = cwd = tmp_path / "elsewhere"
        work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("AMDRE_ROOT", "AMDRE_FIGURES")}
    env["PYTHONPATH"] = str(installed)
    before = snapshot(REPO / "figures")
    out = subprocess.run([sys.executable, "-c", WHERE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["module"].startswith(str(installed)), got           # the installed copy, not this checkout
    assert got["root"] == str(work.resolve()) and got["runs"] == str(work.resolve() / "runs")
    assert got["figures"] == str(work.resolve() / "runs" / "figures") and Path(got["saved"]).is_file()
    assert snapshot(REPO / "figures") == before
    if place == "unrelated folder":                               # no presets here: the message says so
        out = subprocess.run([sys.executable, "-m", "amdre", "--config", "ci"], cwd=cwd, env=env, capture_output=True,
                             text=True)
        assert out.returncode == 2
        assert f"presets: none, there is no configs/ folder in {work.resolve()}" in out.stderr


# ------------------------------------------------------------------------------------------ 8. papermill's parser
NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(nb, caplog):
    import papermill

    cells = [c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    source = cells[0].source
    assert source.startswith("# parameters\n"), "the parameters cell starts with '# parameters'"
    declared = params._assigned(source)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = papermill.inspect_notebook(str(nb))
    unparsed = [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert not unparsed, unparsed
    assert list(found) == list(declared)


# ================================================================================== issue 21: one case per row
# Every case: the message names the file or parameter and the next step, and what was there is unchanged (sha256).
HOLD = """
import os, sys, time
from pathlib import Path
from amdre import pipeline
from amdre.__main__ import main

gate, hold_after = Path(sys.argv[1]), int(sys.argv[2])
while not (gate / "go").exists():
    time.sleep(0.01)
log = pipeline.EpochLog.__call__


def hold(self, trainer):
    log(self, trainer)
    if trainer.epoch == hold_after:
        (gate / f"running-{os.getpid()}").touch()
        while not (gate / "finish").exists():
            time.sleep(0.01)


pipeline.EpochLog.__call__ = hold
sys.exit(main(sys.argv[3:]))
"""


def held_run(gate, out, epochs):
    """``python -m amdre`` on the tiny run in ``out``, in a process of its own: it starts once ``gate/go`` exists, and
    after epoch 1 it touches ``gate/running-<pid>`` and waits until ``gate/finish`` exists."""
    return subprocess.Popen([sys.executable, "-c", HOLD, str(gate), "1", *TINY, "--out-dir", str(out), "--epochs",
                             str(epochs)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what, limit=300):
    """Poll ``condition`` until it holds (a guard against a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.05)


def cli_eval(capsys, out, *args, epochs=2):
    """``cli`` with the evaluation (30 test images, no sample score unless asked): (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main([a for a in TINY if a != "--no-eval"] + ["--out-dir", str(out), "--epochs", str(epochs), "--n-test",
                                                         "30", "--fid-samples", "0", *map(str, args)])
    got = capsys.readouterr()
    return code, got.out, got.err


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------ 1. one process per folder
@pytest.mark.slow
def test_two_processes_on_one_run_folder(tmp_path, capsys):
    """Two runs started at the same moment on one out_dir: one trains, the other is refused at once, naming it."""
    out, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    procs = [held_run(gate, out, epochs=2) for _ in range(2)]
    try:
        (gate / "go").touch()
        wait_for(lambda: any(gate.glob("running-*")) and any(p.poll() is not None for p in procs),
                 "running process and refused process")
        winner = next(p for p in procs if (gate / f"running-{p.pid}").exists())
        loser = next(p for p in procs if p is not winner)
        before = snapshot(out)                                       # the winner waits: nothing changes meanwhile
        err = loser.communicate()[1]
        assert loser.returncode == 2, err
        for part in (f"error: {out.resolve()} is in use by another amdre process (pid {winner.pid} on host "
                     f"{socket.gethostname()}, started ", "running `python -m amdre --config ci ",
                     "Nothing was changed", "choose another out_dir"):
            assert part in err, part
        assert snapshot(out) == before
        (gate / "finish").touch()
        assert winner.wait(timeout=300) == 0, winner.communicate()[1]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "run.json", "stage0.pt", "stage1.pt", "train.log"]
    log = (out / "train.log").read_text()
    assert log.count("starting of 2") == 1 and "STOPPED" not in log and epoch_of(out / "last.pt") == 2
    code, stdout, err = cli_eval(capsys, out)                        # the finished run is evaluated afterwards
    assert code == 0 and "test MSE " in stdout, err
    run_json, metrics = (json.loads((out / name).read_text()) for name in (pipeline.RUN_FILE, pipeline.METRICS_FILE))
    assert metrics["params"]["seed"] == run_json["params"]["seed"] == torch.load(out / "last.pt")["cfg"]["seed"]
    assert not (out / ".lock").exists()


LOCKS = {  # case: (the lock file a run left, exit status, what the message says, where it says it)
    "stale, this host": (lambda: {"pid": dead_pid(), "host": socket.gethostname()}, 0,
                         "took over the lock of {run} left by pid {pid} on host {host}, started 2020-01-01T00:00:00"
                         "+00:00, running `python -m amdre --config ci`, which is no longer running", "note"),
    "another host": (lambda: {"pid": 1, "host": "elsewhere.example"}, 2,
                     "{run} is locked by pid 1 on host elsewhere.example, started 2020-01-01T00:00:00+00:00, running "
                     "`python -m amdre --config ci`, another host, which this host cannot check. Nothing was changed. "
                     "If that process is no longer running, delete {run}/.lock and run again", "error"),
}


@pytest.mark.parametrize("case", sorted(LOCKS))
def test_a_lock_left_behind(run, capsys, case):
    """A run killed outright (no chance to let go) leaves its .lock: taken over on this host, refused from another."""
    make, status, message, where = LOCKS[case]
    holder = {**make(), "started": "2020-01-01T00:00:00+00:00", "command": "python -m amdre --config ci"}
    (run / ".lock").write_text(json.dumps(holder))
    before = snapshot(run)
    code, err = cli(capsys, run, epochs=3)
    assert code == status, err
    assert f"{where}: {message.format(run=run.resolve(), **holder)}" in err
    if status == 0:
        assert f"NOTE: {message.format(run=run.resolve(), **holder)}" in (run / "train.log").read_text()
        assert epoch_of(run / "last.pt") == 3 and not (run / ".lock").exists()
    else:
        assert snapshot(run) == before


# ------------------------------------------------------------------------------------------ 2, 4, 11: refused up front
FRESH_REFUSALS = {  # case: (arguments, what the message says); nothing is written, not even the folder
    "stages dropped": (["--epochs", "3", "--n-stages", "2", "--stage-every", "4"],
                       ["n_stages=2 with a new stage every stage_every=4 epochs needs epochs >= 5",
                        "with epochs=3 only 1 stage(s) would be trained", "Set epochs >= 5 or n_stages <= 1 or "
                        "stage_every <= 2"]),
    "n_train above the dataset": (["--n-train", "100000"],
                                  ["n_train=100000 but digits has 1,437 training images (read from ",
                                   "set n_train to at most 1437 or None (all). Nothing was written."]),
    "ld_steps 0": (["--ld-steps", "0"], ["ld_steps must be an int >= 1; got 0"]),
    "init_from a preset": (["--init-from", "configs/ci.yaml"],
                           [f"{REPO / 'configs/ci.yaml'} is not a checkpoint: give a run folder's last.pt or "
                            "stage{k}.pt (written by amdre's Trainer). Nothing was changed."]),
}


@pytest.mark.parametrize("case", sorted(FRESH_REFUSALS))
def test_refused_before_anything_is_written(tmp_path, capsys, case):
    args, expected = FRESH_REFUSALS[case]
    before = snapshot(tmp_path)
    code, err = cli(capsys, tmp_path / "run", *args)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    for part in expected:
        assert part in err, part
    assert "mv " not in err
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_notebook_05_refuses_in_its_first_cell(tmp_path):
    """Notebook 05's first cell (check_params, config_from_params, prepare_run) refuses the same, writing nothing."""
    from amdre.config import load_preset

    base = {**load_preset("ci"), "out_dir": str(tmp_path / "run"), "progress": False}
    with pytest.raises(ValueError, match=r"needs epochs >= 5 .* Set epochs >= 5"):
        pipeline.check_params({**base, "epochs": 3, "n_stages": 2, "stage_every": 4})
    run = pipeline.check_params({**base, "n_train": 100000})
    with pytest.raises(ValueError, match=r"n_train=100000 but digits has 1,437 training images .* at most 1437"):
        pipeline.prepare_run(run)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ 3, 9: data on disk
def fashion_root(root, n_train, damage=None):
    """A data folder holding a valid fashion-mnist (gzipped IDX) of ``n_train`` training images; ``damage(bytes)``
    replaces the bytes of its training images file."""
    from test_data import write_idx

    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n_train)
    for prefix, n in (("train", n_train), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    images = folder / "train-images-idx3-ubyte.gz"
    if damage is not None:
        images.write_bytes(damage(images.read_bytes()))
    return images


FASHION = ["--dataset", "fashion-mnist", "--generator", "", "--n-train", "None"]


def test_resume_on_other_data_is_refused(tmp_path, capsys):
    """A memory-bank run on 60 images, resumed with a data_root holding a valid copy of 40: refused."""
    fashion_root(tmp_path / "a", 60)
    fashion_root(tmp_path / "b", 40)
    out = tmp_path / "run"
    assert cli(capsys, out, *FASHION, "--data-root", tmp_path / "a")[0] == 0
    before = snapshot(out)
    code, err = cli(capsys, out, *FASHION, "--data-root", tmp_path / "b", epochs=3)
    assert code == 2
    assert (f"error: cannot resume {out / 'last.pt'}: it was trained on 60 images of fashion-mnist (from "
            f"{tmp_path / 'a' / 'fashion-mnist'}), and this run's training set has 40 images, not 60 (from "
            f"{tmp_path / 'b' / 'fashion-mnist'}). Nothing was changed. Resume with the data it was started "
            f"with") in err
    assert snapshot(out) == before
    assert cli(capsys, out, *FASHION, "--data-root", tmp_path / "a", epochs=3)[0] == 0    # what it says
    assert epoch_of(out / "last.pt") == 3


DAMAGED_DATA = {  # case: what happened to train-images-idx3-ubyte.gz
    "truncated gzip": lambda b: b[:len(b) // 2],
    "empty file": lambda b: b"",
    "short content": lambda b: gzip.compress(gzip.decompress(b)[:1000]),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_DATA))
def test_damaged_dataset_file_is_named(tmp_path, capsys, case):
    images = fashion_root(tmp_path / "data", 60, DAMAGED_DATA[case])
    before = snapshot(tmp_path)
    expected = (f"{images} is damaged or not in the expected format (", "Nothing was loaded. Move it aside and get a "
                "good copy: Fetch it (30 MB) with `python -m amdre.data fetch fashion-mnist`")
    with pytest.raises(ValueError) as err:
        load("fashion-mnist", tmp_path / "data")
    assert all(part in str(err.value) for part in expected), str(err.value)
    code, cli_err = cli(capsys, tmp_path / "run", *FASHION, "--data-root", tmp_path / "data")
    assert code == 2 and all(part in cli_err for part in expected) and "Traceback" not in cli_err
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_crafted_cifar_pickle_runs_nothing(tmp_path):
    """A data_batch_1 whose pickle would call open(marker, "w") while loading: refused, and nothing ran."""
    from test_data import make_cifar

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")
    make_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        load("cifar10", tmp_path)
    assert not marker.exists(), "the pickle's payload ran"
    msg = str(err.value)
    assert f"{batch} is damaged or not in the expected format (UnpicklingError: it asks for " in msg
    assert "Move it aside and get a good copy: Fetch it (0.2 GB) with `python -m amdre.data fetch cifar10`" in msg
    assert snapshot(tmp_path) == before


def test_fetch_offline_says_what_to_do(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision
    from amdre import data

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    (tmp_path / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    assert data.main(["fetch", "mnist", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for part in ("error: could not download mnist ([Errno -3] Temporary failure in name resolution): is this machine "
                 f"offline? Nothing usable was written to {tmp_path}. Copy the files there by hand instead: ",
                 "or use 'mnist5k'"):
        assert part in err, part
    assert "Traceback" not in err and snapshot(tmp_path) == before


def test_fashion12k_from_the_command_line(tmp_path, capsys):
    """The dataset committed in data/ trains from the command line, with its own generator."""
    code, err = cli(capsys, tmp_path / "run", "--dataset", "fashion12k", "--generator", "")
    assert code == 0, err
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["cfg"]["dataset"] == "fashion12k" and state["cfg"]["generator"] == "mnist"
    assert "fashion12k (60 images)" in (tmp_path / "run" / "train.log").read_text()


# ------------------------------------------------------------------------------------------ 5. divergence, a bad run
def test_divergence_advice_names_the_setting_and_works(tmp_path, capsys):
    before = snapshot(tmp_path)
    code, err = cli(capsys, tmp_path / "wild", "--lr-ebm", "1e6", epochs=3)
    assert code == 1 and err.startswith("training stopped: non-finite training values")
    for part in ("No checkpoint of this run is healthy (last.pt: a ratio stage reaches |log r| = ",
                 "start over in a new out_dir with a smaller ld_step_size or learning rates",
                 "Far above amdre's defaults: lr_ebm=1e+06 (default 0.0005)."):
        assert part in err, part
    assert "STOPPED: " in (tmp_path / "wild" / "train.log").read_text().splitlines()[-1]
    assert_unchanged(before, tmp_path)
    changes = [a for name, default in re.findall(r"(\w+)=\S+ \(default ([^)]+)\)", err)
               for a in (f"--{name.replace('_', '-')}", default)]
    assert changes == ["--lr-ebm", "0.0005"]
    code, err = cli(capsys, tmp_path / "careful", "--lr-ebm", "1e6", *changes, epochs=3)      # what it says
    assert code == 0, err
    assert epoch_of(tmp_path / "careful" / "last.pt") == 3


def test_a_run_worse_than_the_mean_image_warns(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = cli_eval(capsys, out, "--lr-g", "100")
    assert code == 0, err
    metrics = json.loads((out / pipeline.METRICS_FILE).read_text())
    assert metrics["mse_vs_mean_image"] > 1
    assert metrics["mse"]["value"] > metrics["mse"]["mean_image_mse"] > 0
    warning = (f"WARNING: the test reconstruction MSE {metrics['mse']['value']:.4g} is no better than the mean test "
               f"image's {metrics['mse']['mean_image_mse']:.4g}")
    assert warning in err and "smaller learning rates (lr_g=100, " in err
    assert warning in (out / "train.log").read_text().splitlines()[-1].split(" ", 1)[1]
    assert len(metrics["warnings"]) == 1 and f"WARNING: {metrics['warnings'][0]}\n" in err
    assert f"({metrics['mse_vs_mean_image']:.0%} of the mean image's)" in stdout
    from amdre import metrics

    monkeypatch.setattr(metrics, "reconstruction_mse", lambda *a, **kw: 0.01)     # as a run that learned something
    assert cli_eval(capsys, tmp_path / "fine")[0] == 0
    fine = json.loads((tmp_path / "fine" / pipeline.METRICS_FILE).read_text())
    assert fine["mse_vs_mean_image"] < 1 and "warnings" not in fine


def test_skipped_scores_are_named_not_none(tmp_path, capsys):
    code, stdout, err = cli_eval(capsys, tmp_path / "run", "--n-test", "0")
    assert code == 0, err
    assert "no test MSE (n_test=0); no sample score (fid_samples=0); see " in stdout and "None" not in stdout


# ---------------------------------------------------------------------------------------- 7, 11: a finished run's files
def newer_checkpoint(run):
    state = torch.load(run / "last.pt", weights_only=True)
    state["cfg"]["future_knob"] = 1
    torch.save(state, run / "last.pt")


RUN_REFUSALS = {  # case: (what happened to the run, evaluate?, what the message says, whether following it works)
    "checkpoint of a newer amdre": (newer_checkpoint, False,
                                    "{run}/last.pt was written by a newer version of amdre: it has the setting(s) "
                                    "'future_knob', which this version does not know. Update amdre (git pull, then "
                                    "make install) to continue or evaluate it. Nothing was changed.", False),
    "checkpoint of a newer amdre, evaluated": (newer_checkpoint, True, "{run}/last.pt was written by a newer version "
                                               "of amdre: it has the setting(s) 'future_knob'", False),
    "truncated run.json": (lambda run: (run / "run.json").write_text((run / "run.json").read_text()[:50]), False,
                           "{run}/run.json is damaged: it is not valid JSON (", True),
    "truncated metrics.json": (lambda run: (run / "metrics.json").write_text('{"params": {"dataset": "dig'), True,
                               "{run}/metrics.json is damaged: it is not valid JSON (", True),
}


@pytest.mark.parametrize("case", sorted(RUN_REFUSALS))
def test_a_finished_runs_unreadable_files(run, capsys, case):
    damage, evaluate, message, followable = RUN_REFUSALS[case]
    damage(run)
    before = snapshot(run)
    code, *_, err = cli_eval(capsys, run) if evaluate else cli(capsys, run)
    assert code == 2 and f"error: {message.format(run=run)}" in err and "Traceback" not in err
    assert snapshot(run) == before
    if followable:
        assert "Nothing was changed. Move it aside (mv " in err
        follow(err)
        code, *_, err = cli_eval(capsys, run) if evaluate else cli(capsys, run)
        assert code == 0, err


# ------------------------------------------------------------------------------------------ 8. the FD-classifier cache
def damage_file(cache, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"half a classifier")


def read_only_cache(cache, monkeypatch):
    """torch.save of the cache fails as it does in a read-only folder."""
    real = torch.save

    def save(obj, f, *a, **kw):
        if Path(f).name.startswith(".fd_classifier"):
            raise RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: "
                               "Permission denied")
        return real(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)


FD_CACHE = {  # case: (setup(cache, monkeypatch), the warning, whether the cache is there and loads afterwards)
    "kept beside the run": (lambda cache, mp: None, None, True),
    "damaged": (damage_file, "the FD-classifier cache {cache} is damaged (", True),
    "read-only": (read_only_cache, "could not cache the FD-classifier (scoring works without it; the next evaluation "
                                   "trains it again): could not write {cache}: open file failed with strerror: "
                                   "Permission denied ({folder} is read-only)", False),
}


@pytest.mark.parametrize("case", sorted(FD_CACHE))
def test_fd_classifier_cache_beside_the_run(tmp_path, capsys, monkeypatch, case):
    """A run kept outside the checkout caches its FD-classifier beside its folder, not in the working directory's
    runs/; a damaged cache is rebuilt, one that cannot be written is skipped, each with a warning naming the file."""
    from amdre import metrics

    setup, warning, cached = FD_CACHE[case]
    checkout, folder = tmp_path / "checkout", tmp_path / "elsewhere"
    monkeypatch.setenv("AMDRE_ROOT", str(checkout))
    monkeypatch.setattr(metrics, "fid_weights_available", lambda *a, **kw: False)
    cache = folder / "fd_classifier-digits-n60-e5.pt"
    setup(cache, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = cli_eval(capsys, folder / "run", "--fid-samples", "30")
    assert code == 0, err
    assert "fd_classifier " in stdout
    said = [str(w.message) for w in caught if "FD-classifier" in str(w.message)]
    if warning is None:
        assert not said, said
    else:
        assert any(warning.format(cache=cache, folder=folder) in s for s in said), said
    assert cache.is_file() == cached and not checkout.exists()
    if cached:
        metrics.load_feature_classifier(cache)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "a temporary file was left"


TORCH_OPEN_FAILURES = {  # what torch.save raises when it cannot open the file: (message, the diagnosis)
    "errno 13": ("[enforce fail at inline_container.cc:672] . open file failed because of errno 13 on fopen: "
                 "Permission denied, file path: {tmp}", "{folder} is read-only"),
    "errno 30": ("[enforce fail at inline_container.cc:672] . open file failed because of errno 30 on fopen: "
                 "Read-only file system, file path: {tmp}", "{folder} is read-only"),
    "strerror": ("[enforce fail at inline_container.cc:747] . open file failed with strerror: Permission denied",
                 "{folder} is read-only"),
    "cannot be opened": ("File {tmp} cannot be opened.", "or {folder} read-only?"),
}


@pytest.mark.parametrize("case", sorted(TORCH_OPEN_FAILURES))
def test_torch_cannot_open_the_file(tmp_path, monkeypatch, case):
    message, diagnosis = TORCH_OPEN_FAILURES[case]
    target = tmp_path / "cache.pt"
    atomic_save({"old": 1}, target)
    before = snapshot(tmp_path)

    def save(obj, f, *a, **kw):
        raise RuntimeError(message.format(tmp=f))
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(WriteError) as err:
        atomic_save({"new": 2}, target)
    msg = str(err.value)
    assert msg.startswith(f"could not write {target}: ") and "enforce fail" not in msg
    assert diagnosis.format(folder=tmp_path) in msg and f"Nothing was lost: {target} is intact" in msg
    assert snapshot(tmp_path) == before


def celeba_damaged_cache(base, monkeypatch):
    (base / "cache_train_40000_64.pt").write_bytes(b"half a cache")


def celeba_read_only(base, monkeypatch):
    real = torch.save

    def save(obj, f, *a, **kw):
        if Path(f).name.startswith(".cache_"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . open file failed because of errno 30 on "
                               f"fopen: Read-only file system, file path: {f}")
        return real(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)


CELEBA_CACHE = {  # case: (setup(celeba folder, monkeypatch), the warning, whether a good cache is there afterwards)
    "damaged": (celeba_damaged_cache, "the CelebA cache {cache} is damaged (", True),
    "read-only": (celeba_read_only, "could not write the CelebA cache (loading works without it, only slower): could "
                                    "not write {cache}: open file failed because of errno 30 on fopen: Read-only file "
                                    "system", False),
}


@pytest.mark.parametrize("case", sorted(CELEBA_CACHE))
def test_celeba_cache_is_derived_data(tmp_path, monkeypatch, case):
    from test_data import make_celeba

    setup, warning, cached = CELEBA_CACHE[case]
    base, cache = tmp_path / "celeba", tmp_path / "celeba" / "cache_train_40000_64.pt"
    make_celeba(base)
    setup(base, monkeypatch)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.endswith(cache.name)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load("celeba", tmp_path).images
    assert len(images) == 8 and images.mean() > 0.95
    assert any(warning.format(cache=cache) in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert (cache.is_file() and torch.equal(torch.load(cache, weights_only=True).float() / 127.5 - 1, images)
            if cached else not cache.exists())
    assert_unchanged(before, tmp_path)
    assert not list(base.glob(".*tmp*")), "a temporary file was left"


# ------------------------------------------------------------------------------------------ 10. tensors of another kind
BAD_TENSORS = {  # case: (call(generator, prior, x, z), what the message says)
    "x float64": (lambda g, prior, x, z: sample_posterior(g, prior, x.double(), n_steps=1),
                  "x must hold float32 pixels in [-1, 1], the generator's dtype; got torch.float64 "
                  "(x.to(torch.float32) converts it)"),
    "x uint8": (lambda g, prior, x, z: sample_posterior(g, prior, ((x + 1) * 127.5).to(torch.uint8), n_steps=1),
                "x must hold float32 pixels in [-1, 1], the generator's dtype; got torch.uint8 (uint8 pixels: "
                "x.float() / 127.5 - 1 maps 0..255 to [-1, 1])"),
    "x numpy": (lambda g, prior, x, z: sample_posterior(g, prior, x.numpy(), n_steps=1),
                "x must be a torch tensor of images [B, C, H, W] in [-1, 1]; got ndarray "
                "(torch.as_tensor(x, dtype=torch.float32) converts a numpy array)"),
    "z float64": (lambda g, prior, x, z: prior.log_prob(z.double()),
                  "z must be float32, the prior's dtype; got torch.float64 (z.to(torch.float32) converts it, or "
                  "prior.to(z.dtype) the prior)"),
    "z numpy": (lambda g, prior, x, z: prior.log_prob(z.numpy()),
                "z must be a torch tensor [N, 4]; got ndarray (torch.as_tensor(z, dtype=torch.float32) converts a "
                "numpy array)"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_tensors_of_another_kind_are_named(case):
    from conftest import tiny_model

    call, message = BAD_TENSORS[case]
    g, prior, x = tiny_model()
    z = torch.randn(len(x), 4)
    before = [t.clone() for t in (x, z, *g.state_dict().values(), *prior.state_dict().values())]
    with pytest.raises(ValueError) as err:
        call(g, prior, x, z)
    assert str(err.value) == message
    after = [x, z, *g.state_dict().values(), *prior.state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


# ------------------------------------------------------------------------------------------ 11. stopped, killed
@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_same_command_resumes(tmp_path, capsys):
    out, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    (gate / "go").touch()
    proc = held_run(gate, out, epochs=3)
    try:
        wait_for(lambda: (gate / f"running-{proc.pid}").exists() or proc.poll() is not None, "epoch 1")
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert ("stopped: stopped by SIGTERM. The run continues from its last checkpoint when the same command is run "
            "again.") in err and "Traceback" not in err
    assert ((out / "train.log").read_text().splitlines()[-1].split(" ", 1)[1] ==
            "STOPPED: stopped by SIGTERM during epoch 2; last.pt holds epoch 1, and the same command continues from "
            "there")
    assert read_checkpoint(out / "last.pt")["epoch"] == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "a lock or temporary file was left"
    before = snapshot(out)
    code, err = cli(capsys, out, epochs=3)                             # the same command
    assert code == 0, err
    assert "resuming after epoch 1 of 3" in (out / "train.log").read_text() and epoch_of(out / "last.pt") == 3
    assert_unchanged({k: v for k, v in before.items() if k not in CHECKPOINTS}, out, appended=("train.log",))


def test_temporary_files_of_a_killed_writer_are_removed(run, capsys):
    """A kill during a checkpoint write leaves .last.tmp<pid>.pt: removed when the run folder is opened, while a
    running process's temporary file is left alone."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        dead = dead_pid()
        (run / f".last.tmp{dead}.pt").write_bytes(b"half a checkpoint")
        (run / f".stage1.tmp{live.pid}.pt").write_bytes(b"being written")
        before = snapshot(run)
        code, err = cli(capsys, run, epochs=3)
        assert code == 0, err
        note = f"removed 1 temporary file(s) of a process killed while writing: .last.tmp{dead}.pt"
        assert f"note: {note}" in err and f"NOTE: {note}" in (run / "train.log").read_text()
        assert not (run / f".last.tmp{dead}.pt").exists()
        assert_unchanged({k: v for k, v in before.items() if k not in CHECKPOINTS and ".last.tmp" not in k}, run,
                         appended=("train.log",))
    finally:
        live.kill()
        live.wait()
