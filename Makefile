# Two commands for a newcomer:  `make study`  and  `make test`.
# Both create (or reuse) .venv and install what is missing; nothing else is needed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# smoke | cpu | gpu; default: gpu where CUDA is available, else cpu
PROFILE ?=
# The data root, one rule for the library, the notebooks and the tests: DATA=<dir>, else
# the MDLIB_DATA_ROOT environment variable, else data/ (empty in a clone). Every target
# that reads data first runs `python -m mdlib.data require`, which downloads and verifies
# MedMNIST and refuses a missing dataset (LC25000) with what to put where, before any work.
DATA ?=
export MDLIB_DATA_ROOT ?= $(if $(DATA),$(abspath $(DATA)),$(CURDIR)/data)

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup study study-grids sweep test test-unit test-notebooks report clean-smoke

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, alone: on machines with a local wheel cache pip takes it from there
	$(PY) -m pip install --quiet "torch>=2.1,<2.15" "torchvision>=0.16,<0.30"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	# grad-cam pulls opencv-python-headless; both wheels ship cv2. Reinstall the contrib
	# wheel last so cv2.saliency (SaliencyMix's detector) is the one that stays.
	$(PY) -m pip install --quiet --force-reinstall --no-deps "opencv-contrib-python-headless>=4.8"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "import cv2, torch, timm, diffusers, pytorch_grad_cam; assert hasattr(cv2, 'saliency')"
	touch $(STAMP)

# Run every notebook in order with papermill (executed copies: runs/notebooks/<profile>/);
# notebook 06 (one training run) is executed by the sweeps of the profile's grids (see
# study-grids), between notebooks 05 and 07; then the results section of README.md is
# rewritten. BACKEND=ray runs the sweeps as Ray tasks (every GPU of this machine, or a
# cluster with ADDRESS=auto | host:6379 | ray://host:10001; README.md, section "Running the gpu grids").
JOBS ?= 2
BACKEND ?= local
ADDRESS ?=
SWEEP_ARGS = $(if $(filter ray,$(BACKEND)),--backend ray $(if $(ADDRESS),--address $(ADDRESS)),--jobs $(JOBS))
# The grids of profile $$prof, in the order `make study` sweeps them
# (mdlib.runs.sweep.profile_grids: main, ablation, sensitivity, then any other
# studies/*_<profile>.yaml; a profile without grids of its own runs studies/<profile>.yaml)
GRIDS_SH = grids=$$($(PY) -m mdlib.sweep --grids-of $$prof | tr '\n' ' ') && [ -n "$$grids" ] || exit 1; grids=" $$grids"
PROFILE_SH = prof="$(PROFILE)"; [ -n "$$prof" ] || prof=$$($(PY) -c "from mdlib.profiles import default_name; print(default_name())")

study: $(STAMP)
	@$(PROFILE_SH); $(GRIDS_SH); \
	echo "== study with profile $$prof, data root $$MDLIB_DATA_ROOT, grids:$$grids"; \
	$(PY) -m mdlib.data require --profile $$prof $$(for g in $$grids; do printf -- '--grid %s ' "$$g"; done) || exit 1; \
	mkdir -p runs/notebooks/$$prof; start=$$(date +%s); \
	for nb in $(NOTEBOOKS); do \
	  case "$$(basename $$nb)" in \
	    06_*) for g in $$grids; do echo "== sweep $$g"; \
	            $(PY) -m mdlib.sweep $$g --profile $$prof $(SWEEP_ARGS) || exit 1; done; continue;; \
	  esac; \
	  echo "== $$nb"; \
	  $(PY) -m papermill --log-level WARNING -p PROFILE $$prof "$$nb" "runs/notebooks/$$prof/$$(basename $$nb)" || exit 1; \
	done; \
	$(PY) -m mdlib.studies.report --profile $$prof --wall-s $$(( $$(date +%s) - start ))

# The sweep grids `make study` runs for PROFILE, in order (one per line)
study-grids:
	@$(PROFILE_SH); $(GRIDS_SH); for g in $$grids; do echo $$g; done

# One sweep: make sweep GRID=studies/main_cpu.yaml [PROFILE=cpu] [JOBS=2] [BACKEND=ray [ADDRESS=auto]]
sweep: $(STAMP)
	$(PY) -m mdlib.sweep $(GRID) $(if $(PROFILE),--profile $(PROFILE)) $(SWEEP_ARGS)

# Unit tests, then every notebook executed headlessly by nbval on the smoke profile. Real
# data is required (MDLIB_REQUIRE_DATA=1): the datasets of the smoke notebooks and of the
# tests (tests/conftest.py: TEST_DATASETS) are fetched / verified first, or the target
# stops with the message of what is missing; no test is skipped for want of data.
TEST_DATA := --profile smoke --dataset breastmnist:64 --dataset lc25000_lung --dataset cvc_clinicdb
test: $(STAMP)
	$(PY) -m mdlib.data require $(TEST_DATA)
	MDLIB_REQUIRE_DATA=1 MDLIB_PROFILE=smoke $(PY) -m pytest tests --nbval-lax --nbval-current-env notebooks

test-unit: $(STAMP)
	$(PY) -m mdlib.data require $(TEST_DATA)
	MDLIB_REQUIRE_DATA=1 $(PY) -m pytest tests

report: $(STAMP)
	$(PY) -m mdlib.studies.report --profile $(or $(PROFILE),cpu)

clean-smoke:
	rm -rf runs/*/smoke figures/smoke
