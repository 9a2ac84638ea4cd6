"""Nothing lost, every failure explained (issue 11): figures, run folders, checkpoints, write failures, presets,
divergence, notebook parameters and images.

Each case checks two things: the message names what went wrong and what to do (and doing what it says then
works), and every file that was there before is still there, unchanged (sha256). The command-line runs train
60 digits for 1-3 epochs (about a second of CPU each, one thread); the papermill and pip-install cases are slow.
"""
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

import amdre.files as files
from amdre import params, paths, pipeline
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
