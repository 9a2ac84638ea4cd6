# amdre: `make demo` runs the teaching notebooks, `make test` checks everything. Python 3.10+ and pip; no conda needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
# Marks which venv this checkout was installed into (a cached venv can serve many clones).
STAMP := .installed-$(subst /,_,$(abspath $(VENV)))
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
RUN_DIR := runs/demo-$(shell date +%Y%m%d-%H%M%S)
# JupyterLab refuses to run as root without this flag.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
DATASET ?= svhn

.PHONY: install demo test test-unit test-notebooks lab notebooks paper clean-stamps

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	@touch $@

install: $(STAMP)

# The main job: every teaching notebook, headless, at its CPU defaults. Executed copies go to a new
# runs/demo-<time>/ folder (earlier runs are kept); the notebooks write their figures into figures/.
demo: $(STAMP)
	@mkdir -p $(RUN_DIR)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(PY) -m papermill --cwd notebooks --progress-bar $$nb $(RUN_DIR)/$$(basename $$nb) || exit 1; \
	done
	@echo "executed notebooks in $(RUN_DIR)/, figures in figures/"

# Unit tests, the JupyterLab browser test, then nbval over every notebook (claims are asserted in cells).
test: $(STAMP)
	$(PY) -m pytest notebooks tests --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser" -p no:cacheprovider

test-notebooks: $(STAMP)
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyterlab --ServerApp.root_dir=notebooks $(ALLOW_ROOT)

# Rebuild notebooks from their sources in tools/notebooks/ and execute them in place (committed executed).
notebooks: $(STAMP)
	$(PY) tools/mknb.py tools/notebooks/*.py
	@for nb in $(NOTEBOOKS); do echo "== $$nb"; $(PY) -m papermill --cwd notebooks $$nb $$nb || exit 1; done
	$(PY) tools/mknb.py --strip $(NOTEBOOKS)

# Paper-scale training of one preset, configs/$(DATASET).yaml (svhn, cifar10, celeba, celeba_hq; ci = a tiny CPU
# check), into $(OUT): checkpoints, train.log, grids, metrics.json, and the executed notebook of every invocation
# (time-stamped, so none is overwritten). Re-running the same command resumes. Extra papermill parameters:
# make paper DATASET=svhn PARAMS="-p epochs 10 -p device cuda:1"
OUT ?= runs/$(DATASET)
PAPER_NB = $(OUT)/05_paper_scale-$(shell date +%Y%m%d-%H%M%S).ipynb
paper: $(STAMP)
	@test -f configs/$(DATASET).yaml || { echo "unknown preset DATASET=$(DATASET): there is no configs/$(DATASET).yaml" \
	  "(presets: $(basename $(notdir $(wildcard configs/*.yaml))))"; exit 2; }
	@mkdir -p $(OUT)
	$(PY) -m papermill --cwd notebooks --log-output -f configs/$(DATASET).yaml -p out_dir $(OUT) $(PARAMS) \
	  notebooks/05_paper_scale.ipynb $(PAPER_NB)
