# Everything runs from the virtual environment that scripts/setup makes in .venv, with
# Debian's own python3: nothing is installed into the system Python (PEP 668).
PY := .venv/bin/python
SYSTEM_PATH := /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

.PHONY: demo test lint bench install clean

# Set up and run trigsync against a throwaway loopback rsync daemon.
demo:
	./scripts/setup
	$(PY) -m trigsync demo

# Set up and run the whole test suite (real rsync daemon, sshd, local dirs). Most tests wait
# on I/O (daemons, delays, polls), so 4 workers pay off even on 2 cores; the tests marked
# serial change or inspect what every other test would see (sysctls, any demo) or hold a
# latency to a fixed limit, so they run alone afterwards.
test:
	./scripts/setup dev
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q -n 4 -m "not serial"
	$(PY) -m pytest -q -m serial

lint:
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench
	$(PY) -m mypy

bench:
	./scripts/setup bench
	$(PY) -m bench

# Production install: a virtual environment in /opt/trigsync, trigsync on PATH.
install:
	./scripts/install

clean:
	rm -rf .venv build dist
