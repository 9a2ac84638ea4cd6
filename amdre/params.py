"""Checks for parameters: a notebook's ``# parameters`` cell (papermill may inject anything) and ``amdre.config.Config``.

``notebook(globals())``, called in the cell after the parameters cell, refuses names that the parameters
cell does not declare (papermill only warns about them) and values of another type than the declared
default, and returns the declared parameters. The range checks then name every bad value at once::

    params.ints(0, seed=seed, n_train=n_train)              # ints >= 0
    params.ints(1, epochs=epochs, nz=nz)                     # ints >= 1
    params.positive(sigma=sigma, lr_g=lr_g)                  # finite numbers > 0
    params.int_list("stages", stages, low=0, high=epochs)    # a non-empty list of ints in [low, high]

Each check raises one ValueError listing every problem, or with ``check=False`` returns the list of
messages (``raise_errors`` then raises them together). Booleans are refused where numbers are expected
(``True`` is an ``int`` in Python), and a string where a number belongs gets a hint: papermill's ``-p``
and YAML pass strings for values they cannot parse.
"""
import ast
import difflib
import math

STRING_HINT = " (a string: write the number without quotes; YAML 1.1 reads 1e-4 as a string, write 1.0e-4)"


def type_name(types) -> str:
    """'int or None' for (int, None): the names of the accepted types, for error messages."""
    names = [("None" if t is None else t.__name__) for t in (types if isinstance(types, tuple) else (types,))]
    return " or ".join(names)


def type_ok(value, types) -> bool:
    """Whether ``value`` is one of ``types`` (a type, None, or a tuple of them); bools are not numbers,
    ints are accepted as floats."""
    for t in (types if isinstance(types, tuple) else (types,)):
        if t is None and value is None:
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t in (str, bool, list, tuple) and isinstance(value, t):
            return True
    return False


def raise_errors(errors: list, title: str = "bad parameter") -> None:
    """Raise one ValueError listing every message in ``errors`` (nothing when it is empty)."""
    if errors:
        raise ValueError(f"{title}{'s' if len(errors) > 1 else ''}:\n  - " + "\n  - ".join(errors))


def errors(*lists) -> list:
    """The messages of several ``check=False`` checks, in one list."""
    return [e for group in lists for e in group]


def _done(errs: list, check: bool) -> list:
    if check:
        raise_errors(errs)
    return errs


def _hint(value) -> str:
    return STRING_HINT if isinstance(value, str) else ""


def ints(minimum: int = 1, check: bool = True, **values) -> list:
    """Every value must be an int >= ``minimum``."""
    return _done([f"{name} must be an int >= {minimum}; got {v!r}{_hint(v)}" for name, v in values.items()
                  if not (type_ok(v, int) and v >= minimum)], check)


def positive(check: bool = True, **values) -> list:
    """Every value must be a finite number > 0 (a step size, a learning rate, a std)."""
    return _done([f"{name} must be a finite number > 0; got {v!r}{_hint(v)}" for name, v in values.items()
                  if not (type_ok(v, float) and math.isfinite(v) and v > 0)], check)


def bools(check: bool = True, **values) -> list:
    """Every value must be True or False."""
    return _done([f"{name} must be True or False; got {v!r}" for name, v in values.items()
                  if not isinstance(v, bool)], check)


def _number_list(name, value, kind, low, high, allow_empty, check) -> list:
    ok = isinstance(value, (list, tuple)) and (allow_empty or len(value) > 0) and all(
        type_ok(v, kind) and (low is None or v >= low) and (high is None or v <= high) for v in value)
    if ok:
        return []
    bounds = (f" in {low}..{high}" if low is not None and high is not None else
              f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
    what = "ints" if kind is int else "numbers"
    return _done([f"{name} must be a {'' if allow_empty else 'non-empty '}list of {what}{bounds}; got {value!r}"],
                 check)


def int_list(name: str, value, low: int = None, high: int = None, allow_empty: bool = False,
             check: bool = True) -> list:
    """``value`` must be a list of ints in [low, high] (None: unbounded), non-empty unless ``allow_empty``."""
    return _number_list(name, value, int, low, high, allow_empty, check)


def number_list(name: str, value, low: float = None, high: float = None, allow_empty: bool = False,
                check: bool = True) -> list:
    """``value`` must be a list of numbers in [low, high] (None: unbounded), non-empty unless ``allow_empty``."""
    return _number_list(name, value, float, low, high, allow_empty, check)


def one_of(name: str, value, choices, check: bool = True, shown=None) -> list:
    """``value`` must be one of ``choices`` (``shown`` is what the user wrote, when ``value`` is normalised)."""
    if value in tuple(choices):
        return []
    got = value if shown is None else shown
    near = difflib.get_close_matches(str(got), [str(c) for c in choices], n=1)
    return _done([f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {got!r}"
                  + (f" (did you mean {near[0]!r}?)" if near else "")], check)


# ------------------------------------------------------------------------------------------ notebooks
def _assigned(source: str) -> dict:
    """{name: default} of the plain ``name = literal`` assignments in a cell's source (None if not a literal)."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    try:
                        out[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[target.id] = None
    return out


def _type_error(name, default, value):
    """A message when ``value`` does not have the type of the declared ``default`` (None: any type)."""
    if default is None or value is None:
        return None
    kind = bool if isinstance(default, bool) else int if isinstance(default, int) else type(default)
    if not type_ok(value, float if kind is float else kind):
        what = {list: "a list", int: "an int", float: "a number", bool: "True or False"}.get(kind, f"a {kind.__name__}")
        hint = (_hint(value) if kind in (int, float) else
                f" (papermill's -p passes text: write -y '{name}: {default!r}')" if kind is list and isinstance(value, str)
                else "")
        return f"{name} must be {what} like {default!r}; got {value!r}{hint}"
    if kind is list and default and value:
        item = float if all(type_ok(d, float) for d in default) else type(default[0])
        bad = [v for v in value if not type_ok(v, item)]
        if bad:
            return f"{name} must be a list of {'numbers' if item is float else item.__name__ + 's'} like " \
                   f"{default!r}; got {value!r}"
    return None


def notebook(namespace: dict) -> dict:
    """The declared parameters of a notebook and their values; refuses undeclared names and wrong types.

    Call it in the cell after the ``# parameters`` cell with ``globals()``. It reads the kernel's input
    history (``In``): the declared names are those the latest ``# parameters`` cell assigns; papermill's
    injected cells (first line ``# Parameters``) that ran after it may only set those names, each to a
    value of its default's type (ints count as floats). Outside IPython it checks nothing.
    """
    history = list(namespace.get("In") or [])
    starts = [i for i, src in enumerate(history) if src.lstrip().startswith("# parameters")]
    if not starts:
        return {}
    declared = _assigned(history[starts[-1]])
    problems = []
    for src in history[starts[-1] + 1:]:
        if src.lstrip().startswith("# Parameters"):                  # papermill's injected-parameters cell
            for name in _assigned(src):
                if name not in declared:
                    near = difflib.get_close_matches(name, declared, n=1)
                    problems.append(f"unknown parameter {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                    + f"; this notebook's parameters: {', '.join(declared)}")
    problems += [m for m in (_type_error(n, d, namespace.get(n)) for n, d in declared.items()) if m]
    raise_errors(problems)
    return {name: namespace.get(name) for name in declared}
