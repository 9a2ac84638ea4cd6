# amdre: `make demo` runs the teaching notebooks, `make test` checks everything. Python 3.11+, pip and make; nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
# Marks which venv this checkout was installed into (a cached venv can serve many clones).
STAMP := .installed-$(subst /,_,$(abspath $(VENV)))
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
NAMES := $(basename $(notdir $(NOTEBOOKS)))
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
# JupyterLab refuses to run as root without this flag.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
DATASET ?= svhn
# Headless kernels (demo, test, notebooks, paper) read .ipython/profile_default/ipython_kernel_config.py, which keeps
# ipykernel's notices about its local, unencrypted TCP sockets out of the output. `make lab` keeps your own profile.
KERNEL_ENV := IPYTHONDIR=$(CURDIR)/.ipython
# A cell that runs 15 minutes is stuck (no notebook needs a third of that at its defaults): fail it, do not wait.
PAPERMILL := $(KERNEL_ENV) $(PY) -m papermill --cwd notebooks --no-progress-bar --log-level WARNING --execution-timeout 900

.PHONY: install demo test test-unit test-notebooks lint lab notebooks paper gpu-check clean-stamps

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(if $(CONSTRAINTS),$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(None if v >= (3, 11) else "$(VENV) has \
	  Python %d.%d; the tested versions in $(CONSTRAINTS) (numpy, scipy, pandas, ...) need 3.11 or newer. Remove \
	  $(VENV) and run make with PYTHON=python3.11 (or newer), or try untested versions with CONSTRAINTS=" % v)',)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	@touch $@

install: $(STAMP)

# The main job: every teaching notebook, headless, at its CPU defaults, two at a time (08 waits for 03, whose model
# it loads). Executed copies and their figures go to a new runs/demo-<time>/ (earlier runs are kept).
# A notebook that fails stops the demo (the one running beside it finishes) and is kept as <name>.FAILED.ipynb.
demo: $(STAMP)
	@mkdir -p $(RUN_DIR)
	@echo "== make demo: $(words $(NAMES)) notebooks, two at a time, into $(RUN_DIR)/"
	@start=$$(date +%s); $(MAKE) --no-print-directory -j2 $(addprefix $(RUN_DIR)/,$(addsuffix .ipynb,$(NAMES))) \
	  RUN_DIR=$(RUN_DIR) || { echo "== make demo stopped: a notebook failed (above); executed so far: $(RUN_DIR)/"; \
	  exit 1; }; t=$$(( $$(date +%s) - start )); echo "== $(words $(NAMES)) notebooks in $$((t / 60)) min $$((t % 60)) s"
	@echo "executed notebooks: $(RUN_DIR)/"
	@echo "figures:            $(RUN_DIR)/figures/"

$(RUN_DIR)/08_langevin_trajectory.ipynb: $(RUN_DIR)/03_latent_ebm.ipynb
# What a notebook prints on stderr is shown when it ends (so two running notebooks do not interleave); for a failure,
# only papermill's report of the cell that raised, not papermill's own call stack.
$(RUN_DIR)/%.ipynb: notebooks/%.ipynb | $(STAMP)
	@echo "== $* running"
	@start=$$(date +%s); log=$(RUN_DIR)/$*.log; \
	if AMDRE_FIGURES=$(abspath $(RUN_DIR))/figures $(PAPERMILL) $< $@ 2>$$log; then \
	  cat $$log; [ -s $$log ] || rm -f $$log; echo "== $* done in $$(( $$(date +%s) - start )) s"; \
	else \
	  mv -f $@ $(RUN_DIR)/$*.FAILED.ipynb 2>/dev/null; \
	  if grep -q '^papermill.exceptions' $$log; then sed -n '/^papermill.exceptions/,$$p' $$log; else cat $$log; fi; \
	  echo "== $* FAILED after $$(( $$(date +%s) - start )) s: see $(RUN_DIR)/$*.FAILED.ipynb"; exit 1; \
	fi

# Unit tests, import layering, the JupyterLab browser test, then nbval over every notebook (claims are asserted
# in cells), two pytest workers.
test: $(STAMP) lint
	$(KERNEL_ENV) $(PY) -m pytest notebooks tests --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	  -p no:cacheprovider -n 2 --dist loadscope

lint: $(STAMP)
	$(VENV)/bin/lint-imports

test-unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser" -p no:cacheprovider

test-notebooks: $(STAMP)
	$(KERNEL_ENV) $(PY) -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	  -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyterlab --ServerApp.root_dir=notebooks $(ALLOW_ROOT)

# Rebuild the committed notebooks on purpose: sync each notebook with its py:percent source (jupytext), execute it
# at its defaults into runs/notebooks/, and only when it passes (its claims hold) copy it over the committed one,
# without volatile metadata (papermill's timings on every cell, markdown too; empty tags; collapsed cells stay collapsed), and its figures into figures/; its py:percent source is
# synced again. A failing notebook leaves both untouched.
# One or a few: make notebooks NAMES="03_latent_ebm 08_langevin_trajectory"
STAGE := runs/notebooks
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync --quiet $(addprefix notebooks/,$(addsuffix .ipynb,$(NAMES)))
	@for name in $(NAMES); do \
	  echo "== $$name"; rm -rf $(STAGE)/$$name; mkdir -p $(STAGE)/$$name; \
	  AMDRE_FIGURES=$(abspath $(STAGE))/$$name/figures $(PAPERMILL) notebooks/$$name.ipynb $(STAGE)/$$name/$$name.ipynb \
	    || { echo "== $$name FAILED: notebooks/ and figures/ unchanged"; exit 1; }; \
	  $(PY) -m jupyter nbconvert --log-level WARN --to notebook --ClearMetadataPreprocessor.enabled=True \
	    --ClearMetadataPreprocessor.preserve_cell_metadata_mask='["tags","jupyter"]' \
	    --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec \
	    --ClearMetadataPreprocessor.preserve_nb_metadata_mask=language_info \
	    --output-dir notebooks $(STAGE)/$$name/$$name.ipynb; \
	  $(PY) -c 'import sys, nbformat; nb = nbformat.read(sys.argv[1], 4); \
	    [(c.metadata.pop("papermill", None), c.metadata.pop("execution", None)) for c in nb.cells]; \
	    [c.metadata.pop("tags") for c in nb.cells if c.metadata.get("tags") == []]; nbformat.write(nb, sys.argv[1])' \
	    notebooks/$$name.ipynb; \
	  $(VENV)/bin/jupytext --sync --quiet notebooks/$$name.ipynb; \
	  if [ -d $(STAGE)/$$name/figures ]; then cp $(STAGE)/$$name/figures/* figures/; fi; \
	done

# Paper-scale training of one preset, configs/$(DATASET).yaml (svhn, cifar10, celeba, celeba_hq; ci = a
# tiny CPU check), into $(OUT): checkpoints, train.log, grids, metrics.json, and the executed notebook of every
# invocation (time-stamped, so none is overwritten). Re-running the same command resumes. Extra papermill parameters
# (a shorter run needs a shorter stage_every too, to build every stage: epochs >= (n_stages - 1) * stage_every + 1):
# make paper DATASET=svhn PARAMS="-p epochs 10 -p stage_every 3 -p device cuda:1"
OUT ?= runs/$(DATASET)
PAPER_NB = $(OUT)/05_paper_scale-$(shell date +%Y%m%d-%H%M%S).ipynb
paper: $(STAMP)
	@test -f configs/$(DATASET).yaml || { echo "unknown preset DATASET=$(DATASET): there is no configs/$(DATASET).yaml" \
	  "(presets: $(basename $(notdir $(wildcard configs/*.yaml))))"; exit 2; }
	@mkdir -p $(OUT)
	AMDRE_FIGURES=$(abspath $(OUT))/figures $(KERNEL_ENV) $(PY) -m papermill --cwd notebooks --log-output \
	  -f configs/$(DATASET).yaml \
	  -p out_dir $(OUT) $(PARAMS) notebooks/05_paper_scale.ipynb $(PAPER_NB)

# On a machine with a CUDA GPU: the GPU tests (tests/test_gpu.py) and every benchmark mode for every preset, with
# nothing but python3 and torch, numpy, scipy, yaml, matplotlib, pandas, tqdm, pytest (no venv, pip, network or
# Jupyter). Writes $(GPU_OUT)/gpu_check.json and gpu_check.md; see benchmarks/gpu_check.py.
GPU_OUT ?= runs/gpu-check
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT)
