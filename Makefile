# Two set-up commands on a fresh machine: `make serve` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# llama-cpp-python compiles llama.cpp; use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: serve test system-deps bench bench-quick bench-peers lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's servers for the Redis and PostgreSQL tests (started by the test fixtures, never
# as system services), and Debian's Chromium for the console's browser tests (Playwright drives
# it; nothing downloads a browser of its own).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
		for svc in redis-server postgresql; do $(SUDO) service $$svc stop >/dev/null 2>&1 || true; done; \
	fi

serve: $(STAMP)
	$(VENV)/bin/modelhub serve

# pytest exits 5 when it collects nothing; that is not a failure.
test: $(STAMP) system-deps
	$(PY) -m pytest -q || [ $$? -eq 5 ]

# The servers the bench compares against, in their own venvs under bench/.peers/ (built
# once: llama-server compiles for ~12 minutes on 2 cores; not counted in the bench's time).
bench-peers: $(STAMP)
	nice -n 10 $(PY) -m bench.peers

# Every part, 5 interleaved repetitions, issue 13's ratios; writes bench/RESULTS.md.
bench: bench-peers
	$(PY) -m bench.run

# The same parts at smaller levels, 2 repetitions: a smoke run (RESULTS.md untouched).
bench-quick: bench-peers
	$(PY) -m bench.run --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) data .pytest_cache
