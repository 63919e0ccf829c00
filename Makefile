# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint venv clean bench-deps

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(VENV)/bin/recstream demo $(DEMO_ARGS)

test: venv lint
	$(PY) -m pytest -ra $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Peers for `recstream bench quality`: RecBole without its conflicting pins.
bench-deps: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1

clean:
	rm -rf $(VENV) .pytest_cache state out
