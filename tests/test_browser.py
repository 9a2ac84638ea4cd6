"""The stage explorer's widgets work in a real JupyterLab, driven by headless Chromium.

``test_stage_slider_in_jupyterlab`` starts JupyterLab on 127.0.0.1 (free port, random
token, throw-away config/runtime/settings/workspace folders), opens the stage explorer
notebook in Debian's Chromium through Playwright, runs all cells from the Run menu,
moves the ``stage`` IntSlider with the keyboard and checks that the figure in the
widget's output changed and that no cell shows a traceback. It writes
``jupyterlab_walkthrough.png`` (the page after the slider moved) into ``amdre.paths.figures()``
(runs/figures/; the README's copy is refreshed with ``AMDRE_FIGURES=figures``) and the
before/after images of the widget output to ``tests/_artifacts/``.

Run it with::

    python -m pytest tests/test_browser.py -q -s

It needs Chromium (``sudo apt-get install chromium`` on Debian; any other binary through
``AMDRE_CHROMIUM=/path/to/chrome``) and the Python package ``playwright``; it never
downloads a browser (no ``playwright install``). Missing either is a failure, not a skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from amdre import paths

REPO = Path(__file__).resolve().parents[1]

# The notebook under test; JupyterLab's root folder is its parent folder.
NOTEBOOK = REPO / "notebooks" / "04_stage_explorer.ipynb"
SLIDER_DESCRIPTION = "stage"  # the IntSlider's `description`

WALKTHROUGH_PNG = paths.figures() / "jupyterlab_walkthrough.png"   # README's copy: AMDRE_FIGURES=figures
ARTIFACTS = REPO / "tests" / "_artifacts"  # git-ignored

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}

SERVER_START_S = 60  # JupyterLab answering /api/status
PAGE_LOAD_S = 60  # notebook rendered and kernel idle
RUN_ALL_S = 150  # Run -> Run All Cells until every code cell has run
WIDGET_S = 90  # slider and its figure shown after the run (a first start in a fresh venv is slow)
RERENDER_S = 60  # figure redrawn after the slider moved

STDERR_MIME = "application/vnd.jupyter.stderr"
ERROR_RE = re.compile(r"Traceback|^\s*\w*(Error|Exception)\b", re.M)

# User settings for the throw-away JupyterLab: no "official Jupyter news?" toast over the
# screenshot, no autosave writing outputs into the notebook under test, every cell in the
# DOM (no virtual scrolling) so the prompts and outputs of all cells can be read.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# --------------------------------------------------------------------------- helpers


def _chromium() -> str:
    candidates = [os.environ.get("AMDRE_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    pytest.fail(
        "Chromium not found: install it with `sudo apt-get install chromium` (Debian) — "
        "the browser test needs it (or point AMDRE_CHROMIUM at a Chrome/Chromium binary)",
        pytrace=False,
    )


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright not found: install it with `pip install -e '.[test]'` (or "
            "`pip install playwright`) — the browser test needs it; no `playwright install` "
            "is needed, the test drives the system Chromium",
            pytrace=False,
        )
    return sync_playwright


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Pids of all processes below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _data_url_bytes(src: str | None) -> bytes:
    if not src:
        return b""
    if src.startswith("data:") and ";base64," in src:
        return base64.b64decode(src.split(";base64,", 1)[1])
    return src.encode()


# --------------------------------------------------------------------------- fixtures


class LabServer:
    def __init__(self, base_url: str, token: str, log: Path):
        self.base_url, self.token, self.log = base_url, token, log

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}?token={self.token}"

    def api(self, path: str):
        req = urllib.request.Request(f"{self.base_url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def kernel_state(self, notebook_name: str) -> str | None:
        """execution_state of the kernel the server runs for `notebook_name`, None if none."""
        for s in self.api("/api/sessions"):
            if s.get("path") == notebook_name and s.get("kernel"):
                return s["kernel"].get("execution_state")
        return None


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """JupyterLab serving NOTEBOOK's folder, isolated from the user's Jupyter folders."""
    assert NOTEBOOK.is_file(), f"notebook under test missing: {NOTEBOOK}"
    tmp = tmp_path_factory.mktemp("jupyterlab")
    env = dict(os.environ)
    # Only the per-user folders move to tmp: the kernelspec and the ipywidgets
    # labextension live in sys.prefix/share/jupyter, which stays on the search path.
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        (tmp / sub).mkdir()
        env[var] = str(tmp / sub)
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    # A person's JupyterLab draws figures with the inline backend; MPLBACKEND=Agg (common in CI)
    # would leave the widget's Output without a PNG.
    env.pop("MPLBACKEND", None)
    for plugin, values in LAB_SETTINGS.items():
        f = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))

    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={NOTEBOOK.parent}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            cmd, env=env, cwd=NOTEBOOK.parent, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    server = LabServer(f"http://127.0.0.1:{port}", token, log)
    print(f"\n[browser] {' '.join(cmd)}\n[browser] log: {log}")
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_tail(log)}", pytrace=False)
            try:
                req = urllib.request.Request(f"{server.base_url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab not up after {SERVER_START_S} s:\n{_tail(log)}", pytrace=False)
            time.sleep(0.3)
        yield server
    finally:
        # Kernels run in sessions of their own: note every descendant before asking the
        # server to shut down (it stops its kernels), then make sure all of them are gone.
        pids = _descendants(proc.pid)
        if proc.poll() is None:
            try:
                req = urllib.request.Request(
                    f"{server.base_url}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(req, timeout=5).close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        _kill(pids, signal.SIGTERM)
        time.sleep(0.2)
        _kill([p for p in pids if Path(f"/proc/{p}").exists()], signal.SIGKILL)


@pytest.fixture
def page():
    executable = _chromium()
    sync_playwright = _sync_playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
            pg = context.new_page()
            pg.js_errors = []  # type: ignore[attr-defined]
            pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))  # type: ignore[attr-defined]
            yield pg
        finally:
            browser.close()


# --------------------------------------------------------------------------- page helpers


def _wait_until(pred, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _error_outputs(page) -> list[str]:
    texts = page.evaluate(
        """mime => Array.from(document.querySelectorAll(
               `.jp-Notebook .jp-OutputArea-output[data-mime-type="${mime}"]`)).map(e => e.innerText)""",
        STDERR_MIME,
    )
    bad = [t for t in texts if ERROR_RE.search(t)]
    widget_fail = page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
               .map(e => e.innerText).filter(t => t.includes('Error displaying widget'))"""
    )
    return bad + widget_fail


def _code_prompts(page) -> list[str]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt'))
               .map(e => e.innerText.trim())"""
    )


def _kernel_status(page) -> str | None:
    ind = page.locator(".jp-Notebook-ExecutionIndicator")
    return ind.first.get_attribute("data-status") if ind.count() else None


def _dismiss_dialogs(page) -> None:
    """Accept a "Select Kernel" dialog and close toasts.

    JupyterLab asks for a kernel when the notebook has no kernelspec, and sometimes when
    it opens a notebook before the kernelspecs have loaded; the dialog preselects the
    default kernel (python3), so accepting it starts the right one.
    """
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        text = " ".join(dialog.first.inner_text().split())
        print(f"[browser] dialog {text[:120]!r} -> accept")
        dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
    for close in page.locator(".Toastify__toast .jp-toast-dismiss, .Toastify__close-button").all():
        if close.is_visible():
            close.click()


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^\s*Run\s*$")).first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()


def _wait_run_all(page) -> list[str]:
    """Wait until every code cell shows an execution count, failing early on a traceback."""
    start = time.monotonic()
    deadline = start + RUN_ALL_S
    stopped_since = None
    while True:
        errors = _error_outputs(page)
        if errors:
            raise AssertionError("a cell failed during Run All:\n" + "\n---\n".join(e[-2000:] for e in errors))
        prompts = _code_prompts(page)
        done = [bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts]
        busy = any("*" in p for p in prompts) or _kernel_status(page) == "busy"
        if prompts and all(done) and not busy:
            return prompts
        # idle, nothing queued, yet cells without a count: the run stopped (an error the
        # regex missed, or a dead kernel); allow a few seconds for the queue to show up
        if not busy and any(done):
            stopped_since = stopped_since or time.monotonic()
            if time.monotonic() - stopped_since > 10:
                raise AssertionError(f"Run All stopped early; code cell prompts: {prompts}")
        else:
            stopped_since = None
        if not busy and not any(done) and time.monotonic() - start > 20:
            raise AssertionError(f"Run All did not start within 20 s; code cell prompts: {prompts}")
        if time.monotonic() > deadline:
            raise AssertionError(f"Run All not finished after {RUN_ALL_S} s; code cell prompts: {prompts}")
        time.sleep(0.5)


# --------------------------------------------------------------------------- tests


def test_widgets_labextension_enabled():
    """ipywidgets' JupyterLab 4 extension ships prebuilt in the wheel: no extra step.

    Not marked `browser`: it needs no browser and runs in the fast suite.
    """
    r = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    assert r.returncode == 0, out
    line = next((ln for ln in out.splitlines() if "@jupyter-widgets/jupyterlab-manager" in ln), None)
    assert line is not None, f"@jupyter-widgets/jupyterlab-manager not listed:\n{out}"
    assert re.search(r"\benabled\b", line) and re.search(r"\bOK\b", line), line


@pytest.mark.browser
def test_stage_slider_in_jupyterlab(lab_server, page):
    t0 = time.monotonic()
    digest_before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)

    def log(msg):
        print(f"[browser] {time.monotonic() - t0:6.1f} s  {msg}")

    try:
        page.goto(lab_server.url(f"/lab/tree/{NOTEBOOK.name}"), timeout=PAGE_LOAD_S * 1000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=PAGE_LOAD_S * 1000)

        def kernel_ready():
            _dismiss_dialogs(page)
            return lab_server.kernel_state(NOTEBOOK.name) == "idle" and _kernel_status(page) == "idle"

        _wait_until(kernel_ready, PAGE_LOAD_S, "the notebook's kernel to start and be idle", interval=0.5)
        # more room for the notebook: collapse the file browser
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()
        log("notebook open, kernel idle")

        _run_all(page)
        prompts = _wait_run_all(page)
        log(f"Run All done: {prompts}")

        label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(SLIDER_DESCRIPTION)}\s*$"))
        slider = page.locator(".jupyter-widgets.widget-slider").filter(has=label).first
        slider.wait_for(state="visible", timeout=WIDGET_S * 1000)
        handle = slider.locator(".noUi-handle").first
        cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has=slider).first
        # the figure's Output widget: in the slider's cell (VBox, interact, interactive_output),
        # else anywhere in the notebook (an Output displayed by a cell of its own)
        outputs = cell.locator(".widget-output")
        if not outputs.count():
            outputs = page.locator(".jp-Notebook .widget-output")
        images = outputs.locator("img")

        def current_src():
            srcs = [e.get_attribute("src") for e in images.all()]
            return srcs[0] if srcs and srcs[0] else None

        before = _wait_until(current_src, WIDGET_S, "the figure in the widget output")
        value = float(handle.get_attribute("aria-valuenow"))
        vmax = float(handle.get_attribute("aria-valuemax"))
        readout_before = slider.locator(".widget-readout").inner_text()
        log(f"slider '{SLIDER_DESCRIPTION}' at {readout_before} (max {vmax:g}), figure {len(before)} chars")
        images.first.screenshot(path=str(ARTIFACTS / "stage_before.png"))
        (ARTIFACTS / "stage_before_src.png").write_bytes(_data_url_bytes(before))

        key = "ArrowRight" if value < vmax else "ArrowLeft"
        handle.focus()
        page.keyboard.press(key)
        _wait_until(
            lambda: slider.locator(".widget-readout").inner_text() != readout_before, 10, "the slider readout to change"
        )
        readout_after = slider.locator(".widget-readout").inner_text()

        def redrawn():
            errors = _error_outputs(page)
            if errors:
                raise AssertionError("moving the slider raised:\n" + "\n---\n".join(e[-2000:] for e in errors))
            src = current_src()
            return src if src and src != before else None

        after = _wait_until(
            redrawn,
            RERENDER_S,
            f"the figure to change after {key} (slider {readout_before} -> {readout_after})",
        )
        # let the output settle (kernel idle, same figure for a moment) before the screenshots
        _wait_until(lambda: _kernel_status(page) == "idle", RERENDER_S, "the kernel to be idle after the redraw")
        time.sleep(0.5)
        after = current_src() or after
        log(f"slider {readout_before} -> {readout_after}: figure redrawn")
        images.first.screenshot(path=str(ARTIFACTS / "stage_after.png"))
        (ARTIFACTS / "stage_after_src.png").write_bytes(_data_url_bytes(after))

        assert _data_url_bytes(before) != _data_url_bytes(after), "stage view unchanged after moving the slider"
        errors = _error_outputs(page)
        assert not errors, "cells show errors:\n" + "\n---\n".join(e[-2000:] for e in errors)

        # README screenshot: the slider's cell at the top, its figure visible
        _dismiss_dialogs(page)
        cell.evaluate(
            """(cell) => {
                 const box = cell.getBoundingClientRect();
                 const target = box.height < window.innerHeight - 150
                     ? cell : cell.querySelector('.jp-OutputArea') || cell;
                 target.scrollIntoView({block: 'start'});
               }"""
        )
        time.sleep(0.3)
        WALKTHROUGH_PNG.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(WALKTHROUGH_PNG))
        log(f"wrote {WALKTHROUGH_PNG} and {ARTIFACTS.relative_to(REPO)}/stage_*.png")
    except BaseException:
        try:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            print(f"[browser] failure screenshot: {ARTIFACTS / 'failure.png'}")
        except Exception:  # noqa: BLE001
            pass
        print(f"[browser] JS errors: {page.js_errors}\n[browser] server log tail:\n{_tail(lab_server.log)}")
        raise

    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == digest_before, (
        f"{NOTEBOOK} was modified by the browser session (autosave?)"
    )
    assert time.monotonic() - t0 < 180, f"browser test took {time.monotonic() - t0:.0f} s (budget 180 s)"
