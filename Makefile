# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint venv clean bench-deps browser kafka

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv kafka
	$(VENV)/bin/recstream demo $(DEMO_ARGS)

# The integration tier (real brokers and processes, which mostly wait) runs in two
# pytest processes, one file each at a time (a file's module fixtures are built
# once), beside the unit and functional tiers (CPU: model exports); the latter's
# report follows the former's. PYTEST_ARGS: one serial run of those tests.
UNIT_LOG := .unit-tests.log
test: venv browser kafka lint
ifdef PYTEST_ARGS
	$(PY) -m pytest -ra $(PYTEST_ARGS)
else
	@$(PY) -m pytest -ra --durations=10 -p no:cacheprovider tests/unit tests/functional >$(UNIT_LOG) 2>&1 & \
	unit=$$!; $(PY) -m pytest -ra --durations=25 -n 2 --dist loadfile tests/integration; integration=$$?; \
	wait $$unit; units=$$?; echo "--- unit and functional tiers ($(UNIT_LOG)) ---"; \
	cat $(UNIT_LOG); echo "exit: integration $$integration, unit and functional $$units"; \
	test $$integration = 0 && test $$units = 0
endif

# The dashboard's browser test drives Debian's Chromium through ChromeDriver.
# Installed when missing and we may (root, or sudo); otherwise that one test
# skips with its reason (and fails under CI=1, where it must run).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "note: chromium/chromedriver missing and no root: the browser test will skip"; exit 0; fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver

# Apache Kafka's jars from Maven Central, once, into ~/.cache/recstream (the
# integration tests and the demo run on it). Maven is installed when missing and
# we may. Without Java the tests run on the embedded Tansu broker, except under
# CI=1, where a missing Java or Kafka fails the run.
kafka: venv
	@if ! command -v java >/dev/null && [ -z "$$CI" ]; then \
	  echo "note: no Java: the integration tests run on the embedded Tansu broker"; exit 0; fi; \
	if ! command -v mvn >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends maven; fi; \
	$(VENV)/bin/recstream broker --engine kafka --fetch-only

lint: venv
	$(VENV)/bin/ruff check .

# Peers for `recstream bench quality`: RecBole and RecTools without their
# conflicting pins (their other dependencies are the `bench` extra).
bench-deps: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1 rectools==0.19.0

clean:
	rm -rf $(VENV) .pytest_cache state out
