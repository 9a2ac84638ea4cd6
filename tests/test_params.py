"""amdre.params: the checks behind every notebook's parameters cell."""
from pathlib import Path

import pytest

from amdre import params

ROOT = Path(__file__).resolve().parents[1]


def test_good_values_pass():
    """Values on the boundaries are accepted (an int counts as a number, 0 as an int >= 0)."""
    assert params.errors(
        params.ints(0, seed=0, n_train=0, check=False), params.ints(1, epochs=1, check=False),
        params.positive(sigma=0.3, lr=1, s=1e-4, check=False),
        params.int_list("stages", [0, 1, 16], low=0, high=16, check=False),
        params.int_list("classes", [], low=0, high=9, allow_empty=True, check=False),
        params.one_of("dataset", "mnist5k", ("mnist5k", "mnist"), check=False)) == []


@pytest.mark.parametrize("call, message", [
    (lambda: params.ints(1, epochs=0), "epochs must be an int >= 1; got 0"),
    (lambda: params.ints(0, seed=-1), "seed must be an int >= 0; got -1"),
    (lambda: params.ints(1, nz=True), "nz must be an int >= 1; got True"),
    (lambda: params.ints(1, nz=8.0), "nz must be an int >= 1; got 8.0"),
    (lambda: params.ints(1, steps="10"), "write the number without quotes"),
    (lambda: params.positive(sigma=0), "sigma must be a finite number > 0; got 0"),
    (lambda: params.positive(lr=float("nan")), "lr must be a finite number > 0"),
    (lambda: params.positive(lr="1e-3"), "write 1.0e-4"),
    (lambda: params.int_list("stages", [0, 20], low=0, high=16), "stages must be a non-empty list of ints in 0..16"),
    (lambda: params.int_list("seeds", []), "seeds must be a non-empty list of ints"),
    (lambda: params.int_list("seeds", 3), "got 3"),
    (lambda: params.int_list("digits", [1, 2.0], low=0, high=9), "digits must be"),
    (lambda: params.one_of("dataset", "svhn", ("mnist5k", "mnist")), "dataset must be one of 'mnist5k', 'mnist'"),
])
def test_bad_values_say_what_to_do(call, message):
    with pytest.raises(ValueError, match="bad parameter") as info:
        call()
    assert message in str(info.value)


def test_every_bad_value_is_named_at_once():
    with pytest.raises(ValueError) as info:
        params.ints(1, a=0, b=2, c=-3)
    text = str(info.value)
    assert "a must be" in text and "c must be" in text and "b must be" not in text


def test_checks_return_messages_with_check_false():
    """check=False returns the messages instead of raising; errors() joins several checks, raise_errors() raises
    them together (nothing for none)."""
    assert params.ints(1, epochs=3, check=False) == [] and params.bools(amp=False, check=False) == []
    found = params.errors(params.ints(1, epochs=0, nz=4, check=False),
                          params.positive(sigma=-1.0, check=False),
                          params.bools(amp=1, compile=True, check=False),
                          params.number_list("lrs", [1e-3, "x"], low=0, check=False),
                          params.one_of("kind", "nc", ("nce", "tre"), check=False))
    assert found == ["epochs must be an int >= 1; got 0", "sigma must be a finite number > 0; got -1.0",
                     "amp must be True or False; got 1",
                     "lrs must be a non-empty list of numbers >= 0; got [0.001, 'x']",
                     "kind must be one of 'nce', 'tre'; got 'nc' (did you mean 'nce'?)"]
    params.raise_errors([])
    with pytest.raises(ValueError) as info:
        params.raise_errors(found, "bad setting")
    assert str(info.value) == "bad settings:\n  - " + "\n  - ".join(found)
    with pytest.raises(ValueError, match=r"^bad thing:\n  - one$"):
        params.raise_errors(["one"], "bad thing")
    assert params.number_list("steps", [0.5, 2], low=0, high=2, check=False) == []
    assert params.number_list("steps", [], allow_empty=True, check=False) == []
    with pytest.raises(ValueError, match="steps must be a non-empty list of numbers in 0..1"):
        params.number_list("steps", [0.5, 2], low=0, high=1)


PARAMETERS_CELL = """# parameters
steps = 200          # an int
lr = 0.01
name = "digits"
stages = [0, 1, 2]
fast = False
"""


def test_notebook_takes_the_declared_parameters():
    """params.notebook(globals()) reads the kernel's input history: the names the parameters cell declares,
    with their current values (other globals, e.g. imports, are not parameters)."""
    ns = {"In": ["", "import torch", PARAMETERS_CELL], "steps": 200, "lr": 0.01, "name": "digits",
          "stages": [0, 1, 2], "fast": False, "torch": object(), "Path": Path}
    assert params.notebook(ns) == {"steps": 200, "lr": 0.01, "name": "digits", "stages": [0, 1, 2], "fast": False}
    injected = "# Parameters\nsteps = 50\nlr = 1\nfast = True\n"
    ns.update({"In": ns["In"] + [injected], "steps": 50, "lr": 1, "fast": True})   # ints count as floats
    assert params.notebook(ns) == {"steps": 50, "lr": 1, "name": "digits", "stages": [0, 1, 2], "fast": True}
    assert params.notebook({"steps": 3}) == {}                                       # outside IPython: no checks


def test_notebook_refuses_undeclared_and_mistyped_parameters():
    """papermill only warns about a name the parameters cell does not declare: params.notebook refuses it (with
    the nearest declared name), and every value of another type than its default, all at once."""
    injected = "# Parameters\nstep = 50\nstages = [0, 'a']\nname = 3\n"
    ns = {"In": ["", PARAMETERS_CELL, injected], "steps": "ten", "lr": True, "name": 3, "stages": [0, "a"],
          "fast": "no", "step": 50}
    with pytest.raises(ValueError) as info:
        params.notebook(ns)
    msg = str(info.value)
    for part in ("unknown parameter 'step' (did you mean 'steps'?); this notebook's parameters: steps, lr, name, "
                 "stages, fast", "steps must be an int like 200; got 'ten' (a string",
                 "lr must be a number like 0.01; got True", "name must be a str like 'digits'; got 3",
                 "stages must be a list of numbers like [0, 1, 2]; got [0, 'a']",
                 "fast must be True or False like False; got 'no'"):
        assert part in msg, part
    # a later parameters cell (the notebook re-run from the top) declares afresh
    later = PARAMETERS_CELL.replace("steps = 200", "steps = 200\nstep = 1")
    ns2 = {"In": ["", PARAMETERS_CELL, injected, later], "steps": 200, "lr": 0.01, "name": "digits",
           "stages": [0, 1, 2], "fast": False, "step": 1}
    assert params.notebook(ns2)["step"] == 1


@pytest.mark.slow
def test_notebook_refuses_a_bad_papermill_parameter(tmp_path):
    """A string where an int belongs stops notebook 01 in its parameters check, with the hint."""
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(ROOT / "notebooks" / "01_nce_2d.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"steps": "ten"}, cwd=str(ROOT / "notebooks"), progress_bar=False)
    msg = str(info.value)
    assert "steps must be an int" in msg and "got 'ten'" in msg and "write the number without quotes" in msg
    assert not (ROOT / "notebooks" / "out.ipynb").exists()
