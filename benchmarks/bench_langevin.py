"""Speed of the training hot path at the presets' sizes, on the current device, against a plain eager reference.

    python benchmarks/bench_langevin.py                        # all modes, presets svhn cifar10 celeba
    python benchmarks/bench_langevin.py --quick                # CPU-sized: batch 10, 5 Langevin steps, 4 batches per epoch
    python benchmarks/bench_langevin.py --mode langevin --presets svhn --device cuda
    python benchmarks/bench_langevin.py --mode memory          # analytic memory of one training step (any device)

Modes (random data of each preset's shape; the generators and ratio nets of the presets, 3 frozen stages in the
posterior as in the last stage of training):

* ``langevin``: posterior Langevin chain-steps per second (batch x steps / second) of the library's path (what the
  Trainer runs on this device: the preset's amp / compile / channels_last on CUDA, the plain eager loop on a CPU)
  beside a plain eager reference loop written here (a fresh graph and noise tensor per step, one call per ratio
  stage), in the same run, and their ratio. ``--options on`` forces the preset's options on a CPU too.
* ``train``: training images per second of ``amdre.train.Trainer`` with the library's options (``amdre.pipeline``'s
  ``speed_up``) beside the same
  Trainer with every speed option off (the eager reference), and beside a third contender, the training loop of
  the method this paper improves on, LEBM (Pang et al. 2020, its public ``train_svhn.py`` protocol) written here
  in plain eager fp32: per batch 20 posterior and 60 prior Langevin steps of its 200-unit energy MLP, then the
  generator and energy updates. The best of ``--repeats`` whole epochs of stage 3, after three warm-up epochs.
  On CUDA it also reports ``torch.cuda.max_memory_allocated`` (after three warm-up epochs).
* ``memory``: the bytes one training step needs (parameters, gradients, Adam, memory bank, activations saved for
  backward, counted with saved-tensor hooks on the meta device), for batch 100.

Timings wait for the device (``torch.cuda.synchronize``) before reading the clock; the two contenders are timed
in turns and the best of ``--repeats`` counts, so a shared machine's load hits both alike. One table per mode;
``--json FILE`` also writes the numbers.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace

import torch

from amdre import data, pipeline
from amdre.config import load_preset
from amdre.data import ImageData
from amdre.nets import generator as make_generator
from amdre.pipeline import config_from_params
from amdre.prior import EBMPrior


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_posterior(g, stages, x, z, n_steps, step_size, sigma):
    """The textbook loop of Eq. 3: a new leaf, graph and noise tensor every step, one call per ratio stage."""
    for _ in range(n_steps):
        z = z.detach().requires_grad_(True)
        log_prior = -0.5 * (z * z).sum(1)
        for stage in stages:
            log_prior = log_prior + stage(z)
        log_p = log_prior - ((x - g(z)) ** 2).flatten(1).sum(1) / (2 * sigma ** 2)
        grad, = torch.autograd.grad(log_p.sum(), z)
        z = z + 0.5 * step_size * grad + math.sqrt(step_size) * torch.randn_like(z)
    return z.detach()


class LEBMEnergy(torch.nn.Module):
    """LEBM's prior energy E(z) for SVHN (Pang et al. 2020): nz -> 200 -> 200 -> 1, LeakyReLU(0.2);
    p(z) ∝ exp(-E(z)) N(0, I)."""

    def __init__(self, nz, width=200):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(nz, width), torch.nn.LeakyReLU(0.2), torch.nn.Linear(width, width),
                                       torch.nn.LeakyReLU(0.2), torch.nn.Linear(width, 1))

    def forward(self, z):
        return self.net(z).squeeze(1)


class LEBMLoop:
    """One epoch of LEBM's training protocol, eager and fp32, as its public code runs it: per batch, 20 posterior
    Langevin steps (two autograd calls per step, one for the generator's error and one for the energy; LEBM's
    step 0.1, drift s^2/2 and noise s), 60 prior steps (step 0.4), then one Adam step of the generator
    (summed squared error / batch) and one of the energy (E(posterior) - E(prior))."""

    def __init__(self, cfg, device, posterior_steps=20, prior_steps=60):
        self.g = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(device)
        self.e = LEBMEnergy(cfg.nz).to(device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
        self.opt_e = torch.optim.Adam(self.e.parameters(), lr=cfg.lr_ebm, betas=(0.5, 0.999))
        self.cfg, self.device, self.steps = cfg, device, (posterior_steps, prior_steps)
        self.history = {"epoch_time": []}

    def _langevin(self, z, n_steps, s, x=None):
        for _ in range(n_steps):
            z = z.detach().requires_grad_(True)
            grad = 0
            if x is not None:
                err = ((self.g(z) - x) ** 2).sum() / (2 * self.cfg.sigma ** 2)
                grad = torch.autograd.grad(err, z)[0]
            grad = grad + torch.autograd.grad(self.e(z).sum(), z)[0]
            z = z.detach() - 0.5 * s * s * (grad + z.detach()) + s * torch.randn_like(z)
        return z.detach()

    def epoch(self, images):
        t0 = time.perf_counter()
        for x in images.split(self.cfg.batch_size):
            x = x.to(self.device)
            z_post = self._langevin(torch.randn(len(x), self.cfg.nz, device=self.device), self.steps[0], 0.1, x)
            z_prior = self._langevin(torch.randn(len(x), self.cfg.nz, device=self.device), self.steps[1], 0.4)
            self.opt_g.zero_grad(set_to_none=True)
            (((self.g(z_post) - x) ** 2).sum() / len(x)).backward()
            self.opt_g.step()
            self.opt_e.zero_grad(set_to_none=True)
            (self.e(z_post).mean() - self.e(z_prior).mean()).backward()
            self.opt_e.step()
        sync(self.device)
        self.history["epoch_time"].append(time.perf_counter() - t0)


def preset_config(name, device, options, quick):
    values = load_preset(name)
    values.update(device=str(device), out_dir="runs/bench", progress=False, n_train=None)
    use = options == "on" or (options == "auto" and device.type == "cuda")
    if not use:
        values.update(amp=False, compile=False, channels_last=False)
    if quick:
        values.update(batch_size=10, ld_steps=5)
    return values, config_from_params(values)


def timed(fns, device, repeats):
    """Best-of-``repeats`` seconds per call of each function, calls interleaved (a shared machine's load hits all)."""
    for fn in fns:                                                     # warm-up (compilation, autotuning)
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def fresh_compiler():
    """Forget earlier compiled graphs: torch.compile keeps at most 8 variants of one function (here the Langevin
    step) per process and silently runs the rest eagerly, so each preset starts with an empty cache."""
    torch._dynamo.reset()


def bench_langevin(name, device, options, quick, repeats):
    fresh_compiler()
    values, cfg = preset_config(name, device, options, quick)
    shape = data.shape(values["dataset"], values["image_size"])
    torch.manual_seed(0)
    x = torch.rand(cfg.batch_size, *shape) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:                         # what the Trainer runs: eager or compiled
        trainer = pipeline.make_trainer(cfg, ImageData(x, None, "random"), tmp, resume=False)
    for _ in range(3):
        trainer.new_stage()
    trainer.prior.requires_grad_(False)
    x = x.to(device)

    def library():
        return trainer.posterior(x, torch.randn(cfg.batch_size, cfg.nz, device=device), n_stages=3,
                                 randn=torch.randn_like)

    ref_g = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(device)
    ref_g.load_state_dict(trainer.generator.state_dict())

    def reference():
        z0 = torch.randn(cfg.batch_size, cfg.nz, device=device)
        return reference_posterior(ref_g, list(trainer.prior.stages), x, z0, cfg.ld_steps, cfg.ld_step_size,
                                   cfg.sigma)

    chain_steps = cfg.batch_size * cfg.ld_steps
    t_lib, t_ref = timed([library, reference], device, repeats)
    return {"preset": name, "batch": cfg.batch_size, "steps": cfg.ld_steps, "amp": cfg.amp, "compile": cfg.compile,
            "channels_last": cfg.channels_last, "library_chain_steps_per_s": chain_steps / t_lib,
            "reference_chain_steps_per_s": chain_steps / t_ref, "speedup": t_ref / t_lib,
            "compile_fallback": getattr(trainer.posterior, "failed", None)}


def bench_train(name, device, options, quick, batches, repeats):
    fresh_compiler()
    values, cfg = preset_config(name, device, options, quick)
    n = batches * cfg.batch_size
    shape = data.shape(values["dataset"], values["image_size"])
    torch.manual_seed(0)
    images = ImageData(torch.rand(n, *shape) * 2 - 1, None, "random")
    plain = replace(cfg, amp=False, compile=False, channels_last=False)
    trainers, out = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, c in (("library", cfg), ("reference", plain)):
            c = replace(c, epochs=3 + repeats, n_stages=4, stage_every=1)   # stage 3: 3 frozen stages in the posterior
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = trainers[label] = pipeline.make_trainer(c, images, f"{tmp}/{label}", resume=False)
            t.save = lambda stage=None: None                             # time training, not checkpoint writes
            t.fit(3)                                                     # warm-up epochs: stages 0-2
            if device.type == "cuda":
                out[f"{label}_max_memory_GiB"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        scale = cfg.ld_steps / load_preset(name)["ld_steps"]             # --quick shortens LEBM's chains alike
        lebm = trainers["lebm"] = LEBMLoop(plain, device, round(20 * scale) or 1, round(60 * scale) or 1)
        x = images.images.to(device)
        for _ in range(3):
            lebm.epoch(x)
        for r in range(repeats):                                         # timed epochs, interleaved
            for label, t in trainers.items():
                sync(device)
                t.epoch(x) if label == "lebm" else t.fit(4 + r)
                sync(device)
    for label, t in trainers.items():
        out[label] = n / min(t.history["epoch_time"][3:])
    return {"preset": name, "batch": cfg.batch_size, "steps": cfg.ld_steps, "images": n, "amp": cfg.amp,
            "compile": cfg.compile, "library_images_per_s": out["library"], "reference_images_per_s": out["reference"],
            "lebm_images_per_s": out["lebm"], "speedup": out["library"] / out["reference"],
            "speedup_vs_lebm": out["library"] / out["lebm"], **{k: v for k, v in out.items() if k.endswith("GiB")}}


def bench_memory(name, batch=100):
    """Bytes of one training step at ``batch``: counted on the meta device (no memory is allocated)."""
    values = load_preset(name)
    values.update(device="cpu")
    cfg = config_from_params(values)
    n_train = values["n_train"] or {"svhn": 73257, "cifar10": 50000}[values["dataset"]]
    with torch.device("meta"):
        g = make_generator(cfg.generator, cfg.nz, cfg.ngf)
        prior = EBMPrior(cfg.nz)
        for _ in range(cfg.n_stages):
            prior.add_stage()
        z = torch.randn(batch, cfg.nz, requires_grad=True)
        x = torch.empty(batch, *g.out_shape)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            ((x - g(z)) ** 2).sum() + prior.log_prob(z).sum()          # the forward pass: what backward would keep
        n_params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in prior.parameters())
    params = n_params * 4
    act = sum(saved)
    bank = n_train * cfg.nz * 4
    images = batch * math.prod(g.out_shape) * 4 * 3                    # x, g(z), the error
    total = 4 * params + bank + 2 * act + images                        # params, grads, Adam m and v; fwd + bwd
    return {"preset": name, "batch": batch, "params_MiB": params / 2 ** 20, "adam_grads_params_MiB": 4 * params / 2 ** 20,
            "bank_MiB": bank / 2 ** 20, "saved_activations_MiB": act / 2 ** 20,
            "estimate_MiB": total / 2 ** 20, "fits_24GB": total < 24e9}


def table(rows, cols):
    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(fmt(r.get(c)).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


def fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("langevin", "train", "memory", "all"), default="all")
    ap.add_argument("--presets", nargs="+", default=["svhn", "cifar10", "celeba"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--options", choices=("auto", "on", "off"), default="auto",
                    help="the presets' amp/compile/channels_last: auto = on for CUDA, off for CPU")
    ap.add_argument("--quick", action="store_true", help="CPU-sized: batch 10, 5 Langevin steps")
    ap.add_argument("--repeats", type=int, default=None, help="timed Langevin calls (default 3)")
    ap.add_argument("--batches", type=int, default=None, help="batches per timed training epoch (default 20, quick 4)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no GPU: use --device cpu --quick, or run on a machine with a GPU")
    repeats = args.repeats or 3
    batches = args.batches or (4 if args.quick else 20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    head = {"date": datetime.date.today().isoformat(), "device": f"{device.type}: {name}", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "quick": args.quick, "argv": sys.argv[1:]}
    print(" ".join(f"{k}={v}" for k, v in head.items()))
    results = {"meta": head}
    if args.mode in ("langevin", "all"):
        rows = [bench_langevin(p, device, args.options, args.quick, repeats) for p in args.presets]
        print("\nposterior Langevin (3 ratio stages): chain-steps/s, library vs plain eager reference")
        print(table(rows, ["preset", "batch", "steps", "amp", "compile", "channels_last", "library_chain_steps_per_s",
                           "reference_chain_steps_per_s", "speedup"]))
        results["langevin"] = rows
    if args.mode in ("train", "all"):
        rows = [bench_train(p, device, args.options, args.quick, batches, repeats) for p in args.presets]
        print("\ntraining (Trainer, stage 3 epoch): images/s, library options vs all speed options off, and LEBM's "
              "protocol (20 posterior + 60 prior steps, eager fp32)")
        cols = ["preset", "batch", "steps", "images", "amp", "compile", "library_images_per_s",
                "reference_images_per_s", "lebm_images_per_s", "speedup", "speedup_vs_lebm"]
        print(table(rows, cols + (["library_max_memory_GiB", "reference_max_memory_GiB"]
                                  if device.type == "cuda" else [])))
        results["train"] = rows
    if args.mode in ("memory", "all"):
        rows = [bench_memory(p) for p in args.presets]
        print("\nmemory of one training step at batch 100 (counted on the meta device; excludes cuDNN workspace "
              "and the CUDA context)")
        print(table(rows, ["preset", "batch", "params_MiB", "adam_grads_params_MiB", "bank_MiB",
                           "saved_activations_MiB", "estimate_MiB", "fits_24GB"]))
        results["memory"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
