# Two commands on a fresh machine (Python >= 3.10 needed):
#   make demo   create .venv, install, pretrain a small MAE on the built-in data, write the figures
#   make test   create .venv, install with the test tools, lint, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: demo test lab book lessons solutions install clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "mae_course needs Python >= 3.10; set PYTHON=python3.X")'
	$(PYTHON) -m venv $(VENV)

# The pins of environment.yml, as pip constraints: one list of tested versions. They were
# tested with the Python that environment.yml names; another Python gets the newest
# versions that pyproject.toml's ranges allow.
PINNED_PYTHON := $(shell sed -n 's/^ *- python=\([0-9.]*\)$$/\1/p' environment.yml)

$(VENV)/constraints.txt: environment.yml | $(BIN)/python
	@if [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$(PINNED_PYTHON)" ]; then \
		sed -n 's/^ *- \([A-Za-z0-9_.-]*==[^ ]*\)$$/\1/p' environment.yml > $@; \
	else \
		echo "note: the pins of environment.yml are for Python $(PINNED_PYTHON); installing the newest compatible versions"; \
		: > $@; \
	fi

$(VENV)/.installed: pyproject.toml $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m mae_course pretrain --output-dir $(DEMO_DIR) --overwrite

test: install
	$(BIN)/ruff check mae_course tests scripts conftest.py
	$(BIN)/ruff format --check mae_course tests scripts conftest.py
	$(BIN)/python -m pytest

lab: install
	$(BIN)/jupyter lab notebooks/

# The course website, from the solved lessons and their committed outputs (nothing is re-run):
# build/book/html/index.html. See scripts/build_book.py.
book: install
	$(BIN)/python scripts/build_book.py

# The exercise lessons are generated from the solved ones (the single source).
lessons: install
	$(BIN)/python scripts/make_exercises.py

# Re-run every solved lesson at full length to refresh its committed outputs, then regenerate.
solutions: install
	$(BIN)/python scripts/run_solutions.py

clean:
	rm -rf $(VENV) runs build/book .pytest_cache book/explorer/node_modules
