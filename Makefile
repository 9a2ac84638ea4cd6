# amdre: `make demo` runs the teaching notebooks, `make test` checks everything. Python 3.10+, pip and make; nothing else.
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
# ipykernel warns that its local TCP ports are unencrypted; that is not the user's concern on one machine.
export PYTHONWARNINGS := ignore:Kernel is running over TCP:UserWarning
PAPERMILL := $(PY) -m papermill --cwd notebooks --no-progress-bar --log-level WARNING

.PHONY: install demo test test-unit test-notebooks lint lab notebooks paper clean-stamps

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	@touch $@

install: $(STAMP)

# The main job: every teaching notebook, headless, at its CPU defaults, two at a time (08 waits for 03, whose model
# it loads). Executed copies and their figures go to a new runs/demo-<time>/ (earlier runs are kept).
demo: $(STAMP)
	@mkdir -p $(RUN_DIR)
	@$(MAKE) --no-print-directory -j2 $(addprefix $(RUN_DIR)/,$(addsuffix .ipynb,$(NAMES))) RUN_DIR=$(RUN_DIR)
	@echo "executed notebooks: $(RUN_DIR)/   figures: $(RUN_DIR)/figures/"

$(RUN_DIR)/08_langevin_trajectory.ipynb: $(RUN_DIR)/03_latent_ebm.ipynb
$(RUN_DIR)/%.ipynb: notebooks/%.ipynb | $(STAMP)
	@echo "== $* running"
	@start=$$(date +%s); AMDRE_FIGURES=$(abspath $(RUN_DIR))/figures $(PAPERMILL) $< $@ \
	  || { echo "== $* FAILED: see $@"; exit 1; }; echo "== $* done in $$(( $$(date +%s) - start )) s"

# Unit tests, import layering, the JupyterLab browser test, then nbval over every notebook (claims are asserted
# in cells), two pytest workers.
test: $(STAMP) lint
	$(PY) -m pytest notebooks tests --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider \
	  -n 2 --dist loadscope

lint: $(STAMP)
	$(VENV)/bin/lint-imports

test-unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser" -p no:cacheprovider

test-notebooks: $(STAMP)
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyterlab --ServerApp.root_dir=notebooks $(ALLOW_ROOT)

# Rebuild the committed notebooks on purpose: sync each notebook with its py:percent source (jupytext), execute it
# at its defaults into runs/notebooks/, and only when it passes (its claims hold) copy it over the committed one,
# without volatile metadata, and its figures into figures/. A failing notebook leaves both untouched.
STAGE := runs/notebooks
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync --quiet notebooks/0*.ipynb
	@for name in $(NAMES); do \
	  echo "== $$name"; rm -rf $(STAGE)/$$name; mkdir -p $(STAGE)/$$name; \
	  AMDRE_FIGURES=$(abspath $(STAGE))/$$name/figures $(PAPERMILL) notebooks/$$name.ipynb $(STAGE)/$$name/$$name.ipynb \
	    || { echo "== $$name FAILED: notebooks/ and figures/ unchanged"; exit 1; }; \
	  $(PY) -m jupyter nbconvert --log-level WARN --to notebook --ClearMetadataPreprocessor.enabled=True \
	    --ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags \
	    --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec \
	    --ClearMetadataPreprocessor.preserve_nb_metadata_mask=language_info \
	    --output-dir notebooks $(STAGE)/$$name/$$name.ipynb; \
	  if [ -d $(STAGE)/$$name/figures ]; then cp $(STAGE)/$$name/figures/* figures/; fi; \
	done

# Paper-scale training of one preset, configs/$(DATASET).yaml (svhn, cifar10, celeba, celeba_hq, fashion_mnist; ci = a
# tiny CPU check), into $(OUT): checkpoints, train.log, grids, metrics.json, and the executed notebook of every
# invocation (time-stamped, so none is overwritten). Re-running the same command resumes. Extra papermill parameters:
# make paper DATASET=svhn PARAMS="-p epochs 10 -p device cuda:1"
OUT ?= runs/$(DATASET)
PAPER_NB = $(OUT)/05_paper_scale-$(shell date +%Y%m%d-%H%M%S).ipynb
paper: $(STAMP)
	@test -f configs/$(DATASET).yaml || { echo "unknown preset DATASET=$(DATASET): there is no configs/$(DATASET).yaml" \
	  "(presets: $(basename $(notdir $(wildcard configs/*.yaml))))"; exit 2; }
	@mkdir -p $(OUT)
	AMDRE_FIGURES=$(abspath $(OUT))/figures $(PY) -m papermill --cwd notebooks --log-output -f configs/$(DATASET).yaml \
	  -p out_dir $(OUT) $(PARAMS) notebooks/05_paper_scale.ipynb $(PAPER_NB)
