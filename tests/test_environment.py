"""environment.yml, pyproject.toml and constraints.txt describe the same environment."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _env():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d): d.split("=", 1)[1] for d in env["dependencies"] if isinstance(d, str) and "=" in d}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip_pins = {_name(p): p.split("==", 1)[1] for p in pip if "==" in p}
    return conda, pip_pins, pip


def _pins():
    lines = [l for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    return {_name(l): l.split("==", 1)[1] for l in lines}


def test_every_pyproject_dependency_is_in_environment_yml_at_the_pinned_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    conda, pip_pins, pip = _env()
    pins = _pins()
    for dep in deps:
        name = _name(dep)
        found = conda.get(name) or pip_pins.get(name)
        assert found, f"{name} is a dependency in pyproject.toml but missing from environment.yml"
        assert name in pins, f"{name} has no tested pin in constraints.txt"
        assert found == pins[name], f"{name}: environment.yml has {found}, constraints.txt pins {pins[name]}"
    assert any(p.startswith("-e") for p in pip), "environment.yml must install the package itself"
