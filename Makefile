# One venv, torch pinned to a build that the machine's CPU wheel (2.13.0) satisfies. On a GPU
# machine `pip install torch==2.13.0` from PyPI is the CUDA build, so the same line serves both.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# a Multi30k copy beside the checkout (as on CI) is used in place; otherwise nmt downloads it
export NMT_DATA_DIR ?= $(if $(wildcard ../shared/data/multi30k/train.de.gz),$(abspath ../shared/data))

.PHONY: install test compare smoke bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install
	$(PY) -m pytest -q

compare: install
	$(VENV)/bin/nmt compare recipes/multi30k-de-en/compare-cpu.yaml --out runs/compare-cpu

smoke: install
	$(VENV)/bin/nmt compare recipes/smoke.yaml --out runs/smoke

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
