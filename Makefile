# The two commands of the README: `make demo` runs the sample application's
# migrations and live upgrade; `make test` builds the documentation and runs the
# whole suite. Both set up everything they need on a fresh machine first.
# `make docs` builds the documentation alone, into docs/_build/html.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup lint docs test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed
	bash .ci/install-postgres.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dsustore
	$(VENV)/bin/mypy

# -E: autodoc reads the docstrings afresh; -W: a warning fails the build
docs: $(VENV)/.installed
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

test: setup lint docs
	$(PY) -m pytest -q

demo: setup
	$(PY) -m sample_app.demo

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_add_field.py 100000
	$(PY) benchmarks/bench_rename.py 100000
	$(PY) benchmarks/bench_startup.py 100000

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis docs/_build
