PYTHON ?= python3

.PHONY: demo test lint bench

# Set up and run trigsync against a throwaway loopback rsync daemon.
demo:
	./scripts/setup
	$(PYTHON) -m trigsync demo

# Set up and run the whole test suite (real rsync daemon, sshd, local dirs).
test:
	./scripts/setup dev
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m ruff format --check src tests bench
	$(PYTHON) -m mypy

bench:
	./scripts/setup bench
	$(PYTHON) -m bench
