"""``make gpu-check``: the GPU tests and every benchmark mode for every preset, on a bare GPU machine.

    make gpu-check                                   # = PYTHONPATH=. python3 benchmarks/gpu_check.py
    PYTHONPATH=. python3 benchmarks/gpu_check.py --out /tmp/check --presets svhn

Needs only python3 with torch, numpy, scipy, yaml, matplotlib, pandas, tqdm and pytest (no venv, no pip, no
network, no Jupyter): run it from the repository root with ``PYTHONPATH=.``. It runs, each in its own process
with a time limit so that one hang loses nothing else:

1. ``tests/test_gpu.py`` (pytest): an epoch of stage 0 and of stage 1 with each preset's options, compiled vs
   eager posterior chains, resume, and ``python -m amdre`` end to end with evaluation;
2. ``benchmarks/bench_langevin.py --mode all``: posterior Langevin against the plain eager loop, a training epoch
   against every option off and against LEBM's eager protocol, and the memory of one step.

It writes ``OUT/gpu_check.json`` (everything) and ``OUT/gpu_check.md`` (the tables, for benchmarks/RESULTS.md),
prints the Markdown, and exits 1 when a test failed or a part did not finish. ``--device cpu`` is a dry run of
the whole check on a CPU (small networks, the benchmark's ``--quick`` sizes).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("svhn", "cifar10", "celeba", "celeba_hq")


def run(cmd, timeout, env):
    """(exit code or "timeout", seconds, last 4000 characters of the output) of a command."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout, capture_output=True, text=True)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code = "timeout"
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (err.stdout, err.stderr))
    return code, round(time.perf_counter() - t0, 1), out[-4000:]


def test_results(junit: Path) -> list:
    """[{test, outcome, seconds, message}] from pytest's JUnit XML (empty when pytest wrote none)."""
    if not junit.is_file():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(bad.tag if bad is not None else "",
                                                                                 "passed")
        message = (bad.get("message") or "")[:200] if bad is not None else ""
        rows.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                     "message": message})
    return rows


def markdown_table(rows: list, cols: list) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows])


def report(result: dict) -> str:
    """The Markdown of a check: the machine, the tests, the three benchmark tables."""
    m = result["meta"]
    lines = [f"## GPU check, {m['date']}", "", f"Device: {m['device']}; torch {m['torch']}; Python {m['python']}; "
             f"`{m['command']}`; {m['seconds']:.0f} s in all.", ""]
    tests = result["tests"]
    counts = {o: sum(t["outcome"] == o for t in tests["results"]) for o in ("passed", "failed", "error", "skipped")}
    lines += [f"### Tests (tests/test_gpu.py): {', '.join(f'{n} {o}' for o, n in counts.items() if n)}; exit "
              f"{tests['exit']}, {tests['seconds']} s", "",
              markdown_table(tests["results"], ["test", "outcome", "seconds", "message"]), ""]
    bench = result["bench"]
    lines += [f"### Benchmarks (benchmarks/bench_langevin.py): exit {bench['exit']}, {bench['seconds']} s", ""]
    tables = {"langevin": ("Posterior Langevin (3 ratio stages), chain-steps/s: library vs the plain eager loop",
                           ["preset", "batch", "steps", "amp", "compile", "library_chain_steps_per_s",
                            "reference_chain_steps_per_s", "speedup", "compile_fallback"]),
              "train": ("Training, a stage-3 epoch, images/s: library vs every option off vs LEBM's eager protocol",
                        ["preset", "batch", "steps", "images", "amp", "compile", "library_images_per_s",
                         "reference_images_per_s", "lebm_images_per_s", "speedup", "speedup_vs_lebm",
                         "library_max_memory_GiB"]),
              "memory": ("Memory of one training step at batch 100 (analytic)",
                         ["preset", "params_MiB", "bank_MiB", "saved_activations_MiB", "estimate_MiB"])}
    for mode, (title, cols) in tables.items():
        if bench["results"].get(mode):
            lines += [f"**{title}**", "", markdown_table(bench["results"][mode], cols), ""]
    if bench["exit"] != 0:
        lines += ["Benchmark output (end):", "", "```", bench["output"][-2000:], "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/gpu-check", help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of the check itself")
    ap.add_argument("--test-timeout", type=int, default=300, help="seconds for the tests")
    ap.add_argument("--bench-timeout", type=int, default=240, help="seconds for the benchmarks")
    args = ap.parse_args(argv)
    dry = args.device == "cpu"
    if not dry and not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False). "
              "On a CPU, --device cpu runs a dry run of the check.", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "AMDRE_TEST_DEVICE": args.device, "PYTHONUNBUFFERED": "1"}
    if dry:
        env["AMDRE_TEST_SMALL"] = "1"
    name = torch.cuda.get_device_name(0) if not dry else f"cpu ({platform.processor() or platform.machine()})"
    t0 = time.perf_counter()
    junit = out / "tests.xml"
    junit.unlink(missing_ok=True)
    env["AMDRE_TEST_PRESETS"] = " ".join(args.presets)
    code, secs, text = run([sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={junit}"], args.test_timeout, env)
    tests = {"exit": code, "seconds": secs, "results": test_results(junit), "output": text}
    print(f"tests: exit {code}, {secs} s", flush=True)
    bench_json = out / "bench.json"
    bench_json.unlink(missing_ok=True)
    cmd = [sys.executable, "benchmarks/bench_langevin.py", "--mode", "all", "--device", args.device, "--presets",
           *args.presets, "--batches", "10", "--repeats", "2", "--json", str(bench_json)]
    code, secs, text = run(cmd + (["--quick", "--options", "on", "--threads", "1"] if dry else []),
                           args.bench_timeout, env)
    bench = {"exit": code, "seconds": secs, "output": text,
             "results": json.loads(bench_json.read_text()) if bench_json.is_file() else {}}
    print(f"benchmarks: exit {code}, {secs} s", flush=True)
    result = {"meta": {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       "device": name, "torch": torch.__version__, "python": platform.python_version(),
                       "command": " ".join(["python3", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])]),
                       "seconds": time.perf_counter() - t0},
              "tests": tests, "bench": bench}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report(result)
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    failed = tests["exit"] != 0 or bench["exit"] != 0 or not tests["results"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
