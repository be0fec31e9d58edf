# KVM-VDI — the two commands from the README are `make run` and `make test`.
# Both set up what they need (apt packages, venv, npm assets) and are safe to repeat.

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-system setup-python setup-assets run test test-fast test-sqlite test-mariadb bench soak lint clean catalogues

setup: setup-system setup-python setup-assets

setup-system:
	scripts/setup-system.sh

setup-python:
	scripts/setup-python.sh $(VENV)

setup-assets:
	scripts/setup-assets.sh

run: setup
	$(VENV)/bin/kvm-vdi serve --demo

test: setup
	scripts/run-tests.sh

# The tests that need no root, no real service and no dashboard (tests/tiers.py), in about a minute.
test-fast:
	KVMVDI_TEST_TIER=fast $(PY) -m pytest -q

bench: setup
	$(PY) -m bench

# Ten minutes of consoles, live pages and desktop churn on MariaDB (bench/soak.py); not in `make bench`.
soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

lint:
	$(VENV)/bin/ruff check app tests bench thin_client
	$(VENV)/bin/ruff format --check app tests bench thin_client
	$(VENV)/bin/mypy
	cd thin_client && $(abspath $(VENV))/bin/mypy

# Extract the marked messages, merge them into every language's .po and compile the .mo files
# (committed beside them; tests/i18n checks they are complete and in step). docs/translating.md.
catalogues:
	scripts/catalogues.sh $(VENV)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
