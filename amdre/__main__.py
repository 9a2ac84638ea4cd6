"""The command line: ``python -m amdre --config configs/svhn.yaml [--epochs 100] [--device cuda] ...``

Trains (or resumes) one paper-scale run into its folder and evaluates it (``amdre.pipeline``). Every option
is a parameter of ``notebooks/05_paper_scale.ipynb``; a YAML preset uses the same names with underscores.
Under ``torchrun --standalone --nproc_per_node=N -m amdre ...`` it trains data-parallel.
Exit status: 0 done (also when the evaluation warns that the test MSE is no better than the mean image's: the run
finished and metrics.json records it, with a WARNING line in train.log and on stderr); 1 stopped (NaN/inf in
training, or a file that could not be written: disk full, read-only); 2 bad input (parameters, preset, more
training images asked for than the dataset has, an out_dir that holds another run, is in use by another process or
cannot exist, a damaged or newer checkpoint, other training data than the run's); 130 interrupted (Ctrl-C or
SIGTERM; the same command continues from the last checkpoint).
"""
import argparse
import gc
import shlex
import sys
from pathlib import Path

import torch

from . import distributed, pipeline
from .checkpoint import DamagedCheckpoint
from .config import load_preset
from .files import FolderError, FolderLocked, WriteError


def _arg_type(types_):
    kinds = types_ if isinstance(types_, tuple) else (types_,)

    def parse(text: str):
        if tuple in kinds:                                        # Adam's betas: "0.5,0.999"
            try:
                return [float(v) for v in text.split(",")]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected numbers separated by commas, like 0.5,0.999; got "
                                                 f"{text!r}") from None
        if None in kinds and text.lower() in ("none", "null"):
            return None
        if bool in kinds:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
        for k in kinds:
            if k in (int, float):
                try:
                    return k(text)
                except ValueError:
                    continue
            elif k is str:
                return text
        raise argparse.ArgumentTypeError(f"expected {' or '.join('None' if k is None else k.__name__ for k in kinds)}; "
                                         f"got {text!r}")
    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m amdre", allow_abbrev=False,
        description="Train the adaptive multi-stage latent EBM (Xiao & Han 2022) at paper scale, resumably. "
                    "Also runs under torchrun --nproc_per_node=N (data-parallel).",
        epilog="Every option is a parameter of notebooks/05_paper_scale.ipynb; a YAML preset uses the same names "
               "with underscores. Options given here override the preset.")
    ap.add_argument("--config", help="preset: configs/<name>.yaml or a name (svhn, cifar10, celeba, celeba_hq, ci)")
    ap.add_argument("--no-eval", action="store_true", help="train only: no grids, no metrics.json")
    for name, (types_, default, meaning) in pipeline.PARAMS.items():
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=_arg_type(types_), default=argparse.SUPPRESS,
                        metavar=name.upper(), help=f"{meaning} [default {default!r}]")
    return ap


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    command = "python -m amdre " + shlex.join(sys.argv[1:] if argv is None else list(map(str, argv)))
    args = vars(parser().parse_args(argv))
    try:
        values = load_preset(args.pop("config")) if args.get("config") else {}
        args.pop("config", None)
        no_eval = args.pop("no_eval")
        values.update(args)
        p = pipeline.check_params(values)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    rank, world = distributed.init(p["device"])
    try:
        with pipeline.stop_on_sigterm(), pipeline.run_lock(p, command):
            code = _run(p, rank, no_eval)
    except (pipeline.RunConflict, FileNotFoundError, FileExistsError, ValueError, DamagedCheckpoint, FolderError,
            FolderLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except (FloatingPointError, WriteError) as err:
        print(f"{'training ' if isinstance(err, FloatingPointError) else ''}stopped: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as err:                          # Ctrl-C, or SIGTERM (pipeline.stop_on_sigterm)
        print(f"stopped: {str(err) or 'interrupted (Ctrl-C)'}. The run continues from its last checkpoint when the "
              f"same command is run again.", file=sys.stderr)
        code = 130
    gc.collect()                    # drop what holds the process group before it goes
    if code == 0:
        distributed.cleanup()
    elif world > 1:
        torch.distributed.destroy_process_group()
    return code


def _run(p: dict, rank: int, no_eval: bool) -> int:
    if rank > 0:                    # rank 0 loads first (and builds CelebA's cache once), then the others
        distributed.barrier()
    train, test = pipeline.load_data(p)
    if rank == 0:
        distributed.barrier()
    pipeline.prepare_run(p, train)  # refusals (other parameters, other data, n_train too large) before any write
    trainer = pipeline.train_run(p, train)
    if rank == 0:
        print(f"trained {trainer.epoch} epochs into {p['out_dir']}")
        if not no_eval:
            print(f"{summary(pipeline.evaluate_run(p, train, test))}; see {Path(p['out_dir']) / pipeline.METRICS_FILE}")
    return 0


def summary(result: dict) -> str:
    """'test MSE 0.1234 (31% of the mean image's); fd_classifier 12.3' from an ``evaluate_run`` result, saying what
    was skipped and why (n_test=0, fid_samples=0, no FID weights and no labels)."""
    mse, score, ratio = result["mse"], result["sample_score"], result.get("mse_vs_mean_image")
    parts = [f"test MSE {mse['value']:.4g}" + (f" ({ratio:.0%} of the mean image's)" if ratio is not None else "")
             if mse else "no test MSE (n_test=0)"]
    if score is None:
        parts.append("no sample score (fid_samples=0)")
    elif score["kind"] is None:
        parts.append("no sample score (no FID weights on disk and no labels for the FD-classifier)")
    else:
        parts.append(f"{score['kind']} {score['value']:.4g}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
