# The two commands of the contract (run, test), the checks, and the tools that drive a
# stack (bench, chaos, replay). Everything runs from the project's own .venv, which is
# (re)built whenever pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Extra arguments: make test ARGS='-k stack -x', make bench ARGS='--rate 500'
ARGS ?=
# The test stack's ports are the defaults shifted by this (gateway 18080, Kafka 19092,
# Postgres 15433, ...), so `make test` runs beside a `make run`.
TEST_PORT_OFFSET ?= 10000

# Playwright drives Debian's /usr/bin/chromium (tests pass it as executable_path);
# it never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.DEFAULT_GOAL := run
.PHONY: run test check lint typecheck bench chaos replay status clean distclean venv k8s-tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "Python 3.11 or newer is needed; $(PYTHON) is $$($(PYTHON) -V 2>&1)." >&2; \
	  echo "Point PYTHON at one: make PYTHON=python3.12 ..." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "Could not create $(VENV): on Debian install python3-venv." >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(PY) -m scripts.stack run

# The offline Kubernetes checks (tests/k8s) need kustomize and checkov, pinned and cached
# in .cache/ by their script (a no-op once they are there).
k8s-tools:
	PYTHON=$(PYTHON) bash scripts/k8s_tools.sh

test: $(STAMP) k8s-tools
	$(PY) -m scripts.stack test --port-offset $(TEST_PORT_OFFSET) -- $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy --strict shared services scripts tests

check: lint typecheck test

# Each runs against a fresh stack of its own (.run/<name>, ports shifted by 20000), so it
# never disturbs a `make run` or `make test` stack.
bench: $(STAMP)
	$(PY) -m scripts.stack exec --name bench -- $(PY) -m bench.run $(ARGS)

chaos: $(STAMP)
	$(PY) -m scripts.stack exec --name chaos -- $(PY) -m scripts.chaos $(ARGS)

replay: $(STAMP)
	$(PY) -m scripts.stack exec --name replay -- $(PY) -m scripts.replay $(ARGS)

status: $(STAMP)
	$(PY) -m scripts.stack status

# The stack module needs only the standard library to clean, so no .venv is required.
clean:
	$(PYTHON) -m scripts.stack clean

distclean:
	$(PYTHON) -m scripts.stack clean --all
	rm -rf $(VENV) test-artifacts bench-results .mypy_cache .ruff_cache .pytest_cache .hypothesis
