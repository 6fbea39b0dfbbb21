# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint suite bench clean system-deps console

# Debian packages the tests use: etcd-server (the etcd coordinator backend), GStreamer's RTSP
# server (a camera Gapless did not write) and Chromium (the console's browser tests). Needs root; without them those tests are skipped with
# that reason.
DEBIAN_TEST_PACKAGES := etcd-server python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly chromium

system-deps:
	@missing=$$(for p in $(DEBIAN_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing) \
			|| echo "warning: could not install$$(echo $$missing | sed 's/^/ /'); their tests will be skipped"; \
	fi

# The console's one front-end library (hls.js, from the npm registry, version pinned by the lock
# file), copied beside the console's own files; not committed.
CONSOLE_VENDOR := src/gapless/gateway/console/vendor/hls.light.min.mjs

$(CONSOLE_VENDOR): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@)
	cp frontend/node_modules/hls.js/dist/hls.light.min.mjs $@

# uv (from PyPI) installs the dependencies: 11 s on 2 cores where pip took 28 s. Bytecode is
# compiled at install, as pip does.
$(BIN)/gapless: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'
	touch $@

console: $(CONSOLE_VENDOR)

demo: $(BIN)/gapless $(CONSOLE_VENDOR)
	$(BIN)/gapless demo

lint: $(BIN)/gapless
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The linters and the suite run side by side (the suite leaves about a tenth of 2 cores idle).
test: $(BIN)/gapless system-deps $(CONSOLE_VENDOR)
	$(MAKE) --no-print-directory -j2 lint suite

# The suite starts some 400 Python processes and nine pytest processes: bytecode caches are kept
# for its run even where PYTHONDONTWRITEBYTECODE is set, so none of them compiles Gapless's sources
# (~0.1 s of CPU each) or rewrites the tests' asserts (~1.4 s per pytest process) again; one
# collection writes those caches before the eight workers read them.
suite: $(BIN)/gapless system-deps $(CONSOLE_VENDOR)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n 8 --dist loadgroup

bench: $(BIN)/gapless system-deps $(CONSOLE_VENDOR)
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/reroute.py
	$(BIN)/python bench/timeline.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/camera_restart.py
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/http_stack.py

clean:
	rm -rf $(VENV) data frontend/node_modules $(dir $(CONSOLE_VENDOR))
