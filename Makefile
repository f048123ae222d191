# One venv, torch pinned to a build that the machine's CPU wheel (2.13.0) satisfies. On a GPU
# machine `pip install torch==2.13.0` from PyPI is the CUDA build, so the same line serves both.
# `make install TORCH=` keeps the torch already installed for python3 (a CUDA build, any version
# >= 2.4): the venv then sees the system's packages and nothing installs torch.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# a Multi30k copy beside the checkout (as on CI) is used in place; otherwise nmt downloads it
export NMT_DATA_DIR ?= $(if $(wildcard ../shared/data/multi30k/train.de.gz),$(abspath ../shared/data))

.PHONY: install test lint docs compare smoke bench bench-levers bench-joeynmt bench-joeynmt-level clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(if $(TORCH),,--system-site-packages) $(VENV)
ifneq ($(TORCH),)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
else
	@$(PY) -c "import torch; print('keeping torch', torch.__version__, '(CUDA', \
	  torch.version.cuda, 'GPUs', str(torch.cuda.device_count()) + ')')" || { echo \
	  "make install TORCH=: python3 has no torch to keep; install one, or name it: TORCH=torch==X"; \
	  exit 1; }
endif
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# lint first (ruff, configured in pyproject.toml): a style slip fails in seconds, not after the suite
test: lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

# the docs site (MkDocs, docs/ -> site/), strict: a broken link, a missing page or an undocumented
# recipe field fails the build
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

$(VENV)/.docs: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

compare: install
	$(VENV)/bin/nmt compare recipes/multi30k-de-en/compare-cpu.yaml --out runs/compare-cpu

smoke: install
	$(VENV)/bin/nmt compare recipes/smoke.yaml --out runs/smoke

bench: install
	$(PY) bench/run.py

# time to quality: settings judged by the minutes to validation BLEU levels (~75 quiet minutes)
bench-levers: install
	bash bench/levers.sh runs/levers

# JoeyNMT 2.3.0 trained beside nmt on the same data and models (bench/vs_joeynmt.py), from a venv
# of its own. Its pins: sentencepiece 0.2.0 (it calls SetVocabulary, which the current 0.2.3 lacks) and
# importlib_metadata, which it imports without declaring.
JOEY ?= .joey/bin/python
bench-joeynmt: install $(JOEY)
	$(PY) bench/vs_joeynmt.py --joey-python $(JOEY)

# JoeyNMT's minutes to the Transformer's first time-to-quality level (~45 quiet minutes)
bench-joeynmt-level: install $(JOEY)
	$(PY) bench/vs_joeynmt.py --joey-python $(JOEY) --to-level 30 --cap 45

.joey/bin/python:
	python3 -m venv .joey
	.joey/bin/pip install -q "$(TORCH)"
	.joey/bin/pip install -q joeynmt==2.3.0 sentencepiece==0.2.0 importlib_metadata

# fonts for figure text in every script (CJK, Devanagari, Thai, ...: nmt/plots.py picks them up);
# Debian/Ubuntu packages, so root (or sudo) and apt-get are needed: elsewhere it says what to do
FONTS ?= fonts-noto-cjk fonts-noto-core
.PHONY: fonts
fonts:
	@if ! command -v apt-get >/dev/null; then \
	  echo "make fonts: no apt-get here; install Noto CJK and Noto Sans fonts with your system's tools"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $(FONTS); \
	elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo apt-get install -y -q $(FONTS); \
	else echo "make fonts: run as root: apt-get install -y $(FONTS)"; fi

clean:
	rm -rf $(VENV) .joey runs .pytest_cache site
