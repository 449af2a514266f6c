# llmspell-migrate: `make demo` runs the main job on the embedded PostgreSQL, `make test` the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dagster]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo

# Two pytest workers (one per core here), whole files per worker so module fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .llmspell-migrate demo backups
