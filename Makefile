# Two commands on a fresh machine (Python >= 3.10 needed):
#   make demo   create .venv, install, pretrain a small MAE on the built-in data, write the figures
#   make test   create .venv, install with the test tools, lint, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: demo test lab install clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "mae_course needs Python >= 3.10; set PYTHON=python3.X")'
	$(PYTHON) -m venv $(VENV)

# The pins of environment.yml, as pip constraints: one list of tested versions.
$(VENV)/constraints.txt: environment.yml | $(BIN)/python
	sed -n 's/^ *- \([A-Za-z0-9_.-]*==[^ ]*\)$$/\1/p' environment.yml > $@

$(VENV)/.installed: pyproject.toml $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m mae_course pretrain --output-dir $(DEMO_DIR) --overwrite

test: install
	$(BIN)/ruff check mae_course tests scripts
	$(BIN)/ruff format --check mae_course tests scripts
	$(BIN)/python -m pytest

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs .pytest_cache
