# The README's two commands: `make test` and `make demo`. Both build .venv with a Python 3.12+ found here.
# Prefer 3.12 (what VapourSynth R81's wheels and CI are tested with), then any newer one.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3 2>/dev/null) \
	python3.13 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[3-9]*/bin/python3 2>/dev/null) python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python 3.12+ found (set PYTHON=/path/to/python3.12)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# pip-installed VapourSynth's vspipe needs to be told where this Python lives.
	$(BIN)/vapoursynth config >/dev/null
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check elan_video filters tests examples tools
	$(BIN)/ruff format --check elan_video filters tests examples tools

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
