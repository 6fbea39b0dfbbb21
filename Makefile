# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean system-deps

# Debian packages the tests use: etcd-server (the etcd coordinator backend). Needs root; without
# it the etcd tests are skipped with that reason.
system-deps:
	@command -v etcd >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends etcd-server) \
		|| echo "warning: could not install etcd-server; the etcd tests will be skipped"

$(BIN)/gapless: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/gapless
	$(BIN)/gapless demo

lint: $(BIN)/gapless
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: lint system-deps
	$(BIN)/python -m pytest

bench: $(BIN)/gapless system-deps
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/failover.py

clean:
	rm -rf $(VENV) data
